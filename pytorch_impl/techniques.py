"""The PyTorch technique registry: key (from shared.techniques) -> function(ctx, cell) -> row metrics."""
from __future__ import annotations

from shared import state as neutral
from . import models
from .measure import measure
from .train import train
from .weights import export_state

FRAMEWORK = "pytorch"


def baseline(ctx, cell) -> dict:
    preset = ctx.preset
    model = models.build(cell.arch, width=preset.width)
    stats = train(model, ctx.dataset, preset.recipe, cell.seed, label=f"[pytorch {cell.arch} s{cell.seed}]")
    # later techniques start from this checkpoint (safetensors: loading it never unpickles)
    neutral.save(export_state(model), ctx.checkpoint_path(FRAMEWORK, cell.arch, cell.seed))
    metrics = measure(model, ctx.dataset, preset.measure, preset.recipe.eval_batch_size)
    return {**metrics, **stats, "widths": list(model.widths)}


REGISTRY = {"baseline": baseline}
