"""Knowledge distillation's loss and distiller in Keras (Hinton et al. 2015).

``kd_loss`` must equal ``shared.kd.kd_loss_reference`` (and ``pytorch_impl.distill.kd_loss``); the drivers
are ``shared.drivers.distill``.

The distiller is the student's own graph (a functional ``keras.Model`` subclass over the student's layers)
whose ``compute_loss`` adds the teacher. That lets ``train.train`` run it unchanged: the same tf.data
pipeline, tabulated LR schedule, SGD settings, seed and history as every other Keras training; the loss
``train`` compiles is simply not the one this model minimises.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras



def kd_loss(student_logits, teacher_logits, onehot_labels, temperature: float, alpha: float,
            label_smoothing: float = 0.0):
    """alpha * T^2 * KL(p_t^T || q_s^T) (batch mean) + (1 - alpha) * CE_ls(s, y).

    ``onehot_labels`` are one-hot, as the training pipeline yields them; computed in the logits' dtype.
    """
    log_q_s = tf.nn.log_softmax(student_logits / temperature, axis=1)
    log_p_t = tf.nn.log_softmax(teacher_logits / temperature, axis=1)
    # KL(p_t || q_s) = sum p_t (log p_t - log q_s), per example, then the batch mean ("batchmean")
    soft = tf.reduce_mean(tf.reduce_sum(tf.exp(log_p_t) * (log_p_t - log_q_s), axis=1))
    labels = tf.cast(onehot_labels, student_logits.dtype)
    k = tf.cast(tf.shape(labels)[1], labels.dtype)
    labels = labels * (1.0 - label_smoothing) + label_smoothing / k  # torch's and Keras' smoothing rule
    hard = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=student_logits))
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard


class Distiller(keras.Model):
    """The student's graph trained on ``kd_loss`` against a frozen teacher that sees the same batch.

    Built on the student's inputs and outputs, so it shares (and trains) the student's layers and has its
    output shape, and a call is the student's forward pass (evaluation and validation see the student).
    """

    def __init__(self, student, teacher, temperature: float, alpha: float, label_smoothing: float = 0.0):
        super().__init__(student.inputs, student.outputs, name=f"{student.name}_distiller")
        # Bypasses Keras tracking on purpose: the teacher's variables must stay out of this model's weights,
        # regularisation losses and optimizer.
        object.__setattr__(self, "_teacher", teacher)
        self.temperature, self.alpha, self.label_smoothing = float(temperature), float(alpha), float(label_smoothing)
        # The distillation objective without L2, per epoch: PyTorch logs its loss_fn value as train_loss
        self.objective = keras.metrics.Mean(name="kd_loss")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        # x is the augmented, normalised batch the student just saw; inference mode keeps BN statistics put
        teacher_logits = tf.stop_gradient(self._teacher(x, training=False))
        loss = kd_loss(y_pred, teacher_logits, y, self.temperature, self.alpha, self.label_smoothing)
        self.objective.update_state(loss)
        l2 = self.losses  # the student's kernel L2 (the recipe's weight decay), as compile's loss would add
        return loss + tf.add_n(l2) if l2 else loss

    def get_metrics_result(self):
        # train's history records logs["ce"] as train_loss: report the distillation objective there, as the
        # PyTorch suite does, rather than the compiled (unused) label-smoothed cross-entropy
        return {**super().get_metrics_result(), "ce": self.objective.result()}
