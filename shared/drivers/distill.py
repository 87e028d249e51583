"""Knowledge distillation (Hinton et al. 2015) and its no-teacher control.

The loss is ``shared.kd``'s, implemented by each backend (tested equal to the numpy reference). The student
is the teacher's architecture at ``student_width_factor`` of its width, trained from scratch on the
baseline's whole recipe (the budget the teacher got), so ``kd`` and ``kd_control`` differ only in the
teacher term of one loss: the control is the same loss at alpha = 0, the recipe's label-smoothed
cross-entropy.
"""
from __future__ import annotations

from .. import specs
from ..kd import KD_STUDENT, cell_student_width
from ..protocols import Budget, budget_figures
from .common import accuracy, load_baseline, measured, save_state

# KD students train on the teacher's own recipe: every epoch, the baseline LR and schedule, all images.
STUDENT_BUDGET = Budget(1.0, 1.0, "baseline")


def build_student(backend, ctx, cell):
    # Seeded: kd and kd_control of one seed start from the same student.
    return backend.build(cell.arch, width=cell_student_width(ctx.preset, cell.settings), seed=cell.seed,
                         **ctx.network)


def train_student(backend, ctx, cell, student, label: str, teacher=None, temperature=None, alpha=None) -> dict:
    stats = backend.train(student, ctx.dataset, ctx.preset.recipe, cell.seed,
                          label=f"[{backend.name} {cell.arch} {label} s{cell.seed}]",
                          teacher=teacher, temperature=temperature, alpha=alpha, checkpoints=ctx.checkpoints)
    stats["budget"] = budget_figures(ctx.preset.recipe, STUDENT_BUDGET, len(ctx.dataset.train))
    return stats


def distilled_student(backend, ctx, cell, temperature: float, alpha: float, save: bool):
    """A student distilled from this run's baseline; with ``save`` it is kept for the KD pipeline."""
    student = build_student(backend, ctx, cell)
    teacher = load_baseline(backend, ctx, cell)
    stats = train_student(backend, ctx, cell, student, "kd", teacher, temperature, alpha)
    if save:
        save_state(backend, student, ctx.checkpoint_path(backend.name, cell.arch, cell.seed, name=KD_STUDENT))
    return student, teacher, stats


def kd(backend, ctx, cell) -> dict:
    temperature, alpha = cell.settings["temperature"], cell.settings["alpha"]
    student, teacher, stats = distilled_student(backend, ctx, cell, temperature, alpha, save=True)
    return measured(backend, student, ctx, teacher_test_acc=accuracy(backend, teacher, ctx, "test"),
                    teacher_params=specs.count_params(teacher.plan),
                    student_width=cell_student_width(ctx.preset, cell.settings), temperature=temperature,
                    alpha=alpha, label_smoothing=ctx.preset.recipe.label_smoothing, history=stats["history"],
                    train_time_s=stats["train_time_s"], budget=stats["budget"])


def kd_control(backend, ctx, cell) -> dict:
    """The same student, budget and seed, trained on the labels alone: the KD loss at alpha = 0."""
    student = build_student(backend, ctx, cell)
    stats = train_student(backend, ctx, cell, student, "kd_control")
    return measured(backend, student, ctx, student_width=cell_student_width(ctx.preset, cell.settings),
                    alpha=0.0, label_smoothing=ctx.preset.recipe.label_smoothing, history=stats["history"],
                    train_time_s=stats["train_time_s"], budget=stats["budget"])


REGISTRY = {"kd": kd, "kd_control": kd_control}
