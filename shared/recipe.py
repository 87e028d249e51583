"""The training recipe, one definition applied by both suites."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import register


@register
@dataclass(frozen=True)
class Recipe:
    epochs: int
    batch_size: int = 128
    lr: float = 0.1  # peak learning rate (for batch_size; no implicit scaling)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4  # conv/linear weights only; see conventions.py for the coupling
    label_smoothing: float = 0.1
    # Piecewise-linear LR multiplier over training progress (fraction of all steps): a short warm-up, then
    # a linear decay to zero. One formula, evaluated per step in both frameworks (airbench-style).
    lr_knots: tuple[tuple[float, float], ...] = ((0.0, 0.1), (0.15, 1.0), (1.0, 0.0))
    crop_padding: int = 4  # random 32x32 crop from the zero-padded image
    flip: bool = True  # horizontal flip with probability 1/2
    eval_batch_size: int = 500


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Both suites drop the last partial batch, so every step sees a full batch and step counts agree."""
    steps = n_train // batch_size
    if steps == 0:
        raise ValueError(f"training set of {n_train} images is smaller than one batch of {batch_size}")
    return steps


def lr_at(step, total_steps: int, recipe: Recipe):
    """Learning rate at ``step`` (0-based); works on ints and numpy arrays."""
    xs, ys = zip(*recipe.lr_knots)
    return recipe.lr * np.interp(np.asarray(step, dtype=np.float64) / total_steps, xs, ys)


def epoch_orders(n_train: int, epochs: int, seed: int, batch_size: int) -> np.ndarray:
    """The sample order of every epoch, (epochs, steps * batch_size) int64.

    Drawn once here so both frameworks visit identical batches in identical order (and augment them
    identically: ``augmentation_draws``). Truncating to whole batches is the drop-last rule of
    ``steps_per_epoch``.
    """
    rng = np.random.default_rng([seed, 0xC1FA])
    keep = steps_per_epoch(n_train, batch_size) * batch_size
    return np.stack([rng.permutation(n_train)[:keep] for _ in range(epochs)]).astype(np.int64)


def augmentation_draws(shape: tuple[int, int], seed: int, pad: int, flip: bool) -> dict[str, np.ndarray]:
    """Crop offsets and flips for every sample of ``epoch_orders`` (same shape), drawn once here.

    Both frameworks apply these draws, so the same step sees the same augmented images in both: a random
    crop offset (oy, ox) in [0, 2 * pad] of the zero-padded image and a horizontal flip with probability 1/2.
    """
    rng = np.random.default_rng([seed, 0xA06])
    offsets = rng.integers(0, 2 * pad + 1, size=(2, *shape)) if pad else np.zeros((2, *shape), np.int64)
    flips = rng.random(shape) < 0.5 if flip else np.zeros(shape, bool)
    return {"oy": offsets[0].astype(np.int32), "ox": offsets[1].astype(np.int32), "flip": flips}


HISTORY_COLUMNS = ("epoch", "steps", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s", "images_per_s")
