"""Command lines. ``python -m shared run`` runs each suite in its own process, then the report.

One process per framework: TensorFlow and PyTorch each bring their own thread pools and oneDNN builds,
and a process boundary keeps one framework's state from leaking into the other's timings.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import console
from .lock import LockedError, RunLock
from .preflight import PreflightError, preflight
from .runner import RestartForMemory

from .presets import PRESETS, get_preset, with_overrides
from .specs import ALL_ARCHS, ARCHS
from .techniques import TECHNIQUES

SUITES = ("pytorch_impl", "tensorflow_impl")
EXECUTORS = ("local", "ray")
RETRIES = 2  # shared.ray_executor.RETRIES (not imported: ray loads only for --executor ray)
PARENT_ENV = "CNN_STUDY_UNDER_SHARED_RUN"  # set for the suites shared run starts
RESTART_ENV = "CNN_STUDY_RESTARTED_RUN"  # what a suite run restarted for memory had done (runner.RestartForMemory)


def time_all(args) -> int:
    """One timing process per framework, one after the other (never two timing at once)."""
    status = 0
    for package in args.framework or SUITES:
        cmd = [sys.executable, "-m", package, "time", str(args.out)]
        cmd += ["--force"] if args.force else []
        cmd += ["--retime"] if args.retime else []
        print("$ " + " ".join(cmd), flush=True)
        status = max(status, call_child(cmd))
    return status


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", required=True, choices=sorted(PRESETS))
    p.add_argument("--out", required=True, type=Path, help="results directory (created; reruns resume)")
    p.add_argument("--data-dir", default=None,
                   help="cifar-10-batches-py directory (default: $CIFAR10_DIR, then the cache, then download)")
    p.add_argument("--arch", action="append", choices=ALL_ARCHS, help="only these architectures (repeatable)")
    p.add_argument("--technique", action="append", choices=TECHNIQUES,
                   help="only these techniques (repeatable; the others' baselines must exist or be included)")
    p.add_argument("--data", default=None, metavar="imagefolder:ROOT",
                   help="train and report on this ImageFolder tree (ROOT/train/<class>/*, ROOT/val/<class>/*, "
                        "optional ROOT/test) instead of the preset's data")
    p.add_argument("--pretrained", default=None, type=Path, metavar="PATH",
                   help="a transfer preset's backbone: a .safetensors checkpoint of this project, a torchvision "
                        ".pth state_dict or a keras.applications VGG16 .h5 (instead of the preset's pretraining)")
    p.add_argument("--width", default=None, type=float,
                   help="the networks' width multiplier instead of the preset's (1: the published networks)")
    p.add_argument("--seed", action="append", type=int, default=None,
                   help="these seeds instead of the preset's (repeatable; the same configuration, so the cells of "
                        "every seed report together as a spread)")
    p.add_argument("--verbose", action="store_true", help="show the libraries' logs and warnings too")
    p.add_argument("--controlled", action="store_true",
                   help="controlled mode: the Keras suite starts from the PyTorch baseline of --out instead of "
                        "training its own (rows marked controlled; the PyTorch suite runs as usual)")
    ex = p.add_argument_group("executor", "where the cells run (shared.ray_executor)")
    ex.add_argument("--executor", choices=EXECUTORS, default="local",
                    help="local: one process per suite, cells in sequence (default); ray: every cell a Ray task")
    ex.add_argument("--address", default=None,
                    help="a running Ray cluster (`ray start --head` prints it; default: a local one)")
    ex.add_argument("--cpus-per-cell", type=float, default=1.0, help="Ray: CPUs per cell (its training threads)")
    ex.add_argument("--gpus-per-cell", type=float, default=0.0, help="Ray: GPUs per cell")
    ex.add_argument("--retries", type=int, default=RETRIES,
                    help=f"Ray: retries of a cell whose worker dies (default {RETRIES}), then it is recorded failed")


def _time_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="results directory of a run (its artifacts/ are timed)")
    p.add_argument("--force", action="store_true",
                   help="time even on a busy machine (timings are marked contended and get no verdicts)")
    p.add_argument("--retime", action="store_true", help="time again what was already timed")


def suite_time(package: str, args) -> int:
    """The timing pass of one framework (``shared.timing``); exit 2 on a busy machine."""
    from . import timing

    console.configure(False)
    with console.quiet_native():
        suite = importlib.import_module(f"{package}.suite")
    protocol = timing.protocol_of_run(args.out)
    try:
        with RunLock(args.out):
            counts = timing.run_timing(suite.timing_backend(protocol.threads), args.out, force=args.force,
                                       retime=args.retime)
    except (timing.MachineBusy, LockedError) as exc:
        print(f"{package}: {exc}", file=sys.stderr)
        return 2
    print(f"{package}: timed {counts['timed']} models ({counts['contended']} contended), "
          f"{counts['skipped']} already timed or without a reference -> {args.out / timing.TIMINGS_DIR}")
    return 0


def suite_calibrate(package: str, args) -> int:
    from .estimate import calibrate

    console.configure(False)
    with console.quiet_native():
        suite = importlib.import_module(f"{package}.suite")
    import contextlib
    import io
    import json

    preset = get_preset(args.preset)
    err = os.fdopen(os.dup(2), "w")  # the progress lines, past quiet_native's capture of fd 2

    def log(message):
        print(f"{package}: {message}", file=err, flush=True)

    # the calibration's own training lines and the converters' native notices are not the user's progress
    with console.quiet_native(), contextlib.redirect_stdout(io.StringIO()):
        result = calibrate(suite.backend(preset), preset, log=log)
    text = json.dumps(result, indent=1)
    if args.output is None:
        print(text)
    else:
        args.output.write_text(text)
    return 0


def import_weights(args) -> int:
    from . import published, state as neutral

    # the suite's torch reader, loaded as the suite is (by name): shared/ never imports a framework package
    read_torchvision_file = importlib.import_module("pytorch_impl.published").read_torchvision_file
    try:
        state = published.from_torchvision(args.arch, read_torchvision_file(args.source))
    except (OSError, ValueError) as exc:
        print(f"pytorch_impl: cannot import {args.source}: {exc}", file=sys.stderr)
        return 2
    neutral.save(state, args.target)
    print(f"pytorch_impl: {len(state)} tensors of {args.arch} -> {args.target}")
    return 0


def suite_main(package: str, argv=None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {package}")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_args(sub.add_parser("run", help="run this framework's suite"))
    _time_args(sub.add_parser("time", help="time this framework's artifacts of a run (the timing pass)"))
    cal = sub.add_parser("calibrate", help="measure this framework's throughput for `shared plan`'s estimate")
    cal.add_argument("--preset", required=True, choices=sorted(PRESETS))
    cal.add_argument("--output", type=Path, default=None, help="write the JSON here (default: stdout)")
    if package == "pytorch_impl":
        imp = sub.add_parser("import-weights", help="a torchvision .pth state_dict as a neutral .safetensors "
                                                    "(what --pretrained takes in either suite)")
        imp.add_argument("--arch", required=True, choices=("resnet50", "vgg16_imagenet"))
        imp.add_argument("source", type=Path)
        imp.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    if args.command == "time":
        return suite_time(package, args)
    if args.command == "import-weights":
        return import_weights(args)
    if args.command == "calibrate":
        return suite_calibrate(package, args)
    t0 = time.time()
    argv = sys.argv[1:] if argv is None else argv
    if args.controlled and package == "pytorch_impl":
        parser.error("--controlled applies to the Keras suite (it starts from the PyTorch baseline); "
                     "run the PyTorch suite without it")
    command = " ".join(["python -m", package, *argv])
    try:
        preset = with_overrides(get_preset(args.preset), data=args.data, width=args.width, archs=args.arch,
                                pretrained=args.pretrained, seeds=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    framework = "pytorch" if package == "pytorch_impl" else "keras"
    try:
        dataset = preflight(framework, package, preset, args.out, data_dir=args.data_dir, techniques=args.technique,
                            archs=args.arch, controlled=args.controlled)
    except PreflightError as exc:
        print(f"{package}: cannot start: {exc}", file=sys.stderr)
        return 2
    console.configure(args.verbose)
    if args.executor == "ray":  # this process only schedules: the framework loads in the workers
        return ray_run(args, preset, [framework], command, t0)
    with console.quiet_native():  # the framework loads only for a run that can start
        suite = importlib.import_module(f"{package}.suite")
    carried = json.loads(os.environ.get(RESTART_ENV, "null"))  # set by this run's earlier process, if any
    if carried:
        t0 = carried["t0"]
    done_before = carried["done_before"] if carried else _finished_rows(args.out)
    earlier = carried["rows"] if carried else []
    try:
        with RunLock(args.out, command):
            rows = suite.run(preset, args.out, data_dir=args.data_dir, archs=args.arch, dataset=dataset,
                             techniques=args.technique, command=command, controlled=args.controlled)
    except RestartForMemory as exc:  # the lock is released; the new process takes it again
        restart_for_memory(package, argv, exc, {"t0": t0, "done_before": done_before,
                                                "rows": earlier + [_summary(r) for r in exc.rows]})
    except LockedError as exc:
        print(f"{package}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if not os.environ.get(PARENT_ENV):  # under shared run, its one line names the command to resume
            print(f"{package}: interrupted; {_finished_rows(args.out) - done_before} cells finished in this run "
                  f"are kept. Resume with: {command}", file=sys.stderr)
        return 130
    rows = earlier + [_summary(r) for r in rows]
    failed = [r["cell_id"] for r in rows if r["status"] == "failed"]
    missing = sum(r["status"] == "not_implemented" for r in rows)
    if missing:
        print(f"{package}: {missing} cells name techniques this suite does not implement yet")
    print(f"{package}: {len(rows)} cells run, {len(failed)} failed, {time.time() - t0:.0f}s -> {args.out}")
    for cid in failed:
        print(f"  failed: {cid} (see its row's 'error')")
    return 1 if failed else 0


def ray_run(args, preset, frameworks: list[str], command: str, t0: float, lock: bool = True) -> int:
    """The cells of ``frameworks`` as Ray tasks (``shared.ray_executor``), under the run's lock."""
    import contextlib

    from .ray_executor import RaySettings, run_ray

    settings = RaySettings(address=args.address, cpus_per_cell=args.cpus_per_cell, gpus_per_cell=args.gpus_per_cell,
                           retries=args.retries)
    try:
        with RunLock(args.out, command) if lock else contextlib.nullcontext():
            rows = run_ray(preset, args.out, frameworks, settings=settings, techniques=args.technique,
                           archs=args.arch, controlled=args.controlled, data_dir=args.data_dir, command=command)
    except LockedError as exc:
        print(f"shared: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"shared: interrupted; finished cells are kept. Resume with: {command}", file=sys.stderr)
        return 130
    failed = [r["cell_id"] for r in rows if r["status"] != "ok"]
    print(f"ray: {len(rows)} cells run, {len(failed)} not ok, {time.time() - t0:.0f}s -> {args.out}")
    for cid in failed:
        print(f"  not ok: {cid} (see its row's 'error')")
    return 1 if failed else 0


def _summary(row: dict) -> dict:
    return {"cell_id": row["cell_id"], "status": row["status"]}


def restart_for_memory(package: str, argv: list[str], exc, carried: dict):
    """Replace this process with a fresh run of the same command (same pid, so ``shared run``'s wait and
    signal forwarding still hold); what this process ran travels in the environment for the final summary."""
    print(f"{package}: {exc}: restarting the process to free it ({len(exc.rows)} cells finished in this "
          f"process are kept)", flush=True)
    sys.stderr.flush()
    os.environ[RESTART_ENV] = json.dumps(carried)
    os.execv(sys.executable, [sys.executable, "-m", package, *argv])


def _finished_rows(out: Path) -> int:
    from .results import ROWS_DIR

    return len(list(Path(out).glob(f"{ROWS_DIR}/*.json")))


def call_child(cmd: list[str]) -> int:
    """Run a suite process; SIGINT/SIGTERM of this one is passed on and waited for, so no orphan survives."""
    child = subprocess.Popen(cmd, env={**os.environ, PARENT_ENV: "1"})

    def forward(signum, _frame):
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # already forwarded by the handler; keep waiting for the child
                continue
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


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
    sub.add_parser("list", help="the presets, techniques and their operating points")
    plan_p = sub.add_parser("plan", help="the cells a run would execute (and which are finished in --out)")
    plan_p.add_argument("--preset", required=True, choices=sorted(PRESETS))
    plan_p.add_argument("--out", type=Path, default=None)
    plan_p.add_argument("--framework", action="append", choices=SUITES)
    plan_p.add_argument("--arch", action="append", choices=ARCHS)
    plan_p.add_argument("--technique", action="append", choices=TECHNIQUES)
    plan_p.add_argument("--calibration", action="append", type=Path, default=[],
                        help="a stated calibration (JSON from `python -m <suite> calibrate`, e.g. measured on the "
                             "GPU the run will go to) instead of measuring one here; repeatable, one per framework")
    plan_p.add_argument("--no-estimate", action="store_true", help="list the cells only (no calibration)")
    rep = sub.add_parser("report", help="write the report of a results directory")
    rep.add_argument("out", type=Path)
    rep.add_argument("--fingerprint", default=None,
                     help="report the rows of this configuration (default: the one with most rows)")
    args = parser.parse_args(argv)
    if args.command in ("list", "plan"):
        from .listing import list_text, plan_text

        if args.command == "list":
            print(list_text())
            return 0
        preset = get_preset(args.preset)
        calibrations = None if args.no_estimate else plan_calibrations(preset, args.framework or SUITES, args.calibration)
        print(plan_text(preset, args.out, args.framework, args.technique, args.arch, calibrations))
        return 0
    if args.command == "report":
        from .report import write_report

        print(write_report(args.out, fingerprint=args.fingerprint))
        return 0
    command = "python -m shared " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        with RunLock(args.out, command):  # the suites and the timing pass re-enter it as this process's children
            return run_all(args, command)
    except LockedError as exc:
        print(f"shared: {exc}", file=sys.stderr)
        return 2


def plan_calibrations(preset, suites, stated: list[Path]) -> dict[str, dict]:
    """{suite: calibration}: the stated files by framework, the others measured now, one process each."""
    import tempfile

    from .estimate import load_calibration
    from .listing import FRAMEWORKS

    by_framework = {}
    for path in stated:
        cal = load_calibration(path)
        by_framework[cal["framework"]] = cal
    out = {}
    for suite in suites:
        if FRAMEWORKS[suite] in by_framework:
            out[suite] = by_framework[FRAMEWORKS[suite]]
            continue
        print(f"measuring {suite}'s throughput for the estimate (quick preset here: 1.5 min PyTorch, 4 Keras; "
              f"--calibration FILE or --no-estimate skip it)", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "calibration.json"
            rc = subprocess.call([sys.executable, "-m", suite, "calibrate", "--preset", preset.name,
                                  "--output", str(target)])
            if rc != 0:
                raise SystemExit(f"shared plan: the {suite} calibration failed (exit {rc}); "
                                 f"use --no-estimate to list the cells without it")
            out[suite] = load_calibration(target)
    return out


def run_all(args, command: str) -> int:
    if args.command == "time":
        return time_all(args)
    status = ray_all(args, command) if args.executor == "ray" else None
    if status in (2, 130):
        return status
    for package in [] if status is not None else args.framework or SUITES:
        cmd = [sys.executable, "-m", package, "run", "--preset", args.preset, "--out", str(args.out)]
        cmd += ["--data-dir", args.data_dir] if args.data_dir else []
        for a in args.arch or []:
            cmd += ["--arch", a]
        for t in args.technique or []:
            cmd += ["--technique", t]
        cmd += ["--controlled"] if args.controlled and package != "pytorch_impl" else []
        cmd += ["--data", args.data] if args.data else []
        cmd += ["--pretrained", str(args.pretrained)] if args.pretrained else []
        cmd += ["--width", str(args.width)] if args.width is not None else []
        cmd += [a for s in args.seed or [] for a in ("--seed", str(s))]
        cmd += ["--verbose"] if args.verbose else []
        print("$ " + " ".join(cmd), flush=True)
        child = call_child(cmd)
        if child < 0:  # killed by a signal (a native crash): its cells so far are kept, the rest never ran
            print(f"shared: {package} crashed (signal {-child}); finished cells are kept, the rest did not run. "
                  f"Resume with: {command}", file=sys.stderr, flush=True)
            child = 128 - child
        if child in (2, 130):  # refused before any work, or interrupted: the suite has said why
            if child == 130:
                print(f"shared: interrupted; finished cells are kept. Resume with: {command}", file=sys.stderr)
            return child
        status = max(status or 0, child)
    # the timing pass last, after every training cell: nothing else of the study runs while it times
    timing_status = time_all(argparse.Namespace(out=args.out, force=False, retime=False, framework=args.framework))
    if timing_status == 2:
        print(f"the timing pass did not run (machine busy); the report has no latencies until "
              f"`python -m shared time {args.out}` has run on a quiet machine", flush=True)
    from .report import write_report

    print(write_report(args.out))
    return status or 0


def ray_all(args, command: str) -> int:
    """Both suites' cells in one Ray DAG (controlled Keras cells wait for the PyTorch baseline of the run);
    each suite's preflight first, as its own process would run it."""
    from .listing import FRAMEWORKS

    try:
        preset = with_overrides(get_preset(args.preset), data=args.data, width=args.width, archs=args.arch,
                                pretrained=args.pretrained, seeds=args.seed)
        packages = args.framework or SUITES
        for package in packages:
            fw = FRAMEWORKS[package]
            preflight(fw, package, preset, args.out, data_dir=args.data_dir, techniques=args.technique,
                      archs=args.arch,
                      controlled=args.controlled and fw != "pytorch" and "pytorch_impl" not in packages)
    except (ValueError, PreflightError) as exc:
        print(f"shared: cannot start: {exc}", file=sys.stderr)
        return 2
    return ray_run(args, preset, [FRAMEWORKS[p] for p in packages], command, time.time(), lock=False)
