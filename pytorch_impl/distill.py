"""Knowledge distillation (Hinton et al. 2015) and its no-teacher control, in PyTorch.

The loss and the student's width are defined once in ``shared.kd``; ``kd_loss`` here must equal
``shared.kd.kd_loss_reference``. The student is trained from scratch with the baseline recipe (the budget
the teacher got, not the fine-tuning budget), so ``kd`` and ``kd_control`` differ only in the teacher.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from shared import kd as kd_rules
from shared.kd import KD_STUDENT, student_width
from . import models
from .common import FRAMEWORK, load_baseline, measured, save_state
from .train import autocast, evaluate, pick_device, train


def kd_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(p_t^T || q_s^T) (batch mean) + (1 - alpha) * CE(s, y), no label smoothing."""
    log_q_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    # kl_div(input, target) is sum target * (log target - input): input is the student, as in Hinton et al.;
    # "batchmean" is the true KL per example ("mean" would also divide by the number of classes).
    soft = F.kl_div(log_q_s, log_p_t, reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard


def cell_student_width(ctx, cell) -> float:
    return kd_rules.cell_student_width(ctx.preset, cell.settings)


def build_student(ctx, cell) -> torch.nn.Module:
    # Seeded here, not only in train(): models.build draws the initial weights, so kd and kd_control of
    # one seed start from the same student.
    torch.manual_seed(cell.seed)
    return models.build(cell.arch, width=cell_student_width(ctx, cell))


def frozen_teacher(ctx, cell, device) -> torch.nn.Module:
    """The baseline in eval mode (BN running stats stay put), without gradients, laid out like the student."""
    teacher = load_baseline(ctx, cell).to(device).to(memory_format=torch.channels_last).eval()
    return teacher.requires_grad_(False)


def distillation_loss(teacher, temperature: float, alpha: float):
    """``train``'s loss_fn: the teacher sees the student's augmented batch, so both see the same images."""
    device = next(teacher.parameters()).device

    def loss_fn(logits, y, x):
        with torch.no_grad(), autocast(device):  # the teacher runs at the student's forward precision
            teacher_logits = teacher(x).float()
        return kd_loss(logits, teacher_logits, y, temperature, alpha)

    return loss_fn


def train_student(student, ctx, cell, label: str, device, loss_fn=None) -> dict:
    return train(student, ctx.dataset, ctx.preset.recipe, cell.seed,
                 label=f"[pytorch {cell.arch} {label} s{cell.seed}]", device=device, loss_fn=loss_fn)


def kd(ctx, cell) -> dict:
    device = pick_device()
    student = build_student(ctx, cell)
    teacher = frozen_teacher(ctx, cell, device)
    temperature, alpha = cell.settings["temperature"], cell.settings["alpha"]
    stats = train_student(student, ctx, cell, "kd", device, distillation_loss(teacher, temperature, alpha))
    # the KD pipeline starts from this student rather than distilling a second one
    save_state(student, ctx.checkpoint_path(FRAMEWORK, cell.arch, cell.seed, name=KD_STUDENT))
    _, teacher_acc = evaluate(teacher, ctx.dataset.test, ctx.preset.recipe.eval_batch_size)
    return measured(student, ctx, teacher_test_acc=teacher_acc, teacher_params=models.count_params(teacher),
                    student_width=cell_student_width(ctx, cell), temperature=temperature, alpha=alpha,
                    history=stats["history"], train_time_s=stats["train_time_s"])


def kd_control(ctx, cell) -> dict:
    """The same student, budget and seed, trained on the labels alone with the recipe's standard loss."""
    device = pick_device()
    student = build_student(ctx, cell)
    stats = train_student(student, ctx, cell, "kd_control", device)
    return measured(student, ctx, student_width=cell_student_width(ctx, cell), history=stats["history"],
                    train_time_s=stats["train_time_s"])
