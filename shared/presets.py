"""Run presets: what data, which widths, how long. One declarative config per run."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

from .config import register, to_jsonable
from .measure import MeasureProtocol
from .protocols import Budget, CompressionProtocol
from .recipe import Recipe
from .specs import ARCHS


@register
@dataclass(frozen=True)
class Preset:
    name: str
    data: str  # "cifar10" (real) or "synthetic" (generated, for tests)
    width: float  # width multiplier applied to the paper architectures
    recipe: Recipe
    archs: tuple[str, ...] = ARCHS
    seeds: tuple[int, ...] = (0,)
    val_size: int = 5000  # carved from the training set by filename hash (shared.data)
    train_subset: int | None = None  # None: the whole remaining training pool
    synthetic_sizes: tuple[int, int, int] = (512, 128, 256)  # train, val, test when data == "synthetic"
    measure: MeasureProtocol = MeasureProtocol()
    protocol: CompressionProtocol = CompressionProtocol()


PRESETS: dict[str, Preset] = {
    # Seconds on a CPU; what the tests run.
    "smoke": Preset(
        name="smoke",
        data="synthetic",
        width=0.0625,
        recipe=Recipe(epochs=2, batch_size=64, lr=0.05, eval_batch_size=128),
        val_size=0,
        measure=MeasureProtocol(warmup=1, repeats=3, latency_batch_sizes=(1, 64)),
        protocol=CompressionProtocol(
            # one epoch (8 steps of 64) for every fine-tune, so the tests see whole budgets in seconds
            prune_budget=Budget(0.5, 0.2), filter_budget=Budget(0.5, 0.2), qat_budget=Budget(0.5, 0.02, "constant"),
            sparsities=(0.5, 0.9), gradual_every=2, bn_recalibration_images=128,
            uniform_ratios=(0.25, 0.5), iterative_rounds=2,
            sensitivity_ratios=(0.5, 0.9), search_steps=3, calibration_sizes=(32, 64), fixed_point_bits=(8, 4),
        ),
    ),
    # Real CIFAR-10 on a 2-core CPU: narrow networks, a short schedule.
    "quick": Preset(
        name="quick",
        data="cifar10",
        width=0.25,
        recipe=Recipe(epochs=4, batch_size=128, lr=0.1),
        # Fine-tunes over a fixed 10k-image stratified subset, so the quick study fits a CPU: two epochs
        # (156 steps) for pruning with a mask update every 10 steps (12 updates over the ramp), one epoch
        # at a constant 0.001 for QAT.
        protocol=CompressionProtocol(
            prune_budget=Budget(0.5, 0.1, images=10000), filter_budget=Budget(0.5, 0.1, images=10000),
            qat_budget=Budget(0.25, 0.01, "constant", images=10000),
        ),
    ),
    # Full widths, full data, a full schedule, 3 seeds: for a GPU.
    "paper": Preset(
        name="paper",
        data="cifar10",
        width=1.0,
        recipe=Recipe(epochs=160, batch_size=128, lr=0.1),
        seeds=(0, 1, 2),
        # The papers' budgets: Li et al. retrain 40 epochs (1/4 of training) at a constant LR 0.001; Zhu &
        # Gupta ramp sparsity over 3/4 of a 40-epoch fine-tune with a mask update every 100 steps; QAT
        # fine-tunes 8 epochs at a constant 0.001.
        protocol=CompressionProtocol(
            prune_budget=Budget(0.25, 0.1), filter_budget=Budget(0.25, 0.01, "constant"),
            qat_budget=Budget(0.05, 0.01, "constant"), gradual_every=100,
        ),
    ),
}


# Fields that choose which cells run, not what a cell computes: a run over more seeds or fewer architectures
# reuses the other cells of the same configuration.
NOT_FINGERPRINTED = ("seeds", "archs")


def fingerprint(preset: Preset) -> str:
    """8 hex digits of everything in the preset that changes a cell's result: its name, data, width, recipe,
    protocol and measurement settings. Part of every cell id and checkpoint name, so a run with another
    configuration never reuses this one's rows or checkpoints (``--preset quick`` over a smoke directory
    starts from nothing)."""
    fields = to_jsonable(replace(preset, **{f: () for f in NOT_FINGERPRINTED}))
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
