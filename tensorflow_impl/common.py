"""What every Keras technique does around its own step: start from the baseline, fine-tune, measure.

The mirror of ``pytorch_impl.common``: the same checkpoint format (the neutral state), the same
fine-tuning budget and subset, the same measured keys.
"""
from __future__ import annotations

from shared import state as neutral
from shared.protocols import finetune_recipe
from . import models
from .measure import measure
from .train import train
from .weights import export_state, import_state

FRAMEWORK = "keras"


def baseline_checkpoint(ctx, cell, framework: str = FRAMEWORK):
    path = ctx.checkpoint_path(framework, cell.arch, cell.seed)
    if not path.exists():
        raise FileNotFoundError(
            f"no baseline checkpoint at {path}: run the 'baseline' technique of this preset first "
            f"(python -m tensorflow_impl run --preset {ctx.preset.name} --out {ctx.out_dir})"
        )
    return path


def load_baseline(ctx, cell, width: float | None = None, weight_decay: float | None = None):
    """The trained Keras baseline of this run (same arch and seed), rebuilt from its checkpoint.

    Built with the recipe's weight decay (L2 on kernels) so fine-tuning optimises the same objective as
    the PyTorch suite's coupled weight decay.
    """
    wd = ctx.preset.recipe.weight_decay if weight_decay is None else weight_decay
    model = models.build(cell.arch, width=ctx.preset.width if width is None else width, weight_decay=wd)
    return import_state(model, neutral.load(baseline_checkpoint(ctx, cell)))


def finetune(model, ctx, cell, label: str, **train_kwargs) -> dict:
    """The protocol's fine-tuning budget (same at every operating point), as in the PyTorch suite."""
    recipe = finetune_recipe(ctx.preset.recipe, ctx.preset.protocol)
    return train(model, ctx.finetune_dataset, recipe, cell.seed, label=f"[keras {cell.arch} {label}]", **train_kwargs)


def measured(model, ctx, **extra) -> dict:
    preset = ctx.preset
    row = measure(model, ctx.dataset, preset.measure, preset.recipe.eval_batch_size)
    if hasattr(model, "widths"):
        row["widths"] = list(model.widths)
    row.update(extra)
    return row


def save_state(model, path) -> None:
    neutral.save(export_state(model), path)
