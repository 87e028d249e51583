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


def time_all(args) -> int:
    """One timing process per framework, one after the other (never two timing at once)."""
    status = 0
    for package in args.framework or SUITES:
        cmd = [sys.executable, "-m", package, "time", str(args.out)]
        cmd += ["--force"] if args.force else []
        cmd += ["--retime"] if args.retime else []
        print("$ " + " ".join(cmd), flush=True)
        status = max(status, subprocess.call(cmd))
    return status


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


def _time_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="results directory of a run (its artifacts/ are timed)")
    p.add_argument("--force", action="store_true",
                   help="time even on a busy machine (timings are marked contended and get no verdicts)")
    p.add_argument("--retime", action="store_true", help="time again what was already timed")


def suite_time(package: str, args) -> int:
    """The timing pass of one framework (``shared.timing``); exit 2 on a busy machine."""
    from . import timing

    suite = importlib.import_module(f"{package}.suite")
    protocol = timing.protocol_of_run(args.out)
    try:
        counts = timing.run_timing(suite.timing_backend(protocol.threads), args.out, force=args.force,
                                   retime=args.retime)
    except timing.MachineBusy as exc:
        print(f"{package}: {exc}", file=sys.stderr)
        return 2
    print(f"{package}: timed {counts['timed']} models ({counts['contended']} contended), "
          f"{counts['skipped']} already timed or without a reference -> {args.out / timing.TIMINGS_DIR}")
    return 0


def suite_main(package: str, argv=None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {package}")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_args(sub.add_parser("run", help="run this framework's suite"))
    _time_args(sub.add_parser("time", help="time this framework's artifacts of a run (the timing pass)"))
    args = parser.parse_args(argv)
    if args.command == "time":
        return suite_time(package, args)
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
    time_p = sub.add_parser("time", help="the timing pass: time every artifact of a run against its reference "
                                         "(one process per framework), on a quiet machine")
    _time_args(time_p)
    time_p.add_argument("--framework", action="append", choices=SUITES, help="only these suites")
    rep = sub.add_parser("report", help="write the report of a results directory")
    rep.add_argument("out", type=Path)
    rep.add_argument("--fingerprint", default=None,
                     help="report the rows of this configuration (default: the one with most rows)")
    args = parser.parse_args(argv)
    if args.command == "report":
        from .report import write_report

        print(write_report(args.out, fingerprint=args.fingerprint))
        return 0
    if args.command == "time":
        return time_all(args)
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
    # the timing pass last, after every training cell: nothing else of the study runs while it times
    timing_status = time_all(argparse.Namespace(out=args.out, force=False, retime=False, framework=args.framework))
    if timing_status == 2:
        print(f"the timing pass did not run (machine busy); the report has no latencies until "
              f"`python -m shared time {args.out}` has run on a quiet machine", flush=True)
    from .report import write_report

    print(write_report(args.out))
    return status
