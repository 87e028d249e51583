"""The cell loop both suites share: skip finished cells, run the rest, write one row each.

A suite passes its backend (``shared.backend.Backend``); the shared drivers (``shared.drivers.REGISTRY``)
train, compress and measure through it and return the row's metrics. Nothing here imports a framework.
"""
from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import artifacts, config, data as data_mod
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

    @property
    def dataset(self) -> data_mod.Dataset:
        if self._dataset is None:  # loaded only when some cell actually needs to run
            self._dataset = load_dataset(self.preset, self.data_dir)
        return self._dataset

    def checkpoint_path(self, framework: str, arch: str, seed: int, name: str = "baseline") -> Path:
        if self.controlled and framework != CONTROLLED_SOURCE:
            framework = f"{framework}-controlled"  # never overwrites the suite's independently trained run
        fp = fingerprint(self.preset)  # a checkpoint of another configuration is never picked up
        return self.out_dir / "checkpoints" / f"{framework}__{arch}__{name}__{fp}__s{seed}.safetensors"


def load_dataset(preset: Preset, data_dir=None) -> data_mod.Dataset:
    if preset.data == "synthetic":
        n_train, n_val, n_test = preset.synthetic_sizes
        return data_mod.synthetic(n_train=n_train, n_val=n_val, n_test=n_test, seed=0)
    if preset.data == "cifar10":
        return data_mod.load_cifar10(data_dir, val_size=preset.val_size, train_subset=preset.train_subset)
    raise ValueError(f"preset {preset.name!r} has unknown data source {preset.data!r}")


def plan_cells(framework: str, preset: Preset, techniques=TECHNIQUES, archs=None,
               controlled: bool = False) -> list[Cell]:
    archs = archs or preset.archs
    mode = {"controlled": True} if controlled else {}
    fp = fingerprint(preset)
    # Baseline first: every other technique starts from the trained baseline of the same run.
    return [Cell(framework, a, t, s, {**settings, **mode}, fp) for a in archs for s in preset.seeds
            for t in techniques for settings in operating_points(t, a, preset.protocol)]


def run_suite(backend, preset: Preset, out_dir, *, data_dir=None, archs=None, techniques=None, log=print,
              environment: Callable[[], dict] = dict, command: str | None = None,
              controlled: bool = False) -> list[dict]:
    """Run every unfinished cell of ``backend``'s framework; return the rows written by this call."""
    from .drivers import REGISTRY

    framework = backend.name
    if controlled and framework == CONTROLLED_SOURCE:
        raise ValueError(f"controlled mode starts the other suite from {CONTROLLED_SOURCE}'s baseline; the "
                         f"{CONTROLLED_SOURCE} suite is that source: run it without --controlled")
    out_dir = Path(out_dir)
    ctx = RunContext(preset=preset, out_dir=out_dir, data_dir=data_dir, log=log, controlled=controlled)
    rows = []
    for cell in plan_cells(framework, preset, techniques or TECHNIQUES, archs, controlled):
        if finished(out_dir, cell.id):
            log(f"[{framework}] skip {cell.arch}/{cell.technique}/s{cell.seed}: already done")
            continue
        log(f"[{framework}] run {cell.arch}/{cell.technique}/s{cell.seed}")
        started = time.time()
        row = {
            "cell_id": cell.id, "framework": framework, "arch": cell.arch, "technique": cell.technique,
            "settings": cell.settings, "seed": cell.seed, "preset": preset.name, "fingerprint": cell.fingerprint,
            "config": config.to_jsonable(preset), "command": command or " ".join(sys.argv),
        }
        try:
            ctx.measured_model = None
            row.update(REGISTRY[cell.technique](backend, ctx, cell))
            if ctx.measured_model is not None:  # saved before the row: a row on disk has its model beside it
                row["artifact"] = artifacts.save(backend, ctx.measured_model, out_dir, cell, preset.name,
                                                 row.get("widths"))
                ctx.measured_model = None
            row["status"], row["error"] = "ok", None
        except NotImplementedError as exc:  # a suite that lacks a technique yet: shown as missing, not failed
            row["status"], row["error"] = "not_implemented", str(exc)
            log(f"[{framework}] not implemented: {cell.arch}/{cell.technique}")
        except Exception as exc:  # a failed cell is recorded and reported, and retried next run
            row["status"], row["error"] = "failed", "".join(traceback.format_exception(exc))[-4000:]
            log(f"[{framework}] FAILED {cell.arch}/{cell.technique}/s{cell.seed}: {exc!r}")
        row["env"] = environment()
        row["wall_time_s"] = time.time() - started
        write_row(out_dir, row)
        rows.append(row)
    return rows
