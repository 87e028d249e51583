"""Knowledge distillation in both suites: the loss against hand-computed values and the numpy reference
(with and without the recipe's label smoothing), its gradient, the KD-vs-control identity, Keras'
distiller, and the kd / kd_control cells on the smoke run (same student, the baseline's budget, teacher
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
import torch.nn.functional as F

from pytorch_impl import distill as pt_distill
from shared import data, specs, state as neutral
from shared.drivers import distill as drivers
from shared.kd import (KD_STUDENT, kd_loss_reference, smoothed_cross_entropy, student_width,
                       teacher_term_reference)
from shared.protocols import budget_figures, budget_recipe
from shared.recipe import lr_at, steps_per_epoch
from shared.runner import Cell, RunContext
from shared.techniques import operating_points
from tensorflow_impl import distill as tf_distill
from tensorflow_impl import models as km

FRAMEWORKS = ("pytorch", "keras")
LS = 0.1  # the recipe's label smoothing (asserted below), which KD's hard term now uses

STUDENT = [[1.0, 2.0, 0.5], [0.2, -1.0, 3.0]]
TEACHER = [[2.0, 1.0, 0.0], [0.0, 0.5, 2.5]]
LABELS = [1, 2]
# T = 2, alpha = 0.7, computed step by step with mpmath at 40 digits:
#   row 0: p_t = softmax([1.0, 0.5, 0.0])  = [0.506480391055654, 0.307195885718498, 0.186323723225848]
#          q_s = softmax([0.5, 1.0, 0.25]) = [0.291755963728850, 0.481024263253370, 0.227219773017781]
#          KL(p_t || q_s) = 0.10462921801478154037
#          CE = logsumexp([1, 2, 0.5]) - 2 = 2.4643687841079448416 - 2 = 0.46436878410794484162
#          mean_k -log softmax(s)_k = 2.4643687841079448416 - 3.5 / 3 = 1.2977021174412781750
#          CE_0.1 = 0.9 * 0.46436878410794484162 + 0.1 * 1.2977021174412781750 = 0.54770211744127817495
#   row 1: p_t = softmax([0.0, 0.25, 1.25]) = [0.173179114182731, 0.222366384250095, 0.604454501567174]
#          q_s = softmax([0.1, -0.5, 1.5])  = [0.178443599130952, 0.097931923589565, 0.723624477279483]
#          KL(p_t || q_s) = 0.068397072339925826888
#          CE = logsumexp([0.2, -1, 3]) - 3 = 3.076151177649976532 - 3 = 0.076151177649976531951
#          mean_k -log softmax(s)_k = 3.076151177649976532 - 2.2 / 3 = 2.3428178443166431995
#          CE_0.1 = 0.9 * 0.076151177649976531951 + 0.1 * 2.3428178443166431995 = 0.30281784431664319887
#   mean KL = 0.086513145177353683628, mean CE = 0.27025998087896068679, mean CE_0.1 = 0.42525998087896068691
#   no smoothing:   0.7 * 2^2 * 0.086513145177353683628 + 0.3 * 0.27025998087896068679 = 0.32331480076027852019
#   smoothing 0.1:  0.24223680649659031416 + 0.3 * 0.42525998087896068691       = 0.36981480076027852027
GOLDEN_TEACHER_TERM = 0.34605258070941473457  # 2^2 * mean KL
GOLDEN_CE = 0.27025998087896068679
GOLDEN_CE_LS = 0.42525998087896068691
GOLDEN_LOSS = 0.32331480076027852019
GOLDEN_LOSS_LS = 0.36981480076027852027


def kd(framework, s, t, y, temperature, alpha, label_smoothing=0.0, dtype="float64") -> float:
    """One framework's kd_loss on numpy logits and integer labels, as a Python float."""
    if framework == "pytorch":
        dt = getattr(torch, dtype)
        return pt_distill.kd_loss(torch.tensor(s, dtype=dt), torch.tensor(t, dtype=dt), torch.tensor(y),
                                  temperature, alpha, label_smoothing).item()
    dt = getattr(tf, dtype)
    s, t = tf.constant(s, dt), tf.constant(t, dt)
    return float(tf_distill.kd_loss(s, t, tf.one_hot(y, s.shape[1], dtype=dt), temperature, alpha, label_smoothing))


def _random_logits(seed, batch=16, classes=10, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, classes)) * scale, rng.normal(size=(batch, classes)) * scale,
            rng.integers(0, classes, size=batch))


# --- the loss ------------------------------------------------------------------------------------------

def test_reference_equals_the_hand_computed_values():
    assert teacher_term_reference(STUDENT, TEACHER, 2.0) == pytest.approx(GOLDEN_TEACHER_TERM, abs=1e-14)
    assert smoothed_cross_entropy(STUDENT, LABELS, 0.0) == pytest.approx(GOLDEN_CE, abs=1e-14)
    assert smoothed_cross_entropy(STUDENT, LABELS, LS) == pytest.approx(GOLDEN_CE_LS, abs=1e-14)
    assert kd_loss_reference(STUDENT, TEACHER, LABELS, 2.0, 0.7) == pytest.approx(GOLDEN_LOSS, abs=1e-14)
    assert kd_loss_reference(STUDENT, TEACHER, LABELS, 2.0, 0.7, LS) == pytest.approx(GOLDEN_LOSS_LS, abs=1e-14)
    assert kd_loss_reference(STUDENT, TEACHER, LABELS, 2.0, 0.0, LS) == pytest.approx(GOLDEN_CE_LS, abs=1e-14)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_loss_equals_the_hand_computed_values(framework, dtype):
    assert kd(framework, STUDENT, TEACHER, LABELS, 2.0, 0.7, 0.0, dtype) == pytest.approx(GOLDEN_LOSS, abs=1e-6)
    assert kd(framework, STUDENT, TEACHER, LABELS, 2.0, 0.7, LS, dtype) == pytest.approx(GOLDEN_LOSS_LS, abs=1e-6)
    assert kd(framework, STUDENT, TEACHER, LABELS, 2.0, 0.0, LS, dtype) == pytest.approx(GOLDEN_CE_LS, abs=1e-6)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (2.0, 0.7), (4.0, 0.9), (8.0, 0.3), (20.0, 1.0), (4.0, 0.0)])
@pytest.mark.parametrize("label_smoothing", [0.0, LS])
def test_loss_equals_the_numpy_reference(framework, temperature, alpha, label_smoothing):
    s, t, y = _random_logits(seed=int(temperature * 10 + alpha * 100))
    want = kd_loss_reference(s, t, y, temperature, alpha, label_smoothing)
    assert kd(framework, s, t, y, temperature, alpha, label_smoothing) == pytest.approx(want, abs=1e-12)
    # float32, as in training: T^2 (up to 400 here) scales the rounding of the small KL term with it
    assert kd(framework, s, t, y, temperature, alpha, label_smoothing, "float32") == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kd_minus_its_control_is_alpha_times_the_teacher_term_minus_the_smoothed_ce(seed):
    """kd_control is the same loss at alpha = 0: the objectives differ by alpha (soft - CE_ls) and nothing else."""
    cases = [(STUDENT, TEACHER, LABELS)] if seed == 0 else [_random_logits(seed)]
    for s, t, y in cases:
        for temperature, alpha in ((2.0, 0.7), (4.0, 0.9), (1.0, 0.25)):
            diff = kd_loss_reference(s, t, y, temperature, alpha, LS) - kd_loss_reference(s, t, y, temperature, 0.0, LS)
            want = alpha * (teacher_term_reference(s, t, temperature) - smoothed_cross_entropy(s, y, LS))
            assert diff == pytest.approx(want, abs=1e-12)
    # the hand-computed case: 0.7 * (0.34605258070941473457 - 0.42525998087896068691)
    assert GOLDEN_LOSS_LS - GOLDEN_CE_LS == pytest.approx(0.7 * (GOLDEN_TEACHER_TERM - GOLDEN_CE_LS), abs=1e-15)


def test_alpha_zero_is_the_recipes_label_smoothed_cross_entropy_in_both_frameworks():
    from shared.presets import get_preset

    assert get_preset("smoke").recipe.label_smoothing == get_preset("paper").recipe.label_smoothing == LS
    s, t, y = _random_logits(seed=1)
    torch_ce = F.cross_entropy(torch.tensor(s), torch.tensor(y), label_smoothing=LS).item()
    keras_ce = float(keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=LS)(
        tf.one_hot(y, 10, dtype=tf.float64), tf.constant(s)))
    assert keras_ce == pytest.approx(torch_ce, abs=1e-12)
    assert smoothed_cross_entropy(s, y, LS) == pytest.approx(torch_ce, abs=1e-12)
    for temperature in (1.0, 4.0):
        assert kd_loss_reference(s, t, y, temperature, 0.0, LS) == pytest.approx(torch_ce, abs=1e-12)
        for framework in FRAMEWORKS:
            assert kd(framework, s, t, y, temperature, 0.0, LS) == pytest.approx(torch_ce, abs=1e-12)
    # and without smoothing, plain cross-entropy
    assert kd("pytorch", s, t, y, 4.0, 0.0) == pytest.approx(F.cross_entropy(torch.tensor(s), torch.tensor(y)).item(),
                                                           abs=1e-12)


def test_alpha_one_at_temperature_one_is_the_kl_from_teacher_to_student():
    s, t, y = _random_logits(seed=2)
    kl = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=torch.tensor(t)),
                                           torch.distributions.Categorical(logits=torch.tensor(s))).mean().item()
    assert kd_loss_reference(s, t, y, 1.0, 1.0, LS) == pytest.approx(kl, abs=1e-12)  # no hard term left
    for framework in FRAMEWORKS:
        assert kd(framework, s, t, y, 1.0, 1.0, LS) == pytest.approx(kl, abs=1e-12)
        assert kd(framework, t, t, y, 1.0, 1.0) == pytest.approx(0.0, abs=1e-12)  # a perfect mimic


@pytest.mark.parametrize("temperature,alpha,label_smoothing", [(1.0, 0.5, 0.0), (4.0, 0.9, LS), (2.0, 0.0, LS)])
def test_torch_gradient_matches_the_analytic_form_and_finite_differences(temperature, alpha, label_smoothing):
    s_np, t_np, y_np = _random_logits(seed=3, batch=6, classes=5)
    s = torch.tensor(s_np, requires_grad=True)
    t, y = torch.tensor(t_np), torch.tensor(y_np)
    (grad,) = torch.autograd.grad(pt_distill.kd_loss(s, t, y, temperature, alpha, label_smoothing), s)
    batch, classes = s.shape
    q_s, p_t = torch.softmax(s / temperature, 1), torch.softmax(t / temperature, 1)
    target = (1 - label_smoothing) * F.one_hot(y, classes).double() + label_smoothing / classes
    analytic = alpha * temperature * (q_s - p_t) / batch + (1 - alpha) * (torch.softmax(s, 1) - target) / batch
    torch.testing.assert_close(grad, analytic.detach(), atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(lambda z: pt_distill.kd_loss(z, t, y, temperature, alpha, label_smoothing), (s,))


@pytest.mark.parametrize("label_smoothing", [0.0, LS])
def test_keras_gradient_equals_pytorch(label_smoothing):
    s, t, y = _random_logits(seed=3, batch=6, classes=5)
    st = torch.tensor(s, requires_grad=True)
    (want,) = torch.autograd.grad(
        pt_distill.kd_loss(st, torch.tensor(t), torch.tensor(y), 4.0, 0.9, label_smoothing), st)
    sk = tf.Variable(s)
    with tf.GradientTape() as tape:
        loss = tf_distill.kd_loss(sk, tf.constant(t), tf.one_hot(y, 5, dtype=tf.float64), 4.0, 0.9, label_smoothing)
    np.testing.assert_allclose(tape.gradient(loss, sk).numpy(), want.numpy(), atol=1e-12, rtol=0)


def test_distiller_trains_the_student_on_the_kd_loss_of_the_same_batch():
    keras.utils.set_random_seed(0)
    student = km.build("resnet18", width=0.03125, weight_decay=5e-4)
    teacher = km.build("resnet18", width=0.0625)
    teacher.trainable = False
    distiller = tf_distill.Distiller(student, teacher, 4.0, 0.9, LS)
    assert (distiller.temperature, distiller.alpha, distiller.label_smoothing) == (4.0, 0.9, LS)
    # the optimizer sees the student's variables only; the teacher is no part of the distiller
    assert [v.name for v in distiller.trainable_variables] == [v.name for v in student.trainable_variables]
    assert not {id(v) for v in teacher.variables} & {id(v) for v in distiller.variables}
    assert distiller.output_shape == student.output_shape
    x = tf.random.normal((8, 32, 32, 3), seed=1)
    y = np.arange(8) % 10
    logits = student(x, training=False)
    loss = distiller.compute_loss(x, tf.one_hot(y, 10), logits)
    l2 = sum(float(v) for v in student.losses)
    assert l2 > 0
    want = kd_loss_reference(logits.numpy(), teacher(x, training=False).numpy(), y, 4.0, 0.9, LS) + l2
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert float(distiller.objective.result()) == pytest.approx(want - l2, rel=1e-5)  # logged without L2


def test_teacher_is_frozen_in_eval_mode_on_the_students_layout():
    from pytorch_impl import models as tm

    teacher = pt_distill.frozen(tm.build("resnet18", width=0.0625).train(), torch.device("cpu"))
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert teacher.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)


# --- the cells on the smoke run -----------------------------------------------------------------------

def _cell(framework, ctx, arch, technique):
    (settings,) = operating_points(technique, arch, ctx.preset.protocol)
    return Cell(framework, arch, technique, 0, settings)


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _half(ctx):
    """The smoke run (its checkpoints, preset and budget) on half its training images, to halve test time."""
    full = ctx.dataset
    half = len(full.train) // 2
    dataset = data.Dataset(train=data.Split(full.train.x[:half], full.train.y[:half]), val=full.val,
                           test=full.test, source=full.source)
    return RunContext(preset=ctx.preset, out_dir=ctx.out_dir, _dataset=dataset)


def _backend_and_ctx(request, framework):
    prefix = "pt" if framework == "pytorch" else "tf"
    return request.getfixturevalue(f"{prefix}_backend"), request.getfixturevalue(f"{prefix}_smoke_ctx")


@pytest.fixture(scope="module", params=[(f, a) for f in FRAMEWORKS for a in specs.ARCHS],
                ids=lambda p: "-".join(p))
def kd_run(request):
    """Both cells of one framework and arch; kd's teacher is captured to check it afterwards."""
    framework, arch = request.param
    backend, smoke_ctx = _backend_and_ctx(request, framework)
    ctx = _half(smoke_ctx)
    checkpoint = ctx.checkpoint_path(framework, arch, 0)
    before = _sha256(checkpoint)
    teachers = []

    def recording_load_baseline(*args, **kwargs):
        teachers.append(real_load_baseline(*args, **kwargs))
        return teachers[-1]

    real_load_baseline = drivers.load_baseline
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(drivers, "load_baseline", recording_load_baseline)
        kd_row = drivers.kd(backend, ctx, _cell(framework, ctx, arch, "kd"))
        control_row = drivers.kd_control(backend, ctx, _cell(framework, ctx, arch, "kd_control"))
    return {"framework": framework, "backend": backend, "ctx": ctx, "arch": arch, "kd": kd_row,
            "control": control_row, "teachers": teachers, "checkpoint": checkpoint, "checkpoint_sha_before": before}


def test_kd_and_control_train_the_same_smaller_student_with_the_baseline_budget(kd_run):
    ctx, arch, kd_row, control = kd_run["ctx"], kd_run["arch"], kd_run["kd"], kd_run["control"]
    preset, protocol, recipe = ctx.preset, ctx.preset.protocol, ctx.preset.recipe
    width = preset.width * protocol.student_width_factor
    assert student_width(preset.width, protocol) == width
    assert kd_row["student_width"] == control["student_width"] == width
    want_widths = list(specs.default_widths(arch, width))
    assert kd_row["widths"] == control["widths"] == want_widths
    student_params = specs.count_params(specs.plan(arch, widths=want_widths))
    assert kd_row["params_total"] == control["params_total"] == student_params
    teacher_params = specs.count_params(specs.plan(arch, width=preset.width))
    assert kd_row["teacher_params"] == teacher_params > student_params
    assert kd_row["macs"] == control["macs"] < specs.count_macs(specs.plan(arch, width=preset.width))
    assert (kd_row["temperature"], kd_row["alpha"]) == (protocol.kd_temperature, protocol.kd_alpha)
    assert control["alpha"] == 0.0 and "temperature" not in control
    # both students' hard term is the recipe's label-smoothed cross-entropy
    assert kd_row["label_smoothing"] == control["label_smoothing"] == recipe.label_smoothing == LS
    # from scratch with the baseline recipe: its epochs, LR and schedule, not a fine-tuning budget
    assert budget_recipe(recipe, protocol.filter_budget).epochs != recipe.epochs
    n_train = len(ctx.dataset.train)
    total = steps_per_epoch(n_train, recipe.batch_size) * recipe.epochs
    want_budget = budget_figures(recipe, drivers.STUDENT_BUDGET, n_train)
    assert (want_budget["steps"], want_budget["epochs"], want_budget["peak_lr"], want_budget["schedule"]) == (
        total, recipe.epochs, recipe.lr, "baseline")
    for row in (kd_row, control):
        assert row["budget"] == want_budget
        assert [h["epoch"] for h in row["history"]] == list(range(1, recipe.epochs + 1))
        assert sum(h["steps"] for h in row["history"]) == total
        assert row["history"][-1]["lr"] == pytest.approx(float(lr_at(total - 1, total, recipe)), rel=1e-12)
        assert 0.0 <= row["test_acc"] <= 1.0
        json.dumps(row, allow_nan=False)
    assert 0.0 <= kd_row["teacher_test_acc"] <= 1.0
    # the same start and batches, different losses: the histories must differ
    assert kd_row["history"][0]["train_loss"] != control["history"][0]["train_loss"]
    # the saved kd student is the measured one (the KD pipeline starts from it)
    saved = neutral.load(ctx.checkpoint_path(kd_run["framework"], arch, 0, name=KD_STUDENT))
    assert {k: tuple(v.shape) for k, v in saved.items()} == neutral.expected_shapes(specs.plan(arch, widths=want_widths))


def test_distillation_leaves_the_teacher_untouched(kd_run):
    (teacher,) = kd_run["teachers"]  # kd loads one teacher; kd_control none
    if kd_run["framework"] == "pytorch":
        assert not teacher.training
        assert not any(p.requires_grad for p in teacher.parameters())
    else:
        assert not teacher.trainable
    saved = neutral.load(kd_run["checkpoint"])
    after = kd_run["backend"].export_state(teacher)
    assert sorted(after) == sorted(saved)
    for name, value in saved.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)  # BN running stats included
    assert _sha256(kd_run["checkpoint"]) == kd_run["checkpoint_sha_before"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_kd_and_control_start_from_the_same_student(request, framework):
    backend, ctx = _backend_and_ctx(request, framework)
    cell = _cell(framework, ctx, "resnet18", "kd")
    a = backend.export_state(drivers.build_student(backend, ctx, cell))
    backend.build("resnet18", width=ctx.preset.width, seed=1)  # the RNG's history must not matter
    b = backend.export_state(drivers.build_student(backend, ctx, _cell(framework, ctx, "resnet18", "kd_control")))
    assert sorted(a) == sorted(b)
    for name, value in a.items():
        np.testing.assert_array_equal(value, b[name], err_msg=name)
