"""What every driver does around its technique: start from the baseline, fine-tune on a budget, measure.

Written once against ``shared.backend.Backend``; the row keys are the same for every framework.
"""
from __future__ import annotations

import numpy as np

from .. import data as data_mod, state as neutral
from ..protocols import Budget, budget_figures, budget_recipe, budget_steps


def baseline_path(ctx, backend, cell):
    path = ctx.checkpoint_path(backend.name, cell.arch, cell.seed)
    if not path.exists():
        suite = "pytorch_impl" if backend.name == "pytorch" else "tensorflow_impl"
        raise FileNotFoundError(
            f"no baseline checkpoint at {path}: run the 'baseline' technique of this preset first "
            f"(python -m {suite} run --preset {ctx.preset.name} --out {ctx.out_dir} --technique baseline)")
    return path


def load_baseline(backend, ctx, cell, width: float | None = None):
    """The trained baseline of this run (same arch and seed), rebuilt from its safetensors checkpoint."""
    model = backend.build(cell.arch, width=ctx.preset.width if width is None else width, **ctx.network)
    return backend.import_state(model, neutral.load(baseline_path(ctx, backend, cell)))


def save_state(backend, model, path) -> None:
    neutral.save(backend.export_state(model), path)


def finetune_data(ctx, budget: Budget) -> data_mod.Dataset:
    """The budget's training images: a fixed stratified subset of the training split, or all of it."""
    ds = ctx.dataset
    if budget.images is None:
        return ds
    return data_mod.Dataset(data_mod.stratified_subset(ds.train, budget.images), ds.val, ds.test, ds.source,
                            ds.classes)


def total_steps(ctx, budget: Budget) -> int:
    return budget_steps(ctx.preset.recipe, budget, len(finetune_data(ctx, budget).train))


def finetune(backend, ctx, cell, model, budget: Budget, label: str, steps: int | None = None, **train_kwargs) -> dict:
    """Fine-tune ``model`` in place on ``budget`` (``steps``: a share of it); the stats carry the budget."""
    data = finetune_data(ctx, budget)
    recipe = budget_recipe(ctx.preset.recipe, budget)
    stats = backend.train(model, data, recipe, cell.seed, label=f"[{backend.name} {cell.arch} {label}]",
                          steps=steps, checkpoints=ctx.checkpoints, **train_kwargs)
    stats["budget"] = budget_figures(ctx.preset.recipe, budget, len(data.train), steps)
    return stats


def finetune_extras(stats: dict) -> dict:
    return {"finetune_history": stats["history"], "finetune_time_s": stats["train_time_s"],
            "budget": stats["budget"]}


def accuracy(backend, model, ctx, split: str) -> float | None:
    data = getattr(ctx.dataset, split)
    return backend.evaluate(model, data, ctx.preset.recipe.eval_batch_size)[1] if len(data) else None


def recalibrate_bn(backend, model, ctx) -> int:
    """Re-estimate BN statistics on the protocol's first training images (fixed, unaugmented, whole batches
    of the recipe's size); returns how many were used. One rule for both suites: each BN's running mean and
    variance become the plain average of its per-batch mean and unbiased variance (PyTorch's momentum=None)."""
    bs = ctx.preset.recipe.batch_size
    n = min(ctx.preset.protocol.bn_recalibration_images, len(ctx.dataset.train)) // bs * bs
    if n > 0:
        backend.recalibrate_bn(model, ctx.dataset.train.x[:n], ctx.preset.recipe.batch_size)
    return n


def measured(backend, model, ctx, **extra) -> dict:
    """A result row's metrics: the shared measurement protocol plus the model's width spec.

    The model measured last by a driver is its cell's model (pipelines measure their stages first and their
    output last): the runner saves it as the cell's artifact (``shared.artifacts``) for the timing pass."""
    preset = ctx.preset
    row = backend.measure(model, ctx.dataset, preset.measure, preset.recipe.eval_batch_size)
    row["widths"] = list(model.widths)
    row.update(extra)
    ctx.measured_model = model
    return row


def measured_quantized(backend, quantized, reference, ctx, cell, **extra) -> dict:
    """``measured`` for a backend's quantized or reduced-precision model (``shared.backend.Quantized``)."""
    row = {**backend.measure_quantized(quantized, reference, ctx, cell), **extra}
    ctx.measured_model = quantized
    return row


def calibration_batches(split: data_mod.Split, n_images: int, batch_size: int):
    """The first ``n_images`` of ``split`` (the validation split: its order is a filename hash), normalised
    as in training, NHWC float32: what every quantizer and fixed-point range calibrates on."""
    if n_images > len(split):
        raise ValueError(f"calibration needs {n_images} images, the split has {len(split)}")
    mean = np.asarray(data_mod.MEAN, np.float32) * 255
    std = np.asarray(data_mod.STD, np.float32) * 255
    for i in range(0, n_images, batch_size):
        yield (split.x[i : min(i + batch_size, n_images)].astype(np.float32) - mean) / std
