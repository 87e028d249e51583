"""Knowledge distillation (Hinton et al. 2015), framework-free: the loss both suites must equal, and the student.

Loss, float64 numpy, over a batch of B examples with teacher distribution p_t = softmax(t / T) and student
distribution q_s = softmax(s / T):

    alpha * T^2 * mean_b KL(p_t || q_s) + (1 - alpha) * mean_b CE(s, y),   KL(p || q) = sum p (log p - log q)

T^2 keeps the soft term's gradient, which scales as 1/T^2, comparable across temperatures (Hinton et al.,
Sec. 2). The hard term is plain cross-entropy with the true labels, without the recipe's label smoothing:
label smoothing and distillation interact badly, since smoothing erases the inter-class similarities in
the logits that distillation transfers (Müller et al. 2019, "When does label smoothing help?"), so the
distillation loss carries none.

The student is the teacher's architecture at a fraction of its width (``protocol.student_width_factor``):
same depth and layer layout, every layer narrower, so the comparison isolates capacity, not topology.
"""
from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)  # shift by the row max: exp never overflows
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def kd_loss_reference(student_logits, teacher_logits, labels, temperature: float, alpha: float) -> float:
    s = np.asarray(student_logits, dtype=np.float64)
    t = np.asarray(teacher_logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    log_p_t = log_softmax(t / temperature)
    log_q_s = log_softmax(s / temperature)
    kl = (np.exp(log_p_t) * (log_p_t - log_q_s)).sum(axis=1).mean()
    ce = -log_softmax(s)[np.arange(len(labels)), labels].mean()
    return float(alpha * temperature**2 * kl + (1.0 - alpha) * ce)


def student_width(preset_width: float, protocol) -> float:
    """The student's width multiplier: the teacher's (the preset's) scaled by the protocol's factor."""
    return preset_width * protocol.student_width_factor


KD_STUDENT = "kd_student"  # checkpoint name of the distilled student (the KD pipeline starts from it)


def cell_student_width(preset, settings: dict) -> float:
    """The student width of a KD cell; refuses settings that differ from the protocol it is trained with."""
    protocol = preset.protocol
    factor = settings.get("student_width_factor", protocol.student_width_factor)
    if factor != protocol.student_width_factor:  # the row would report a width it was not trained at
        raise ValueError(f"cell student_width_factor {factor} differs from the protocol's "
                         f"{protocol.student_width_factor}")
    return student_width(preset.width, protocol)
