"""Combined pipelines in Keras, measured after every stage: the mirror of ``pytorch_impl.pipelines``.

KD -> filter prune -> fine-tune -> static int8 (TFLite), and unstructured prune (tfmot) -> fine-tune ->
static int8 (TFLite): this suite's own technique functions chained, nothing new. The int8 stage is the
``int8_static`` conversion of the pruned model, measured on LiteRT like every other TFLite row.
"""
from __future__ import annotations

from shared import state as neutral
from shared.filter_rule import uniform_layer_ratios
from shared.measure import stage_summary
from . import distill, models, quantization, tflite, unstructured
from .common import FRAMEWORK, finetune, measured
from .structured import prune_filters
from .weights import import_state


def _int8(model, ctx, cell) -> dict:
    content, extra = quantization.static_int8(model, ctx, cell)
    return tflite.measure(content, model, ctx, **extra)


def distilled_student(ctx, cell):
    """The ``kd`` cell's student of this run if it exists, else distilled here with the same protocol."""
    path = ctx.checkpoint_path(FRAMEWORK, cell.arch, cell.seed, name=distill.KD_STUDENT)
    if path.exists():
        student = models.build(cell.arch, width=distill.cell_student_width(ctx, cell),
                               weight_decay=ctx.preset.recipe.weight_decay)
        return import_state(student, neutral.load(path))
    p = ctx.preset.protocol
    student = distill.build_student(ctx, cell)
    teacher = distill.frozen_teacher(ctx, cell)
    distill.train_student(distill.Distiller(student, teacher, p.kd_temperature, p.kd_alpha), ctx, cell,
                          "pipeline kd")
    return student


def pipeline_kd_filter_int8(ctx, cell) -> dict:
    student = distilled_student(ctx, cell)
    stages = [stage_summary("kd_student", measured(student, ctx))]
    pruned, _ = prune_filters(student, uniform_layer_ratios(cell.arch, cell.settings["ratio"]),
                              weight_decay=ctx.preset.recipe.weight_decay)  # fine-tuned next: the recipe's L2
    finetune(pruned, ctx, cell, label="pipeline filter finetune")
    pruned_row = measured(pruned, ctx)
    stages.append(stage_summary("filter_pruned_finetuned", pruned_row))
    final = _int8(pruned, ctx, cell)
    stages.append(stage_summary("int8_static", final))
    return {**final, "stages": stages, "pruned_widths": pruned_row["widths"]}


def pipeline_prune_int8(ctx, cell) -> dict:
    pruned, extra = unstructured.pruned_and_finetuned(ctx, cell, "global")
    stages = [stage_summary("pruned_finetuned", measured(pruned, ctx))]
    final = _int8(pruned, ctx, cell)
    stages.append(stage_summary("int8_static", final))
    return {**final, "stages": stages, "sparsity": extra["sparsity"]}


REGISTRY = {"pipeline_kd_filter_int8": pipeline_kd_filter_int8, "pipeline_prune_int8": pipeline_prune_int8}
