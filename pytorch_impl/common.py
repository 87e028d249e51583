"""What every PyTorch technique does around its own step: start from the baseline, fine-tune, measure."""
from __future__ import annotations

import torch

from shared import state as neutral
from shared.protocols import finetune_recipe
from . import models
from .measure import measure
from .train import train
from .weights import export_state, import_state

FRAMEWORK = "pytorch"


def load_baseline(ctx, cell, width: float | None = None) -> torch.nn.Module:
    """The trained baseline of this run (same arch and seed), rebuilt from its safetensors checkpoint."""
    path = ctx.checkpoint_path(FRAMEWORK, cell.arch, cell.seed)
    if not path.exists():
        raise FileNotFoundError(
            f"no baseline checkpoint at {path}: run the 'baseline' technique of this preset first "
            f"(python -m pytorch_impl run --preset {ctx.preset.name} --out {ctx.out_dir})"
        )
    model = models.build(cell.arch, width=ctx.preset.width if width is None else width)
    return import_state(model, neutral.load(path))


def finetune(model, ctx, cell, label: str, **train_kwargs) -> dict:
    """The protocol's fine-tuning budget (same at every operating point) on the training split."""
    recipe = finetune_recipe(ctx.preset.recipe, ctx.preset.protocol)
    return train(model, ctx.finetune_dataset, recipe, cell.seed, label=f"[pytorch {cell.arch} {label}]", **train_kwargs)


def measured(model, ctx, **extra) -> dict:
    """A result row's metrics: the shared protocol's measurements plus the model's width spec."""
    preset = ctx.preset
    model = model.to("cpu")
    row = measure(model, ctx.dataset, preset.measure, preset.recipe.eval_batch_size)
    if hasattr(model, "widths"):
        row["widths"] = list(model.widths)
    row.update(extra)
    return row


def save_state(model, path) -> None:
    neutral.save(export_state(model), path)
