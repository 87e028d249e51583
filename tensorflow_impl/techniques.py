"""The Keras technique registry: key (from shared.techniques) -> function(ctx, cell) -> row metrics."""
from __future__ import annotations

import tf_keras as keras

from shared import state as neutral
from shared.techniques import TECHNIQUES
from . import models
from .measure import measure
from .train import train
from .weights import export_state

FRAMEWORK = "keras"


def baseline(ctx, cell) -> dict:
    preset = ctx.preset
    keras.utils.set_random_seed(cell.seed)  # the initial weights are part of the seed
    model = models.build(cell.arch, width=preset.width, weight_decay=preset.recipe.weight_decay)
    stats = train(model, ctx.dataset, preset.recipe, cell.seed, label=f"[keras {cell.arch} s{cell.seed}]")
    neutral.save(export_state(model), ctx.checkpoint_path(FRAMEWORK, cell.arch, cell.seed))
    metrics = measure(model, ctx.dataset, preset.measure, preset.recipe.eval_batch_size)
    return {**metrics, **stats, "widths": list(model.widths)}


def _pending(technique: str):
    def run(ctx, cell):
        raise NotImplementedError(f"{technique}: not implemented in the Keras suite yet (issue #4)")

    return run


def _registry() -> dict:
    from . import distill, quantization, structured, unstructured

    found = {"baseline": baseline, **unstructured.REGISTRY, **structured.REGISTRY, **quantization.REGISTRY,
             **distill.REGISTRY}
    # the shared key order; techniques this suite lacks yet are recorded as not_implemented, not failed
    return {t: found.get(t) or _pending(t) for t in TECHNIQUES}


REGISTRY = _registry()
