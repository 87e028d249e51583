"""Knowledge distillation in PyTorch: the loss against a hand-computed value and the numpy reference, its
gradient, and the kd / kd_control cells on the smoke run (same student, teacher left untouched)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pytorch_impl import distill, models
from pytorch_impl.weights import export_state
from shared import data, specs, state as neutral
from shared.kd import kd_loss_reference, student_width
from shared.recipe import lr_at, steps_per_epoch
from shared.runner import Cell, RunContext
from shared.techniques import operating_points

STUDENT = [[1.0, 2.0, 0.5], [0.2, -1.0, 3.0]]
TEACHER = [[2.0, 1.0, 0.0], [0.0, 0.5, 2.5]]
LABELS = [1, 2]
# T = 2, alpha = 0.7, computed step by step with mpmath at 40 digits:
#   row 0: p_t = softmax([1.0, 0.5, 0.0])  = [0.506480391055654, 0.307195885718498, 0.186323723225848]
#          q_s = softmax([0.5, 1.0, 0.25]) = [0.291755963728850, 0.481024263253370, 0.227219773017781]
#          KL(p_t || q_s) = 0.10462921801478154037
#          CE = logsumexp([1, 2, 0.5]) - 2 = 2.4643687841079448416 - 2 = 0.46436878410794484162
#   row 1: p_t = softmax([0.0, 0.25, 1.25]) = [0.173179114182731, 0.222366384250095, 0.604454501567174]
#          q_s = softmax([0.1, -0.5, 1.5])  = [0.178443599130952, 0.097931923589565, 0.723624477279483]
#          KL(p_t || q_s) = 0.068397072339925826888
#          CE = logsumexp([0.2, -1, 3]) - 3 = 3.076151177649976532 - 3 = 0.076151177649976531951
#   mean KL = 0.086513145177353683628, mean CE = 0.27025998087896068679
#   0.7 * 2^2 * 0.086513145177353683628 = 0.24223680649659031416
#   0.3 * 0.27025998087896068679        = 0.081077994263688206036
GOLDEN_LOSS = 0.32331480076027852019


def _torch_kd(s, t, y, temperature, alpha, dtype=torch.float64):
    return distill.kd_loss(torch.tensor(s, dtype=dtype), torch.tensor(t, dtype=dtype), torch.tensor(y),
                           temperature, alpha)


def _random_logits(seed, batch=16, classes=10, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, classes)) * scale, rng.normal(size=(batch, classes)) * scale,
            rng.integers(0, classes, size=batch))


def test_loss_equals_the_hand_computed_value():
    assert kd_loss_reference(STUDENT, TEACHER, LABELS, 2.0, 0.7) == pytest.approx(GOLDEN_LOSS, abs=1e-12)
    for dtype in (torch.float64, torch.float32):
        assert _torch_kd(STUDENT, TEACHER, LABELS, 2.0, 0.7, dtype).item() == pytest.approx(GOLDEN_LOSS, abs=1e-6)


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (2.0, 0.7), (4.0, 0.9), (8.0, 0.3), (20.0, 1.0)])
def test_torch_loss_equals_numpy_reference(temperature, alpha):
    s, t, y = _random_logits(seed=int(temperature * 10 + alpha * 100))
    want = kd_loss_reference(s, t, y, temperature, alpha)
    assert _torch_kd(s, t, y, temperature, alpha).item() == pytest.approx(want, abs=1e-12)
    # float32, as in training: T^2 (up to 400 here) scales the rounding of the small KL term with it
    assert _torch_kd(s, t, y, temperature, alpha, torch.float32).item() == pytest.approx(want, rel=1e-5)


def test_alpha_zero_is_plain_cross_entropy_without_label_smoothing():
    s, t, y = _random_logits(seed=1)
    ce = F.cross_entropy(torch.tensor(s), torch.tensor(y)).item()
    for temperature in (1.0, 4.0):
        assert _torch_kd(s, t, y, temperature, 0.0).item() == pytest.approx(ce, abs=1e-12)
        assert kd_loss_reference(s, t, y, temperature, 0.0) == pytest.approx(ce, abs=1e-12)


def test_alpha_one_at_temperature_one_is_the_kl_from_teacher_to_student():
    s, t, y = _random_logits(seed=2)
    kl = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=torch.tensor(t)),
                                           torch.distributions.Categorical(logits=torch.tensor(s))).mean().item()
    assert _torch_kd(s, t, y, 1.0, 1.0).item() == pytest.approx(kl, abs=1e-12)
    assert kd_loss_reference(s, t, y, 1.0, 1.0) == pytest.approx(kl, abs=1e-12)
    assert _torch_kd(t, t, y, 1.0, 1.0).item() == pytest.approx(0.0, abs=1e-12)  # a perfect mimic


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (4.0, 0.9)])
def test_gradient_matches_the_analytic_form_and_finite_differences(temperature, alpha):
    s_np, t_np, y_np = _random_logits(seed=3, batch=6, classes=5)
    s = torch.tensor(s_np, requires_grad=True)
    t, y = torch.tensor(t_np), torch.tensor(y_np)
    (grad,) = torch.autograd.grad(distill.kd_loss(s, t, y, temperature, alpha), s)
    batch = len(y_np)
    q_s, p_t = torch.softmax(s / temperature, 1), torch.softmax(t / temperature, 1)
    onehot = F.one_hot(y, s.shape[1]).double()
    analytic = alpha * temperature * (q_s - p_t) / batch + (1 - alpha) * (torch.softmax(s, 1) - onehot) / batch
    torch.testing.assert_close(grad, analytic.detach(), atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(lambda z: distill.kd_loss(z, t, y, temperature, alpha), (s,))


# --- the cells on the smoke run -----------------------------------------------------------------------

def _cell(ctx, arch, technique):
    (settings,) = operating_points(technique, arch, ctx.preset.protocol)
    return Cell("pytorch", arch, technique, 0, settings)


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def half_smoke_ctx(pt_smoke_ctx):
    """The smoke run (its checkpoints, preset and budget) on half its training images, to halve test time."""
    full = pt_smoke_ctx.dataset
    half = len(full.train) // 2
    dataset = data.Dataset(train=data.Split(full.train.x[:half], full.train.y[:half]), val=full.val,
                           test=full.test, source=full.source)
    return RunContext(preset=pt_smoke_ctx.preset, out_dir=pt_smoke_ctx.out_dir, _dataset=dataset)


@pytest.fixture(scope="module", params=specs.ARCHS)
def kd_run(request, half_smoke_ctx):
    """Both cells of one arch; kd's teacher is captured to check it afterwards."""
    ctx, arch = half_smoke_ctx, request.param
    checkpoint = ctx.checkpoint_path("pytorch", arch, 0)
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
    assert student_width(ctx.preset.width, ctx.preset.protocol) == width
    assert kd_row["student_width"] == control["student_width"] == width
    want_widths = list(specs.default_widths(arch, width))
    assert kd_row["widths"] == control["widths"] == want_widths
    student_params = specs.count_params(specs.plan(arch, widths=want_widths))
    assert kd_row["params_total"] == control["params_total"] == student_params
    teacher_params = models.count_params(models.build(arch, width=ctx.preset.width))
    assert kd_row["teacher_params"] == teacher_params > student_params
    teacher_macs = specs.count_macs(specs.plan(arch, width=ctx.preset.width))
    assert kd_row["macs"] == control["macs"] < teacher_macs
    protocol = ctx.preset.protocol
    assert (kd_row["temperature"], kd_row["alpha"]) == (protocol.kd_temperature, protocol.kd_alpha)
    # from scratch with the baseline recipe: its epochs and final LR, not the fine-tuning budget
    recipe = ctx.preset.recipe
    assert recipe.epochs != ctx.preset.protocol.finetune_epochs
    total = steps_per_epoch(len(ctx.dataset.train), recipe.batch_size) * recipe.epochs
    for row in (kd_row, control):
        assert [h["epoch"] for h in row["history"]] == list(range(1, recipe.epochs + 1))
        assert row["history"][-1]["lr"] == pytest.approx(float(lr_at(total - 1, total, recipe)), rel=1e-12)
        assert 0.0 <= row["test_acc"] <= 1.0
        json.dumps(row)
    assert 0.0 <= kd_row["teacher_test_acc"] <= 1.0
    # the same start and batches, different losses: the histories must differ
    assert kd_row["history"][0]["train_loss"] != control["history"][0]["train_loss"]


def test_distillation_leaves_the_teacher_untouched(kd_run):
    (teacher,) = kd_run["teachers"]
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    saved = neutral.load(kd_run["checkpoint"])
    after = export_state(teacher)
    assert sorted(after) == sorted(saved)
    for name, value in saved.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)  # BN running stats included
    assert _sha256(kd_run["checkpoint"]) == kd_run["checkpoint_sha_before"]


def test_teacher_runs_on_the_students_layout_and_device(pt_smoke_ctx):
    cell = _cell(pt_smoke_ctx, "resnet18", "kd")
    teacher = distill.frozen_teacher(pt_smoke_ctx, cell, torch.device("cpu"))
    assert teacher.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    student_a, student_b = distill.build_student(pt_smoke_ctx, cell), distill.build_student(pt_smoke_ctx, cell)
    for name, value in export_state(student_a).items():  # kd and kd_control start from the same weights
        np.testing.assert_array_equal(value, export_state(student_b)[name], err_msg=name)
