"""The PyTorch technique registry: key (from shared.techniques) -> function(ctx, cell) -> row metrics."""
from __future__ import annotations

import torch

from shared import state as neutral
from shared.techniques import TECHNIQUES
from . import models
from .measure import measure
from .train import train
from .weights import export_state

FRAMEWORK = "pytorch"


def baseline(ctx, cell) -> dict:
    preset = ctx.preset
    torch.manual_seed(cell.seed)  # the initial weights are part of the seed, not of the RNG's history
    model = models.build(cell.arch, width=preset.width)
    stats = train(model, ctx.dataset, preset.recipe, cell.seed, label=f"[pytorch {cell.arch} s{cell.seed}]")
    # later techniques start from this checkpoint (safetensors: loading it never unpickles)
    neutral.save(export_state(model), ctx.checkpoint_path(FRAMEWORK, cell.arch, cell.seed))
    metrics = measure(model, ctx.dataset, preset.measure, preset.recipe.eval_batch_size)
    return {**metrics, **stats, "widths": list(model.widths)}


def _registry() -> dict:
    from . import distill, pipelines, quantization, structured, unstructured

    found = {"baseline": baseline, "kd": distill.kd, "kd_control": distill.kd_control}
    for module in (unstructured, structured, quantization, pipelines):
        found.update(module.REGISTRY)
    # the shared key order (baseline first: the other techniques start from its checkpoint)
    return {key: found[key] for key in TECHNIQUES}


REGISTRY = _registry()
