"""Knowledge distillation (Hinton et al. 2015) and its no-teacher control, in Keras.

The loss and the student's width are defined once in ``shared.kd``; ``kd_loss`` here must equal
``shared.kd.kd_loss_reference`` (and ``pytorch_impl.distill.kd_loss``). The student is trained from scratch
with the baseline recipe (the budget the teacher got, not the fine-tuning budget), so ``kd`` and
``kd_control`` differ only in the teacher.

The distiller is the student's own graph (a functional ``keras.Model`` subclass over the student's layers)
whose ``compute_loss`` adds the teacher. That lets ``train.train`` run it unchanged: the same tf.data
pipeline, tabulated LR schedule, SGD settings, seed and history as every other Keras training; the loss
``train`` compiles is simply not the one this model minimises.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from shared import kd as kd_rules
from shared.kd import KD_STUDENT, student_width
from . import models
from .common import FRAMEWORK, load_baseline, measured, save_state
from .train import evaluate, train


def kd_loss(student_logits, teacher_logits, onehot_labels, temperature: float, alpha: float):
    """alpha * T^2 * KL(p_t^T || q_s^T) (batch mean) + (1 - alpha) * CE(s, y), no label smoothing.

    ``onehot_labels`` are one-hot, as the training pipeline yields them; computed in the logits' dtype.
    """
    log_q_s = tf.nn.log_softmax(student_logits / temperature, axis=1)
    log_p_t = tf.nn.log_softmax(teacher_logits / temperature, axis=1)
    # KL(p_t || q_s) = sum p_t (log p_t - log q_s), per example, then the batch mean ("batchmean")
    soft = tf.reduce_mean(tf.reduce_sum(tf.exp(log_p_t) * (log_p_t - log_q_s), axis=1))
    labels = tf.cast(onehot_labels, student_logits.dtype)
    hard = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=student_logits))
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard


class Distiller(keras.Model):
    """The student's graph trained on ``kd_loss`` against a frozen teacher that sees the same batch.

    Built on the student's inputs and outputs, so it shares (and trains) the student's layers and has its
    output shape, and a call is the student's forward pass (evaluation and validation see the student).
    """

    def __init__(self, student, teacher, temperature: float, alpha: float):
        super().__init__(student.inputs, student.outputs, name=f"{student.name}_distiller")
        # Bypasses Keras tracking on purpose: the teacher's variables must stay out of this model's weights,
        # regularisation losses and optimizer.
        object.__setattr__(self, "_teacher", teacher)
        self.temperature, self.alpha = float(temperature), float(alpha)
        # The distillation objective without L2, per epoch: PyTorch logs its loss_fn value as train_loss
        self.objective = keras.metrics.Mean(name="kd_loss")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        # x is the augmented, normalised batch the student just saw; inference mode keeps BN statistics put
        teacher_logits = tf.stop_gradient(self._teacher(x, training=False))
        loss = kd_loss(y_pred, teacher_logits, y, self.temperature, self.alpha)
        self.objective.update_state(loss)
        l2 = self.losses  # the student's kernel L2 (the recipe's weight decay), as compile's loss would add
        return loss + tf.add_n(l2) if l2 else loss

    def get_metrics_result(self):
        # train's history records logs["ce"] as train_loss: report the distillation objective there, as the
        # PyTorch suite does, rather than the compiled (unused) label-smoothed cross-entropy
        return {**super().get_metrics_result(), "ce": self.objective.result()}


def cell_student_width(ctx, cell) -> float:
    return kd_rules.cell_student_width(ctx.preset, cell.settings)


def build_student(ctx, cell):
    # Seeded here, not only in train(): models.build draws the initial weights, so kd and kd_control of
    # one seed start from the same student.
    keras.utils.set_random_seed(cell.seed)
    return models.build(cell.arch, width=cell_student_width(ctx, cell), weight_decay=ctx.preset.recipe.weight_decay)


def frozen_teacher(ctx, cell):
    """The baseline, frozen; it is only ever called in inference mode. No L2: it is never trained."""
    teacher = load_baseline(ctx, cell, weight_decay=0.0)
    teacher.trainable = False
    return teacher


def train_student(model, ctx, cell, label: str) -> dict:
    return train(model, ctx.dataset, ctx.preset.recipe, cell.seed, label=f"[keras {cell.arch} {label} s{cell.seed}]")


def kd(ctx, cell) -> dict:
    student = build_student(ctx, cell)
    teacher = frozen_teacher(ctx, cell)
    temperature, alpha = cell.settings["temperature"], cell.settings["alpha"]
    stats = train_student(Distiller(student, teacher, temperature, alpha), ctx, cell, "kd")
    # the KD pipeline starts from this student rather than distilling a second one
    save_state(student, ctx.checkpoint_path(FRAMEWORK, cell.arch, cell.seed, name=KD_STUDENT))
    _, teacher_acc = evaluate(teacher, ctx.dataset.test, ctx.preset.recipe.eval_batch_size)
    return measured(student, ctx, teacher_test_acc=teacher_acc, teacher_params=models.count_params(teacher),
                    student_width=cell_student_width(ctx, cell), temperature=temperature, alpha=alpha,
                    history=stats["history"], train_time_s=stats["train_time_s"])


def kd_control(ctx, cell) -> dict:
    """The same student, budget and seed, trained on the labels alone with the recipe's standard loss."""
    student = build_student(ctx, cell)
    stats = train_student(student, ctx, cell, "kd_control")
    return measured(student, ctx, student_width=cell_student_width(ctx, cell), history=stats["history"],
                    train_time_s=stats["train_time_s"])


REGISTRY = {"kd": kd, "kd_control": kd_control}
