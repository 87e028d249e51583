"""Knowledge distillation in Keras: the loss against the hand-computed value, PyTorch's kd_loss and the numpy
reference, the distiller's plumbing, and the kd / kd_control cells on the smoke run (same student, teacher
left untouched)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import tensorflow_impl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
import tf_keras as keras
import torch

from pytorch_impl import distill as pt_distill
from shared import data, specs, state as neutral
from shared.kd import kd_loss_reference, student_width
from shared.recipe import lr_at, steps_per_epoch
from shared.runner import Cell, RunContext
from shared.techniques import operating_points
from tensorflow_impl import distill, models
from tensorflow_impl.weights import export_state

# The hand-computed case of tests/test_pt_distill.py (T = 2, alpha = 0.7; mpmath at 40 digits, worked there)
STUDENT = [[1.0, 2.0, 0.5], [0.2, -1.0, 3.0]]
TEACHER = [[2.0, 1.0, 0.0], [0.0, 0.5, 2.5]]
LABELS = [1, 2]
GOLDEN_LOSS = 0.32331480076027852019


def _tf_kd(s, t, y, temperature, alpha, dtype=tf.float64):
    s, t = tf.constant(s, dtype), tf.constant(t, dtype)
    return float(distill.kd_loss(s, t, tf.one_hot(y, s.shape[1], dtype=dtype), temperature, alpha))


def _random_logits(seed, batch=16, classes=10, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, classes)) * scale, rng.normal(size=(batch, classes)) * scale,
            rng.integers(0, classes, size=batch))


def test_loss_equals_the_hand_computed_value():
    for dtype in (tf.float64, tf.float32):
        assert _tf_kd(STUDENT, TEACHER, LABELS, 2.0, 0.7, dtype) == pytest.approx(GOLDEN_LOSS, abs=1e-6)


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (2.0, 0.7), (4.0, 0.9), (8.0, 0.3), (20.0, 1.0), (4.0, 0.0)])
def test_keras_loss_equals_pytorch_and_the_numpy_reference(temperature, alpha):
    s, t, y = _random_logits(seed=int(temperature * 10 + alpha * 100))
    torch_loss = pt_distill.kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), temperature, alpha).item()
    assert _tf_kd(s, t, y, temperature, alpha) == pytest.approx(torch_loss, abs=1e-6)
    assert _tf_kd(s, t, y, temperature, alpha) == pytest.approx(kd_loss_reference(s, t, y, temperature, alpha), abs=1e-12)
    # float32, as in training: T^2 (up to 400 here) scales the rounding of the small KL term with it
    assert _tf_kd(s, t, y, temperature, alpha, tf.float32) == pytest.approx(torch_loss, rel=1e-5)


def test_keras_gradient_equals_pytorch():
    s, t, y = _random_logits(seed=3, batch=6, classes=5)
    st = torch.tensor(s, requires_grad=True)
    (want,) = torch.autograd.grad(pt_distill.kd_loss(st, torch.tensor(t), torch.tensor(y), 4.0, 0.9), st)
    sk = tf.Variable(s)
    with tf.GradientTape() as tape:
        loss = distill.kd_loss(sk, tf.constant(t), tf.one_hot(y, 5, dtype=tf.float64), 4.0, 0.9)
    np.testing.assert_allclose(tape.gradient(loss, sk).numpy(), want.numpy(), atol=1e-12, rtol=0)


def test_distiller_trains_the_student_on_the_kd_loss_of_the_same_batch():
    keras.utils.set_random_seed(0)
    student = models.build("resnet18", width=0.03125, weight_decay=5e-4)
    teacher = models.build("resnet18", width=0.0625)
    teacher.trainable = False
    distiller = distill.Distiller(student, teacher, 4.0, 0.9)
    # the optimizer sees the student's variables only; the teacher is no part of the distiller
    assert [v.name for v in distiller.trainable_variables] == [v.name for v in student.trainable_variables]
    assert not {id(v) for v in teacher.variables} & {id(v) for v in distiller.variables}
    assert distiller.output_shape == student.output_shape
    x = tf.random.normal((8, 32, 32, 3), seed=1)
    y = np.arange(8) % 10
    logits = student(x, training=False)
    loss = distiller.compute_loss(x, tf.one_hot(y, 10), logits)
    l2 = sum(float(v) for v in student.losses)
    want = kd_loss_reference(logits.numpy(), teacher(x, training=False).numpy(), y, 4.0, 0.9) + l2
    assert float(loss) == pytest.approx(want, rel=1e-5)


# --- the cells on the smoke run -----------------------------------------------------------------------

def _cell(ctx, arch, technique):
    (settings,) = operating_points(technique, arch, ctx.preset.protocol)
    return Cell("keras", arch, technique, 0, settings)


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def half_smoke_ctx(tf_smoke_ctx):
    """The smoke run (its checkpoints, preset and budget) on half its training images, to halve test time."""
    full = tf_smoke_ctx.dataset
    half = len(full.train) // 2
    dataset = data.Dataset(train=data.Split(full.train.x[:half], full.train.y[:half]), val=full.val,
                           test=full.test, source=full.source)
    return RunContext(preset=tf_smoke_ctx.preset, out_dir=tf_smoke_ctx.out_dir, _dataset=dataset)


@pytest.fixture(scope="module", params=specs.ARCHS)
def kd_run(request, half_smoke_ctx):
    """Both cells of one arch; kd's teacher is captured to check it afterwards."""
    ctx, arch = half_smoke_ctx, request.param
    checkpoint = ctx.checkpoint_path("keras", arch, 0)
    before = _sha256(checkpoint)
    teachers = []

    def recording_teacher(*args, **kwargs):
        teachers.append(real_frozen_teacher(*args, **kwargs))
        return teachers[-1]

    real_frozen_teacher = distill.frozen_teacher
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(distill, "frozen_teacher", recording_teacher)
        kd_row = distill.kd(ctx, _cell(ctx, arch, "kd"))
    control_row = distill.kd_control(ctx, _cell(ctx, arch, "kd_control"))
    return {"ctx": ctx, "arch": arch, "kd": kd_row, "control": control_row, "teachers": teachers,
            "checkpoint": checkpoint, "checkpoint_sha_before": before}


def test_kd_and_control_train_the_same_smaller_student_with_the_baseline_budget(kd_run):
    ctx, arch, kd_row, control = kd_run["ctx"], kd_run["arch"], kd_run["kd"], kd_run["control"]
    width = ctx.preset.width * ctx.preset.protocol.student_width_factor
    assert kd_row["student_width"] == control["student_width"] == width
    want_widths = list(specs.default_widths(arch, width))
    assert kd_row["widths"] == control["widths"] == want_widths
    student_params = specs.count_params(specs.plan(arch, widths=want_widths))
    assert kd_row["params_total"] == control["params_total"] == student_params
    teacher_params = specs.count_params(specs.plan(arch, width=ctx.preset.width))
    assert kd_row["teacher_params"] == teacher_params > student_params
    assert kd_row["macs"] == control["macs"] < specs.count_macs(specs.plan(arch, width=ctx.preset.width))
    protocol = ctx.preset.protocol
    assert (kd_row["temperature"], kd_row["alpha"]) == (protocol.kd_temperature, protocol.kd_alpha)
    # from scratch with the baseline recipe: its epochs and final LR, not the fine-tuning budget
    recipe = ctx.preset.recipe
    assert recipe.epochs != protocol.finetune_epochs
    total = steps_per_epoch(len(ctx.dataset.train), recipe.batch_size) * recipe.epochs
    for row in (kd_row, control):
        assert [h["epoch"] for h in row["history"]] == list(range(1, recipe.epochs + 1))
        assert row["history"][-1]["lr"] == pytest.approx(float(lr_at(total - 1, total, recipe)), rel=1e-12)
        assert 0.0 <= row["test_acc"] <= 1.0
        json.dumps(row, allow_nan=False)
    assert 0.0 <= kd_row["teacher_test_acc"] <= 1.0
    # the same start and batches, different losses: the histories must differ
    assert kd_row["history"][0]["train_loss"] != control["history"][0]["train_loss"]
    # the saved kd student is the measured one (the KD pipeline starts from it)
    saved = neutral.load(ctx.checkpoint_path("keras", arch, 0, name=distill.KD_STUDENT))
    assert sum(int(np.prod(v.shape)) for k, v in saved.items() if "running" not in k) == student_params


def test_distillation_leaves_the_teacher_untouched(kd_run):
    (teacher,) = kd_run["teachers"]
    assert not teacher.trainable
    saved = neutral.load(kd_run["checkpoint"])
    after = export_state(teacher)
    assert sorted(after) == sorted(saved)
    for name, value in saved.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)  # BN moving statistics included
    assert _sha256(kd_run["checkpoint"]) == kd_run["checkpoint_sha_before"]


def test_kd_and_control_start_from_the_same_student(tf_smoke_ctx):
    cell = _cell(tf_smoke_ctx, "resnet18", "kd")
    a, b = distill.build_student(tf_smoke_ctx, cell), distill.build_student(tf_smoke_ctx, cell)
    for name, value in export_state(a).items():
        np.testing.assert_array_equal(value, export_state(b)[name], err_msg=name)
