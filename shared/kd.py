"""Knowledge distillation (Hinton et al. 2015), framework-free: the loss both suites must equal, and the student.

Loss, float64 numpy, over a batch of B examples with teacher distribution p_t = softmax(t / T) and student
distribution q_s = softmax(s / T):

    alpha * T^2 * mean_b KL(p_t || q_s) + (1 - alpha) * mean_b CE_ls(s, y),   KL(p || q) = sum p (log p - log q)

T^2 keeps the soft term's gradient, which scales as 1/T^2, comparable across temperatures (Hinton et al.,
Sec. 2). The hard term is the recipe's own loss: cross-entropy against labels smoothed by the recipe's
``label_smoothing`` (target (1 - e) onehot + e / K). The no-teacher control (``kd_control``) trains on the
same function at alpha = 0, which is exactly the recipe's loss: the two students' objectives differ in
the teacher's weight alone, not in a smoothing the other lacks. (Weighting the control's hard term by
1 - alpha instead would shrink its gradient, hence its effective LR, tenfold at alpha = 0.9.)

The student is the teacher's architecture at a fraction of its width (``protocol.student_width_factor``):
same depth and layer layout, every layer narrower, so the comparison isolates capacity, not topology.
"""
from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)  # shift by the row max: exp never overflows
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def smoothed_cross_entropy(student_logits, labels, label_smoothing: float) -> float:
    """Mean cross-entropy against (1 - e) onehot + e / K, torch's and Keras' label smoothing."""
    s = np.asarray(student_logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    logp = log_softmax(s)
    nll = -logp[np.arange(len(labels)), labels]
    return float(((1.0 - label_smoothing) * nll - label_smoothing * logp.mean(axis=1)).mean())


def teacher_term_reference(student_logits, teacher_logits, temperature: float) -> float:
    """T^2 * mean_b KL(p_t^T || q_s^T): the soft term, before its weight alpha."""
    log_p_t = log_softmax(np.asarray(teacher_logits, dtype=np.float64) / temperature)
    log_q_s = log_softmax(np.asarray(student_logits, dtype=np.float64) / temperature)
    return float(temperature**2 * (np.exp(log_p_t) * (log_p_t - log_q_s)).sum(axis=1).mean())


def kd_loss_reference(student_logits, teacher_logits, labels, temperature: float, alpha: float,
                      label_smoothing: float = 0.0) -> float:
    soft = teacher_term_reference(student_logits, teacher_logits, temperature)
    return float(alpha * soft + (1.0 - alpha) * smoothed_cross_entropy(student_logits, labels, label_smoothing))


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
