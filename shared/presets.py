"""Run presets: what data, which widths, how long. One declarative config per run."""
from __future__ import annotations

from dataclasses import dataclass

from .config import register
from .measure import MeasureProtocol
from .protocols import CompressionProtocol
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
            finetune_epochs=1, sparsities=(0.5, 0.9), uniform_ratios=(0.25, 0.5), iterative_rounds=2,
            sensitivity_ratios=(0.5, 0.9), search_steps=3, calibration_sizes=(32, 64), fixed_point_bits=(8, 4),
        ),
    ),
    # Real CIFAR-10 on a 2-core CPU: narrow networks, a short schedule.
    "quick": Preset(
        name="quick",
        data="cifar10",
        width=0.25,
        recipe=Recipe(epochs=4, batch_size=128, lr=0.1),
        # one fine-tuning epoch over a 10k-image stratified subset: the same budget at every operating point
        protocol=CompressionProtocol(finetune_images=10000),
    ),
    # Full widths, full data, a full schedule, 3 seeds: for a GPU.
    "paper": Preset(
        name="paper",
        data="cifar10",
        width=1.0,
        recipe=Recipe(epochs=160, batch_size=128, lr=0.1),
        seeds=(0, 1, 2),
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
