"""Knowledge distillation's loss in PyTorch (Hinton et al. 2015): must equal ``shared.kd.kd_loss_reference``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .train import autocast


def kd_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float,
            label_smoothing: float = 0.0) -> torch.Tensor:
    """alpha * T^2 * KL(p_t^T || q_s^T) (batch mean) + (1 - alpha) * CE_ls(s, y)."""
    log_q_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    # kl_div(input, target) is sum target * (log target - input): input is the student, as in Hinton et al.;
    # "batchmean" is the true KL per example ("mean" would also divide by the number of classes).
    soft = F.kl_div(log_q_s, log_p_t, reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard


def frozen(teacher, device) -> torch.nn.Module:
    """The teacher in eval mode (BN running stats stay put), without gradients, laid out like the student."""
    teacher = teacher.to(device).to(memory_format=torch.channels_last).eval()
    return teacher.requires_grad_(False)


def distillation_loss(teacher, temperature: float, alpha: float, label_smoothing: float):
    """``train``'s loss_fn: the teacher sees the student's augmented batch, so both see the same images."""
    device = next(teacher.parameters()).device

    def loss_fn(logits, y, x):
        with torch.no_grad(), autocast(device):  # the teacher runs at the student's forward precision
            teacher_logits = teacher(x).float()
        return kd_loss(logits, teacher_logits, y, temperature, alpha, label_smoothing)

    return loss_fn
