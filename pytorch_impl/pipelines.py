"""Combined pipelines, measured after every stage: the techniques' own functions chained, nothing new.

KD -> filter prune -> fine-tune -> static int8, and unstructured prune -> fine-tune -> static int8.
A stage's figures are the shared protocol's measurements of the model as it leaves that stage.
"""
from __future__ import annotations

from shared import state as neutral
from shared.filter_rule import uniform_layer_ratios
from shared.measure import stage_summary as _stage
from . import distill, models, quantization, unstructured
from .common import FRAMEWORK, finetune, measured
from .structured import prune_filters
from .train import pick_device
from .weights import import_state

def _int8(model, ctx, cell) -> dict:
    batches = quantization.calibration_batches(ctx.dataset.val, int(cell.settings["calibration_images"]),
                                               ctx.preset.recipe.eval_batch_size)
    qmodel = quantization.quantize_static(model.eval(), cell.settings["observer"], batches)
    return quantization.metrics(qmodel, model, ctx, int8_modules=len(quantization.int8_layers(qmodel)))


def distilled_student(ctx, cell):
    """The ``kd`` cell's student of this run if it exists, else distilled here with the same protocol."""
    path = ctx.checkpoint_path(FRAMEWORK, cell.arch, cell.seed, name=distill.KD_STUDENT)
    if path.exists():
        student = models.build(cell.arch, width=distill.cell_student_width(ctx, cell))
        return import_state(student, neutral.load(path))
    p = ctx.preset.protocol
    device = pick_device()
    student = distill.build_student(ctx, cell)
    teacher = distill.frozen_teacher(ctx, cell, device)
    loss = distill.distillation_loss(teacher, p.kd_temperature, p.kd_alpha)
    distill.train_student(student, ctx, cell, "pipeline kd", device, loss)
    return student.to("cpu")


def pipeline_kd_filter_int8(ctx, cell) -> dict:
    stages = []
    student = distilled_student(ctx, cell)
    stages.append(_stage("kd_student", measured(student, ctx)))
    pruned, _ = prune_filters(student, uniform_layer_ratios(cell.arch, cell.settings["ratio"]))
    finetune(pruned, ctx, cell, label="pipeline filter finetune")
    pruned_row = measured(pruned, ctx)
    stages.append(_stage("filter_pruned_finetuned", pruned_row))
    final = _int8(pruned, ctx, cell)
    stages.append(_stage("int8_static", final))
    return {**final, "stages": stages, "pruned_widths": pruned_row["widths"]}


def pipeline_prune_int8(ctx, cell) -> dict:
    pruned, extra = unstructured.pruned_and_finetuned(ctx, cell, "global")
    stages = [_stage("pruned_finetuned", measured(pruned, ctx))]
    final = _int8(pruned, ctx, cell)
    stages.append(_stage("int8_static", final))
    return {**final, "stages": stages, "sparsity": extra["sparsity"]}


REGISTRY = {"pipeline_kd_filter_int8": pipeline_kd_filter_int8, "pipeline_prune_int8": pipeline_prune_int8}
