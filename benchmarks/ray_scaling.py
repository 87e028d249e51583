"""The PyTorch suite's cells on the local executor (one process, 2 training threads) against a local Ray
cluster of 2 single-CPU workers (one fresh process per cell, 1 thread each), on this machine.

    CIFAR10_DIR=... python benchmarks/ray_scaling.py [--preset quick] [--arch cnn] [--technique T ...]
        [--json FILE]

Each executor runs the same command on a fresh results directory; the wall time is the whole command,
scheduling and process starts included. Run it on a quiet machine (nothing else training or testing): two
runs' threads on 2 cores slow each other many times over. A benchmark, not a test: it prints numbers.

What it shows: on one 2-core machine the two executors use the same 2 cores, so any gain is from running two
cells side by side at 1 thread (small networks use 2 threads poorly) against the cost of a fresh process per
cell (importing torch, loading the data). What it does not show: scaling to more machines; with N nodes the
Ray executor runs N times as many cells at once, the local one still runs one.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run(executor: list[str], args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "pytorch_impl", "run", "--preset", args.preset, "--out", str(out),
               *[a for x in args.arch for a in ("--arch", x)], *[a for t in args.technique for a in ("--technique", t)],
               *executor]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        rows = [json.loads(p.read_text()) for p in (out / "rows").glob("*.json")]
    return {"command": " ".join(cmd[1:]), "wall_s": wall, "cells": len(rows),
            "cell_wall_s_sum": sum(r["wall_time_s"] for r in rows),
            "ok": sum(r["status"] == "ok" for r in rows)}


def main() -> None:
    from shared import provenance

    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--arch", action="append", default=[])
    parser.add_argument("--technique", action="append", default=[])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    local = run([], args)
    ray = run(["--executor", "ray", "--cpus-per-cell", "1"], args)
    result = {"local_2_threads": local, "ray_2_workers_1_cpu": ray, "ray_over_local": local["wall_s"] / ray["wall_s"],
              "machine": {**provenance.cpu_info(), "host": platform.node()}, "commit": provenance.git_commit()}
    for name in ("local_2_threads", "ray_2_workers_1_cpu"):
        r = result[name]
        print(f"{name:20s} {r['cells']} cells ({r['ok']} ok) in {r['wall_s']:.0f}s wall "
              f"(cells' own time {r['cell_wall_s_sum']:.0f}s)")
    print(f"speedup of Ray over local: {result['ray_over_local']:.2f}x on {result['machine']['cpu_count']} cores")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
