"""The Keras technique registry: key (from shared.techniques) -> function(ctx, cell) -> row metrics."""
from __future__ import annotations

import tf_keras as keras

from shared import state as neutral
from shared.runner import CONTROLLED_SOURCE
from shared.techniques import TECHNIQUES
from . import models
from .measure import measure
from .train import train
from .weights import export_state, import_state

FRAMEWORK = "keras"


def imported_baseline(ctx, cell) -> dict:
    """Controlled mode: the PyTorch-trained baseline of this run, imported through the neutral state and
    saved as this suite's (controlled) baseline; measured here with the Keras protocol, never trained."""
    source = ctx.checkpoint_path(CONTROLLED_SOURCE, cell.arch, cell.seed)
    if not source.exists():
        raise FileNotFoundError(
            f"controlled mode needs the {CONTROLLED_SOURCE} baseline at {source}: run python -m pytorch_impl run "
            f"--preset {ctx.preset.name} --out {ctx.out_dir} --technique baseline first")
    model = models.build(cell.arch, width=ctx.preset.width, weight_decay=ctx.preset.recipe.weight_decay)
    import_state(model, neutral.load(source))
    neutral.save(export_state(model), ctx.checkpoint_path(FRAMEWORK, cell.arch, cell.seed))
    metrics = measure(model, ctx.dataset, ctx.preset.measure, ctx.preset.recipe.eval_batch_size)
    return {**metrics, "widths": list(model.widths), "source_framework": CONTROLLED_SOURCE,
            "source_checkpoint": source.name}


def baseline(ctx, cell) -> dict:
    if ctx.controlled:
        return imported_baseline(ctx, cell)
    preset = ctx.preset
    keras.utils.set_random_seed(cell.seed)  # the initial weights are part of the seed
    model = models.build(cell.arch, width=preset.width, weight_decay=preset.recipe.weight_decay)
    stats = train(model, ctx.dataset, preset.recipe, cell.seed, label=f"[keras {cell.arch} s{cell.seed}]")
    neutral.save(export_state(model), ctx.checkpoint_path(FRAMEWORK, cell.arch, cell.seed))
    metrics = measure(model, ctx.dataset, preset.measure, preset.recipe.eval_batch_size)
    return {**metrics, **stats, "widths": list(model.widths)}


def _registry() -> dict:
    from . import distill, pipelines, quantization, structured, unstructured

    found = {"baseline": baseline}
    for module in (unstructured, structured, quantization, distill, pipelines):
        found.update(module.REGISTRY)
    # the shared key order (baseline first: the other techniques start from its checkpoint)
    return {key: found[key] for key in TECHNIQUES}


REGISTRY = _registry()
