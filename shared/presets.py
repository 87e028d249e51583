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
from .transfer import TransferProtocol


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
    # a transfer preset: the baseline is a backbone pretrained on the source classes, transferred to the
    # target data (``shared.transfer``); ``recipe`` is the target's
    transfer: TransferProtocol | None = None
    techniques: tuple[str, ...] | None = None  # the registry keys this preset runs (None: all)
    # a transfer preset's backbone from a file (``--pretrained``; ``shared.published.read_pretrained``) instead
    # of the preset's own pretraining
    pretrained: str | None = None


# What a transfer preset compresses its transferred model with: the seed's quantizations and a filter prune.
TRANSFER_TECHNIQUES = ("baseline", "transfer", "int8_dynamic", "int8_static", "int8_qat", "filter_uniform")

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
    # Transfer learning without a download (issue 13; ``shared.transfer``): a CIFAR ResNet-18 pretrained on 8
    # classes, transferred to cat vs dog with Hymenoptera's scale (250 training, 150 validation images), then
    # compressed. The recipe is the target's: 10 steps of 24 per epoch, 30 epochs (15 head + 15 fine-tune).
    # Not batch 25: PyTorch 2.14.1's CPU backward of the filter-pruned ResNet-18 (widths 12..96, channels_last,
    # 2 threads) corrupts the heap at batch 25 and not at 24, 26, 32 or 50 (a 2-core AVX-512 + AMX Xeon; reproduced with a
    # plain loop outside this project's code); the Keras suite aborted in the same cell.
    "transfer": Preset(
        name="transfer",
        data="cifar10",
        width=0.25,
        recipe=Recipe(epochs=30, batch_size=24, lr=0.05),
        archs=("resnet18",),
        transfer=TransferProtocol(pretrain_recipe=Recipe(epochs=8)),
        techniques=TRANSFER_TECHNIQUES,
        # 150 validation images calibrate; fine-tunes over the 250 images: 1/4 of the recipe for the filter
        # prune, 1/10 for QAT (both at a constant LR, the papers' fine-tune rule)
        protocol=CompressionProtocol(
            filter_budget=Budget(0.25, 0.1, "constant"), qat_budget=Budget(0.1, 0.01, "constant"),
            calibration_sizes=(150,), bn_recalibration_images=250,
        ),
    ),
    # The transfer family at test scale: synthetic data, the smoke widths.
    "smoke_transfer": Preset(
        name="smoke_transfer",
        data="synthetic",
        width=0.0625,
        recipe=Recipe(epochs=2, batch_size=16, lr=0.05, eval_batch_size=128),
        archs=("resnet18",),
        val_size=0,
        measure=MeasureProtocol(warmup=1, repeats=3, latency_batch_sizes=(1, 16)),
        transfer=TransferProtocol(pretrain_recipe=Recipe(epochs=1, batch_size=64, lr=0.05, eval_batch_size=128),
                                  train_per_class=16, val_per_class=8, test_per_class=16),
        techniques=TRANSFER_TECHNIQUES,
        protocol=CompressionProtocol(filter_budget=Budget(0.5, 0.2), qat_budget=Budget(0.5, 0.02, "constant"),
                                     calibration_sizes=(16,), bn_recalibration_images=32),
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
NOT_FINGERPRINTED = ("seeds", "archs", "techniques")
ADDED_LATER = ("transfer", "techniques", "pretrained")


def fingerprint(preset: Preset) -> str:
    """8 hex digits of everything in the preset that changes a cell's result: its name, data, width, recipe,
    protocol and measurement settings. Part of every cell id and checkpoint name, so a run with another
    configuration never reuses this one's rows or checkpoints (``--preset quick`` over a smoke directory
    starts from nothing)."""
    fields = to_jsonable(replace(preset, **{f: () for f in NOT_FINGERPRINTED}))
    for f in ADDED_LATER:  # absent when unset, so the presets that predate them keep their fingerprints
        if not fields[f]:
            del fields[f]
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]


def with_overrides(preset: Preset, *, data: str | None = None, width: float | None = None, archs=None,
                   pretrained=None, seeds=None) -> Preset:
    """``preset`` with the command line's ``--data``, ``--width``, ``--arch``, ``--pretrained`` and ``--seed``;
    each but ``--arch`` and ``--seed`` is part of the fingerprint, so such a run never mixes its cells with the
    preset's own (other seeds of one configuration are more of the same cells: they add a spread)."""
    from pathlib import Path

    from .specs import ALL_ARCHS

    changes = {}
    if data is not None:
        if data not in ("cifar10", "synthetic") and not (data.startswith("imagefolder:") and len(data) > 12):
            raise ValueError(f"--data {data!r}: give cifar10, synthetic or imagefolder:ROOT (a folder with train/ "
                             f"and val/ of one sub-folder per class)")
        changes["data"] = data
    if width is not None:
        if not 0 < width <= 4:
            raise ValueError(f"--width {width}: give a width multiplier in (0, 4] (1 is the paper's network)")
        changes["width"] = float(width)
    if archs:
        unknown = [a for a in archs if a not in ALL_ARCHS]
        if unknown:
            raise ValueError(f"--arch {', '.join(unknown)}: choose from {', '.join(ALL_ARCHS)}")
        changes["archs"] = tuple(archs)
    if pretrained is not None:
        if preset.transfer is None:
            raise ValueError(f"--pretrained starts a transfer preset's backbone; the {preset.name} preset trains "
                             f"from scratch: use --preset transfer")
        changes["pretrained"] = str(Path(pretrained).expanduser().resolve())
    if seeds:
        if any(not isinstance(s, int) or s < 0 for s in seeds):
            raise ValueError(f"--seed {' '.join(map(str, seeds))}: give non-negative integers")
        changes["seeds"] = tuple(sorted(set(seeds)))
    return replace(preset, **changes)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
