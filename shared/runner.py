"""The cell loop both suites share: skip finished cells, run the rest, write one row each.

A suite passes its backend (``shared.backend.Backend``); the shared drivers (``shared.drivers.REGISTRY``)
train, compress and measure through it and return the row's metrics. Nothing here imports a framework.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import artifacts, config, data as data_mod, specs, state as neutral, transfer
from .resume import CellCheckpoints
from .presets import Preset, fingerprint
from .results import cell_id, finished, write_row
from .techniques import CONTROLLED_SOURCE, TECHNIQUES, operating_points  # noqa: F401  (re-exported)



@dataclass(frozen=True)
class Cell:
    framework: str
    arch: str
    technique: str
    seed: int
    settings: dict = field(default_factory=dict, hash=False)
    fingerprint: str = "test"  # the preset's (presets.fingerprint); plan_cells always sets it

    @property
    def id(self) -> str:
        return cell_id(self.framework, self.arch, self.technique, self.settings, self.seed, self.fingerprint)


@dataclass
class RunContext:
    """What a technique function gets besides its cell."""

    preset: Preset
    out_dir: Path
    data_dir: str | None = None
    log: Callable[[str], None] = print
    controlled: bool = False
    _dataset: object = None
    measured_model: object = None  # what the running cell's driver measured last: its artifact
    measured_network: dict | None = None  # what it was built with, where not ``network`` (another head)
    checkpoints: CellCheckpoints | None = None  # the running cell's per-epoch training checkpoints
    pretrained: Path | None = None  # a transfer preset's backbone (``--pretrained``: shared.published.read_pretrained)
    _source_dataset: object = None

    @property
    def dataset(self) -> data_mod.Dataset:
        if self._dataset is None:  # loaded only when some cell actually needs to run
            self._dataset = load_dataset(self.preset, self.data_dir, self.out_dir, self.log)
        return self._dataset

    @property
    def source_dataset(self) -> data_mod.Dataset:
        """A transfer preset's pretraining data: the source classes of the base dataset."""
        if self._source_dataset is None:
            self._source_dataset = transfer.source_dataset(base_dataset(self.preset, self.data_dir),
                                                           self.preset.transfer)
        return self._source_dataset

    @property
    def network(self) -> dict:
        """What every network of the run is built with besides its widths: the data's classes and, in a
        transfer preset, the baseline's head."""
        t = self.preset.transfer
        head = None if t is None else transfer.head_spec(t, t.baseline_head, self.preset.width)
        return {"num_classes": self.dataset.num_classes, "head": head}

    def checkpoint_path(self, framework: str, arch: str, seed: int, name: str = "baseline") -> Path:
        if self.controlled and framework != CONTROLLED_SOURCE:
            framework = f"{framework}-controlled"  # never overwrites the suite's independently trained run
        fp = fingerprint(self.preset)  # a checkpoint of another configuration is never picked up
        return self.out_dir / "checkpoints" / f"{framework}__{arch}__{name}__{fp}__s{seed}.safetensors"


# The checkpoints a finished cell leaves for later cells: if one is unreadable, the cell is rerun.
SAVES_CHECKPOINT = {"baseline": "baseline", "kd": "kd_student"}


def checkpoints_intact(ctx: RunContext, framework: str, cell: Cell, log) -> bool:
    name = SAVES_CHECKPOINT.get(cell.technique)
    if name is None:
        return True
    path = ctx.checkpoint_path(framework, cell.arch, cell.seed, name=name)
    if path.exists() and neutral.readable(path):
        return True
    if path.exists():
        moved = neutral.quarantine(path)
        log(f"[{framework}] warning: checkpoint {path} is unreadable: moved to {moved}; rerunning "
            f"{cell.arch}/{cell.technique}/s{cell.seed}")
    else:
        log(f"[{framework}] warning: checkpoint {path} is missing; rerunning {cell.arch}/{cell.technique}/s{cell.seed}")
    return False


class RestartForMemory(Exception):
    """Raised between cells when the suite's process has outgrown its backend's ``restart_above_mib``:
    the suite's ``run`` command re-executes itself (``os.execv``), which returns all of the memory, and the
    new process skips the finished cells. TensorFlow keeps allocator arenas, traced functions and
    converter state that ``clear_session`` does not release; a fresh process is the one bound that holds."""

    def __init__(self, rows: list[dict], rss_mib: float, limit_mib: float):
        super().__init__(f"process at {rss_mib:.0f} MiB, above its {limit_mib:.0f} MiB bound")
        self.rows, self.rss_mib, self.limit_mib = rows, rss_mib, limit_mib


IMAGEFOLDER = "imagefolder:"  # a preset's data "imagefolder:ROOT": the user's tree (``--data imagefolder:ROOT``)


def base_dataset(preset: Preset, data_dir=None) -> data_mod.Dataset:
    """The preset's CIFAR-10 (or generated) data; a transfer preset draws both its sides from it."""
    if preset.data == "synthetic":
        n_train, n_val, n_test = preset.synthetic_sizes
        return data_mod.synthetic(n_train=n_train, n_val=n_val, n_test=n_test, seed=0)
    if preset.data == "cifar10" or preset.data.startswith(IMAGEFOLDER):  # a tree's backbone pretrains on CIFAR
        return data_mod.load_cifar10(data_dir, val_size=preset.val_size, train_subset=preset.train_subset)
    raise ValueError(f"preset {preset.name!r} has unknown data source {preset.data!r}: choose synthetic, "
                     f"cifar10 or {IMAGEFOLDER}ROOT")


def load_dataset(preset: Preset, data_dir=None, out_dir=None, log=print) -> data_mod.Dataset:
    """The data the run's cells train and report on: a user's ImageFolder tree, a transfer preset's target
    tree (written under ``out_dir`` from the base data), or the base data itself."""
    if preset.data.startswith(IMAGEFOLDER):
        from .imagefolder import load_imagefolder

        size = specs.input_hw(preset.archs[0])
        return load_imagefolder(preset.data[len(IMAGEFOLDER):], size, log=log,
                                train_side=size if preset.recipe.crop_padding else None)[0]
    base = base_dataset(preset, data_dir)
    if preset.transfer is None:
        return base
    if out_dir is None:
        raise ValueError(f"the {preset.name} preset writes its ImageFolder tree under the run's directory: "
                         f"pass out_dir")
    return transfer.target_dataset(base, preset.transfer, Path(out_dir) / "transfer_data", log)


def plan_cells(framework: str, preset: Preset, techniques=TECHNIQUES, archs=None,
               controlled: bool = False) -> list[Cell]:
    archs = archs or preset.archs
    mode = {"controlled": True} if controlled else {}
    fp = fingerprint(preset)
    # Baseline first: every other technique starts from the trained baseline of the same run.
    return [Cell(framework, a, t, s, {**settings, **mode}, fp) for a in archs for s in preset.seeds
            for t in techniques for settings in preset_points(t, a, preset)]


def preset_points(technique: str, arch: str, preset: Preset) -> list[dict]:
    """``technique``'s operating points on ``arch`` in ``preset`` (none where the preset leaves it out)."""
    if preset.techniques is not None and technique not in preset.techniques:
        return []
    return operating_points(technique, arch, preset.protocol, preset.transfer)


def run_suite(backend, preset: Preset, out_dir, *, data_dir=None, archs=None, techniques=None, log=print,
              environment: Callable[[], dict] = dict, command: str | None = None,
              controlled: bool = False, dataset: data_mod.Dataset | None = None,
              only: frozenset[str] | None = None) -> list[dict]:
    """Run every unfinished cell of ``backend``'s framework; return the rows written by this call.
    ``only``: these cell ids alone (an executor's one cell per process)."""
    from .drivers import REGISTRY

    framework = backend.name
    if controlled and framework == CONTROLLED_SOURCE:
        raise ValueError(f"controlled mode starts the other suite from {CONTROLLED_SOURCE}'s baseline; the "
                         f"{CONTROLLED_SOURCE} suite is that source: run it without --controlled")
    out_dir = Path(out_dir)
    # the dataset: already loaded (and checked) by the preflight, or loaded on first use
    ctx = RunContext(preset=preset, out_dir=out_dir, data_dir=data_dir, log=log, controlled=controlled,
                     _dataset=dataset, pretrained=None if preset.pretrained is None else Path(preset.pretrained))
    rows = []
    planned = plan_cells(framework, preset, techniques or TECHNIQUES, archs, controlled)
    if only is not None:
        planned = [c for c in planned if c.id in only]
    t_run = 0.0
    for k, cell in enumerate(planned, start=1):
        where = f"[{framework}] [{k}/{len(planned)}] {cell_label(cell)}"
        if finished(out_dir, cell.id) and checkpoints_intact(ctx, framework, cell, log):
            log(f"{where}: skip, already done")
            continue
        eta = "" if not rows else f" (ETA {_duration(t_run / len(rows) * (len(planned) - k + 1))} at this run's pace)"
        log(f"{where}: run{eta}")
        started = time.time()
        row = {
            "cell_id": cell.id, "framework": framework, "arch": cell.arch, "technique": cell.technique,
            "settings": cell.settings, "seed": cell.seed, "preset": preset.name, "fingerprint": cell.fingerprint,
            "config": config.to_jsonable(preset), "command": command or " ".join(sys.argv),
        }
        ctx.checkpoints = CellCheckpoints(out_dir / "checkpoints" / "partial" / cell.id, log)
        try:
            ctx.measured_model = ctx.measured_network = None
            row.update(REGISTRY[cell.technique](backend, ctx, cell))
            if ctx.measured_model is not None:  # saved before the row: a row on disk has its model beside it
                row["artifact"] = artifacts.save(backend, ctx.measured_model, out_dir, cell, preset.name,
                                                 row.get("widths"), ctx.measured_network or ctx.network)
                ctx.measured_model = ctx.measured_network = None
            row["status"], row["error"] = "ok", None
        except NotImplementedError as exc:  # a suite that lacks a technique yet: shown as missing, not failed
            row["status"], row["error"] = "not_implemented", str(exc)
            log(f"[{framework}] not implemented: {cell.arch}/{cell.technique}")
        except Exception as exc:  # a failed cell is recorded and reported, and retried next run
            row["status"], row["error"] = "failed", "".join(traceback.format_exception(exc))[-4000:]
            log(f"[{framework}] FAILED {cell.arch}/{cell.technique}/s{cell.seed}: {exc!r}")
        row["env"] = environment()
        row["wall_time_s"] = time.time() - started
        row["process_rss_mib"] = process_rss_mib()  # the suite's footprint so far: it must not grow per cell
        write_row(out_dir, row)
        ctx.checkpoints.clear()  # the row is the cell's result now; an interrupted cell keeps its epochs
        ctx.checkpoints = None
        backend.end_cell()
        rows.append(row)
        t_run += row["wall_time_s"]
        limit = restart_bound(backend)
        rss = process_rss_mib()
        if limit and rss and rss > limit and any(not finished(out_dir, c.id) for c in planned[k:]):
            raise RestartForMemory(rows, rss, limit)
    return rows


RESTART_ABOVE_ENV = "CNN_STUDY_RESTART_ABOVE_MIB"  # overrides the backend's bound; 0 turns restarts off


def restart_bound(backend) -> float | None:
    """The resident size (MiB) above which the suite restarts between cells: the environment's, else the
    backend's ``restart_above_mib``."""
    stated = os.environ.get(RESTART_ABOVE_ENV)
    if stated is not None:
        try:
            return float(stated)
        except ValueError:
            raise ValueError(f"{RESTART_ABOVE_ENV}={stated!r} is not a number of MiB (0 turns restarts off)") from None
    return getattr(backend, "restart_above_mib", None)


def process_rss_mib() -> float | None:
    """This process's resident memory now (Linux ``/proc``; None elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def cell_label(cell: Cell) -> str:
    """'vgg16/int8_static (calibration_images=1024, observer=minmax) s0': a cell line names its settings."""
    settings = ", ".join(f"{k}={v}" for k, v in sorted(cell.settings.items()))
    return f"{cell.arch}/{cell.technique}{f' ({settings})' if settings else ''} s{cell.seed}"


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
