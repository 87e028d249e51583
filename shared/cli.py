"""Command lines. ``python -m shared run`` runs each suite in its own process, then the report.

One process per framework: TensorFlow and PyTorch each bring their own thread pools and oneDNN builds,
and a process boundary keeps one framework's state from leaking into the other's timings.
"""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time
from pathlib import Path

from .presets import PRESETS, get_preset
from .specs import ARCHS
from .techniques import TECHNIQUES

SUITES = ("pytorch_impl", "tensorflow_impl")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", required=True, choices=sorted(PRESETS))
    p.add_argument("--out", required=True, type=Path, help="results directory (created; reruns resume)")
    p.add_argument("--data-dir", default=None,
                   help="cifar-10-batches-py directory (default: $CIFAR10_DIR, then the cache, then download)")
    p.add_argument("--arch", action="append", choices=ARCHS, help="only these architectures (repeatable)")
    p.add_argument("--technique", action="append", choices=TECHNIQUES,
                   help="only these techniques (repeatable; the others' baselines must exist or be included)")
    p.add_argument("--controlled", action="store_true",
                   help="controlled mode: the Keras suite starts from the PyTorch baseline of --out instead of "
                        "training its own (rows marked controlled; the PyTorch suite runs as usual)")


def suite_main(package: str, argv=None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {package}")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_args(sub.add_parser("run", help="run this framework's suite"))
    args = parser.parse_args(argv)
    suite = importlib.import_module(f"{package}.suite")
    t0 = time.time()
    argv = sys.argv[1:] if argv is None else argv
    if args.controlled and package == "pytorch_impl":
        parser.error("--controlled applies to the Keras suite (it starts from the PyTorch baseline); "
                     "run the PyTorch suite without it")
    rows = suite.run(get_preset(args.preset), args.out, data_dir=args.data_dir, archs=args.arch,
                     techniques=args.technique, command=" ".join(["python -m", package, *argv]),
                     controlled=args.controlled)
    failed = [r["cell_id"] for r in rows if r["status"] == "failed"]
    missing = sum(r["status"] == "not_implemented" for r in rows)
    if missing:
        print(f"{package}: {missing} cells name techniques this suite does not implement yet")
    print(f"{package}: {len(rows)} cells run, {len(failed)} failed, {time.time() - t0:.0f}s -> {args.out}")
    for cid in failed:
        print(f"  failed: {cid} (see its row's 'error')")
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run both suites (one process each), then write the report")
    _run_args(run_p)
    run_p.add_argument("--framework", action="append", choices=SUITES, help="only these suites")
    rep = sub.add_parser("report", help="write the report of a results directory")
    rep.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "report":
        from .report import write_report

        print(write_report(args.out))
        return 0
    status = 0
    for package in args.framework or SUITES:
        cmd = [sys.executable, "-m", package, "run", "--preset", args.preset, "--out", str(args.out)]
        cmd += ["--data-dir", args.data_dir] if args.data_dir else []
        for a in args.arch or []:
            cmd += ["--arch", a]
        for t in args.technique or []:
            cmd += ["--technique", t]
        cmd += ["--controlled"] if args.controlled and package != "pytorch_impl" else []
        print("$ " + " ".join(cmd), flush=True)
        status = max(status, subprocess.call(cmd))
    from .report import write_report

    print(write_report(args.out))
    return status
