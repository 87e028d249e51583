"""The study's cells as Ray tasks (``--executor ray``): the same cells, ids, rows and files as the local
executor, scheduled by Ray over whatever cluster it is given.

- Each cell runs in a fresh worker process (``max_calls=1``) that imports one framework's suite only, so
  memory cannot grow across cells and torch and TensorFlow never share a process (each task reports which
  of the two it loaded; the driver refuses a row from a process that had both).
- The driver is the only writer of the results directory. A task gets the checkpoints its cell reads as
  bytes, runs its one cell in a scratch directory of its own node, and returns the row with every file the
  cell made; the driver writes the files, then the row, with the local executor's atomic rules, under the
  run's lock. Workers need no shared filesystem, only the data (``--data-dir`` / ``CIFAR10_DIR`` on each node).
- Dependencies are the study's: a cell waits for its framework's baseline of the same architecture and seed,
  the KD pipeline for the ``kd`` cell whose student it reuses, controlled Keras cells for the PyTorch
  baseline. Ready cells go baselines first, then longest first (a dry run of the cost model).
- A worker that dies mid-cell (killed, preempted, out of memory) is retried ``retries`` times by Ray, then
  recorded as a failed cell; a rerun of the command skips finished cells, as the local executor does.
"""
from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import provenance
from .artifacts import write_atomic
from .presets import Preset
from .results import ROWS_DIR, finished, write_row
from .runner import Cell, plan_cells
from .techniques import CONTROLLED_SOURCE, TECHNIQUES

PACKAGES = {"pytorch": "pytorch_impl", "keras": "tensorflow_impl"}
FRAMEWORK_MODULES = {"torch": "pytorch", "tensorflow": "keras"}  # what a worker must not load both of
# What a cell leaves in its scratch directory that is not the driver's to keep: the row (returned apart),
# per-epoch checkpoints of an unfinished cell, and the transfer preset's target tree (each node writes its own).
NOT_RETURNED = (ROWS_DIR, "checkpoints/partial", "transfer_data")
RETRIES = 2
DIE_ONCE_ENV = "CNN_STUDY_TEST_DIE_ONCE"  # tests: a worker of this cell id kills itself once, mid-cell


@dataclass(frozen=True)
class RaySettings:
    address: str | None = None  # None: a local cluster on this machine
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0
    retries: int = RETRIES


@dataclass
class Task:
    cell: Cell
    package: str
    controlled: bool
    depends: list[str] = field(default_factory=list)
    cost: float = 0.0


# ----------------------------------------------------------------------------------------- the DAG

def plan_tasks(preset: Preset, frameworks, techniques=None, archs=None, controlled: bool = False) -> list[Task]:
    """Every cell of the run with the cells it waits for; a Keras suite in controlled mode starts from the
    PyTorch baseline (whose cell must be in the run or already finished)."""
    tasks = []
    for fw in frameworks:
        mode = controlled and fw != CONTROLLED_SOURCE
        for cell in plan_cells(fw, preset, techniques or TECHNIQUES, archs, mode):
            tasks.append(Task(cell, PACKAGES[fw], mode))
    baselines = {(t.cell.framework, t.cell.arch, t.cell.seed, t.controlled): t.cell.id
                 for t in tasks if t.cell.technique == "baseline"}
    kd = {}
    for t in tasks:
        if t.cell.technique == "kd":
            kd.setdefault((t.cell.framework, t.cell.arch, t.cell.seed), []).append(t.cell.id)
    for t in tasks:
        c = t.cell
        if c.technique != "baseline" and (c.framework, c.arch, c.seed, t.controlled) in baselines:
            t.depends.append(baselines[(c.framework, c.arch, c.seed, t.controlled)])
        if c.technique == "baseline" and t.controlled:
            source = baselines.get((CONTROLLED_SOURCE, c.arch, c.seed, False))
            t.depends += [source] if source else []
        if c.technique.startswith("pipeline_kd"):  # reuses the kd cell's student instead of distilling again
            t.depends += kd.get((c.framework, c.arch, c.seed), [])
    return tasks


def order(ready: list[Task]) -> list[Task]:
    """Baselines first (everything waits for them), then the longest cells, so the last to finish is short."""
    return sorted(ready, key=lambda t: (t.cell.technique != "baseline", -t.cost, t.cell.id))


def inputs_of(out_dir: Path, cell: Cell) -> dict[str, bytes]:
    """The checkpoints a cell may read (its architecture's and seed's, every framework's), relative path ->
    bytes: what the worker's scratch directory starts with."""
    out = {}
    for path in sorted((out_dir / "checkpoints").glob(f"*__{cell.arch}__*__s{cell.seed}.safetensors")):
        out[str(path.relative_to(out_dir))] = path.read_bytes()
    return out


# ----------------------------------------------------------------------------------------- the worker

def run_cell(package: str, preset: Preset, cell_id: str, technique: str, arch: str, controlled: bool,
             data_dir: str | None, inputs: dict[str, bytes], threads: int, command: str) -> dict:
    """One cell in this (fresh) process: the row, the files it made and what this process loaded."""
    import importlib

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="cnn-study-cell-") as tmp:
        scratch = Path(tmp)
        for rel, content in inputs.items():
            (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
            (scratch / rel).write_bytes(content)
        lines: list[str] = []
        die_marker = os.environ.get(DIE_ONCE_ENV)

        def log(line: str) -> None:
            lines.append(line)
            if die_marker and cell_id in die_marker and not Path(die_marker).exists():
                Path(die_marker).write_text(str(os.getpid()))  # the cell has begun: as a preempted or OOM-killed worker
                os.kill(os.getpid(), 9)

        suite = importlib.import_module(f"{package}.suite")
        rows = suite.run(preset, scratch, data_dir=data_dir, archs=[arch], techniques=[technique],
                         controlled=controlled, only=frozenset([cell_id]), log=log, command=command,
                         threads=threads)
        files = {}
        for path in sorted(p for p in scratch.rglob("*") if p.is_file()):
            rel = str(path.relative_to(scratch))
            if any(rel == n or rel.startswith(n + "/") for n in NOT_RETURNED):
                continue
            content = path.read_bytes()
            if inputs.get(rel) != content:
                files[rel] = content
    return {"row": rows[0] if rows else None, "files": files, "log": lines, "pid": os.getpid(),
            "host": platform.node(), "started": started, "ended": time.time(),
            "loaded": sorted(fw for mod, fw in FRAMEWORK_MODULES.items() if mod in sys.modules)}


# ----------------------------------------------------------------------------------------- the driver

def keep(out_dir: Path, result: dict) -> None:
    """The task's files, then its row (a row on disk has its files beside it), atomically each."""
    if len(result["loaded"]) > 1:
        raise RuntimeError(f"a worker (pid {result['pid']}) loaded both {' and '.join(result['loaded'])}: "
                           f"its row is not kept")
    for rel, content in result["files"].items():
        write_atomic(out_dir / rel, lambda tmp, c=content: tmp.write_bytes(c))
    if result["row"] is not None:
        result["row"]["executor"] = {"name": "ray", **{k: result[k] for k in ("host", "pid", "started", "ended",
                                                                             "loaded")}}
        write_row(out_dir, result["row"])


def failed_row(task: Task, preset: Preset, error: str, command: str) -> dict:
    from . import config

    c = task.cell
    return {"cell_id": c.id, "framework": c.framework, "arch": c.arch, "technique": c.technique,
            "settings": c.settings, "seed": c.seed, "preset": preset.name, "fingerprint": c.fingerprint,
            "config": config.to_jsonable(preset), "command": command, "status": "failed", "error": error[-4000:],
            "executor": {"name": "ray"}}


def _runtime_env(settings: RaySettings) -> dict:
    root = provenance.REPO
    env = {"env_vars": {provenance.COMMIT_ENV: provenance.git_commit(), "PYTHONPATH": str(root)}}
    for name in (DIE_ONCE_ENV, "CIFAR10_DIR", "CIFAR10_CACHE"):
        if os.environ.get(name):
            env["env_vars"][name] = os.environ[name]
    if settings.address:  # another machine's workers: ship the three packages (the commit travels in env)
        env["py_modules"] = [str(root / p) for p in ("shared", *PACKAGES.values())]
        del env["env_vars"]["PYTHONPATH"]
    return env


def costs(preset: Preset, tasks: list[Task], log) -> None:
    """Each task's relative length from the cost model's dry run over the whole plan (``shared.estimate``),
    priced in MACs: an ordering hint, so a dry run that fails leaves plan order."""
    from .estimate import estimate, macs_calibration

    for fw in sorted({t.cell.framework for t in tasks}):
        mine = [t for t in tasks if t.cell.framework == fw]
        try:
            seconds = estimate(preset, macs_calibration(preset, fw), [t.cell for t in mine], lambda c: True)
        except Exception as exc:
            log(f"[ray] {fw}: no cost estimate ({exc!r}): cells go in plan order")
            seconds = {}
        for t in mine:
            t.cost = seconds.get(t.cell.id, 0.0)


def run_ray(preset: Preset, out_dir, frameworks, *, settings: RaySettings = RaySettings(), techniques=None,
            archs=None, controlled: bool = False, data_dir: str | None = None, command: str = "",
            log: Callable[[str], None] = print, ray_init: dict | None = None) -> list[dict]:
    """Run every unfinished cell of ``frameworks`` as Ray tasks; return the rows written (failed included)."""
    import ray

    out_dir = Path(out_dir)
    tasks = plan_tasks(preset, frameworks, techniques, archs, controlled)
    todo = {t.cell.id: t for t in tasks if not finished(out_dir, t.cell.id)}
    done = {t.cell.id for t in tasks if t.cell.id not in todo}
    if not todo:
        log(f"[ray] all {len(tasks)} cells already done")
        return []
    costs(preset, tasks, log)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=settings.address, runtime_env=_runtime_env(settings), log_to_driver=False,
                 **(ray_init or {}))
    remote = ray.remote(max_calls=1, max_retries=settings.retries, retry_exceptions=False,
                        num_cpus=settings.cpus_per_cell, num_gpus=settings.gpus_per_cell)(run_cell)
    resources = ray.cluster_resources()
    slots = max(1, int(resources.get("CPU", 1) // max(settings.cpus_per_cell, 1e-9)))
    if settings.gpus_per_cell:
        slots = min(slots, max(1, int(resources.get("GPU", 0) // settings.gpus_per_cell)))
    threads = max(1, int(settings.cpus_per_cell))
    log(f"[ray] {len(todo)} cells to run ({len(done)} done) on {resources.get('CPU', 0):g} CPUs / "
        f"{resources.get('GPU', 0):g} GPUs: {slots} at a time, {settings.cpus_per_cell:g} CPU "
        f"{settings.gpus_per_cell:g} GPU each, {settings.retries} retries")
    rows, failed, running = [], set(), {}
    n, k = len(todo), 0
    try:
        while todo or running:
            blocked = [t for t in todo.values() if any(d in failed for d in t.depends)]
            for t in blocked:  # no row: a rerun tries it again once its dependency has run
                log(f"[ray] not run: {t.cell.id} (it waits for a failed cell: {', '.join(t.depends)})")
                del todo[t.cell.id]
                n -= 1
            ready = order([t for t in todo.values() if all(d in done for d in t.depends)])
            for t in ready[:max(0, slots - len(running))]:
                c = t.cell
                ref = remote.remote(t.package, preset, c.id, c.technique, c.arch, t.controlled, data_dir,
                                    inputs_of(out_dir, c), threads, command)
                running[ref] = todo.pop(c.id)
            if not running:
                if todo:  # what is left waits for cells that are neither done nor planned
                    missing = sorted({d for t in todo.values() for d in t.depends} - done)
                    raise RuntimeError(f"{len(todo)} cells wait for cells that are not in this run: {missing}")
                break
            (ref,), _ = ray.wait(list(running), num_returns=1)
            task = running.pop(ref)
            k += 1
            try:
                result = ray.get(ref)
                keep(out_dir, result)
                row = result["row"]
                status = row["status"] if row else "no row"
                wall = f"{result['ended'] - result['started']:.0f}s on {result['host']}"
            except Exception as exc:  # the worker died past its retries, or its row was refused
                row = failed_row(task, preset, "".join(traceback.format_exception(exc)), command)
                write_row(out_dir, row)
                status, wall = "failed", f"{type(exc).__name__} after {settings.retries} retries"
            rows.append(row)
            (done if status == "ok" else failed).add(task.cell.id)
            log(f"[ray] [{k}/{n}] {task.cell.id}: {status} ({wall})")
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
    return rows
