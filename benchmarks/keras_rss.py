"""The Keras suite's resident memory across cells, with and without clearing the Keras session between cells.

    python benchmarks/keras_rss.py [--preset smoke] [--technique T ...]

Each mode runs the suite in its own process on a fresh results directory; every row records the process's
RSS when it was written (``process_rss_mib``). "keep" disables ``KerasBackend.end_cell`` (the behaviour
before it existed), "clear" is the suite as it runs. A benchmark, not a test: it prints numbers.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import sys
import tensorflow_impl
from shared.presets import get_preset
from tensorflow_impl import suite
from tensorflow_impl.backend import KerasBackend
mode, preset, out, techniques = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:] or None
if mode == "keep":
    KerasBackend.end_cell = lambda self: None
suite.run(get_preset(preset), out, techniques=techniques, log=lambda m: None)
"""


def rss_series(mode: str, preset: str, techniques: list[str]) -> list[float]:
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-c", CHILD, mode, preset, out, *techniques], cwd=ROOT, check=True)
        paths = sorted(Path(out, "rows").glob("*.json"), key=lambda p: p.stat().st_mtime_ns)  # cell order
        return [json.loads(p.read_text())["process_rss_mib"] for p in paths]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--technique", action="append", default=[])
    args = parser.parse_args()
    for mode in ("keep", "clear"):
        rss = rss_series(mode, args.preset, args.technique)
        n = len(rss)
        print(f"{mode:5s}: {n} cells, RSS after cell 1 {rss[0]:.0f} MiB, after cell {n // 2} {rss[n // 2 - 1]:.0f} "
              f"MiB, after cell {n} {rss[-1]:.0f} MiB, max {max(rss):.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
