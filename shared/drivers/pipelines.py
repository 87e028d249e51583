"""Combined pipelines, measured after every stage: the techniques' own drivers chained, nothing new.

KD -> filter prune -> fine-tune -> static int8, and global prune -> fine-tune -> static int8.
"""
from __future__ import annotations

from .. import state as neutral
from ..filter_rule import uniform_layer_ratios
from ..kd import KD_STUDENT, cell_student_width
from ..measure import stage_summary
from . import distill, unstructured
from .common import finetune, finetune_extras, measured, measured_quantized
from .quantization import static_int8
from .structured import prune_and_recalibrate


def _student(backend, ctx, cell):
    """The ``kd`` cell's student of this run if it exists, else distilled here with the same protocol."""
    path = ctx.checkpoint_path(backend.name, cell.arch, cell.seed, name=KD_STUDENT)
    if path.exists():
        student = backend.build(cell.arch, width=cell_student_width(ctx.preset, {}), **ctx.network)
        return backend.import_state(student, neutral.load(path))
    p = ctx.preset.protocol
    return distill.distilled_student(backend, ctx, cell, p.kd_temperature, p.kd_alpha, save=False)[0]


def _int8(backend, model, ctx, cell) -> dict:
    return measured_quantized(backend, static_int8(backend, model, ctx, cell), model, ctx, cell)


def pipeline_kd_filter_int8(backend, ctx, cell) -> dict:
    student = _student(backend, ctx, cell)
    stages = [stage_summary("kd_student", measured(backend, student, ctx))]
    pruned, _ = prune_and_recalibrate(backend, student, ctx, uniform_layer_ratios(cell.arch, cell.settings["ratio"]))
    stats = finetune(backend, ctx, cell, pruned, ctx.preset.protocol.filter_budget, "pipeline filter finetune")
    pruned_row = measured(backend, pruned, ctx)
    stages.append(stage_summary("filter_pruned_finetuned", pruned_row))
    final = _int8(backend, pruned, ctx, cell)
    stages.append(stage_summary("int8_static", final))
    return {**final, "stages": stages, "pruned_widths": pruned_row["widths"], **finetune_extras(stats)}


def pipeline_prune_int8(backend, ctx, cell) -> dict:
    pruned, extra = unstructured.pruned_and_finetuned(backend, ctx, cell, "prune_global")
    stages = [stage_summary("pruned_finetuned", measured(backend, pruned, ctx))]
    final = _int8(backend, pruned, ctx, cell)
    stages.append(stage_summary("int8_static", final))
    return {**final, "stages": stages, "sparsity": extra["sparsity"], "budget": extra["budget"]}


REGISTRY = {"pipeline_kd_filter_int8": pipeline_kd_filter_int8, "pipeline_prune_int8": pipeline_prune_int8}
