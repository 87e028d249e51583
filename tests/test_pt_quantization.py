"""PyTorch quantization techniques on the smoke preset: real int8 modules, exact counts, Qm.n golden values."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from pytorch_impl import models
from pytorch_impl import quantization as Q
from pytorch_impl.common import load_baseline
from pytorch_impl.measure import artifact_sizes
from shared import specs
from shared.measure import METRIC_COLUMNS, MeasureProtocol
from shared.runner import Cell

ARCHS = ("vgg16", "resnet18")
ROW_KEYS = {k for k in METRIC_COLUMNS if not k.startswith("train_")} | {"widths"}
# torch.ao.quantization warns on every prepare/convert that it is deprecated in favour of torchao (see
# pytorch_impl.quantization's docstring for why it is still the path here); the tests expect it, not hide it
# from users: the module itself never filters it.
pytestmark = [pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning"),
              # the default x86 QAT qconfig still spells 7-bit activations as reduce_range=True
              pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max:UserWarning"),
              # torch's own convert_fx creates qint8 tensors, whose creation functions it also marks deprecated
              pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor, torch.quantize_per_channel:UserWarning")]


def n_layers(arch: str) -> int:
    plan = specs.plan(arch, width=0.0625)
    return len(specs.convs_of(plan)) + len(specs.linears_of(plan))


@pytest.fixture(scope="module")
def row(pt_smoke_ctx):
    """row(arch, technique, **settings): the technique's result row, computed once per module."""
    cache = {}

    def get(arch, technique, **settings):
        key = (arch, technique, tuple(sorted(settings.items())))
        if key not in cache:
            cache[key] = Q.REGISTRY[technique](pt_smoke_ctx, Cell("pytorch", arch, technique, 0, settings))
        return cache[key]

    return get


def val_batches(ctx, n):
    return Q.calibration_batches(ctx.dataset.val, n, ctx.preset.recipe.eval_batch_size)


# --- static int8 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_static_int8_every_conv_and_linear_holds_int8_weights(pt_smoke_ctx, arch):
    baseline = load_baseline(pt_smoke_ctx, Cell("pytorch", arch, "int8_static", 0)).eval()
    with pytest.warns(DeprecationWarning, match="torch.ao.quantization is deprecated"):  # reaches users
        qmodel = Q.quantize_static(baseline, "minmax", val_batches(pt_smoke_ctx, 32))
    int8 = Q.int8_layers(qmodel)
    assert len(int8) == n_layers(arch) == {"vgg16": 15, "resnet18": 21}[arch]
    assert set(int8) == set(Q.float_layers(baseline))  # same module paths, every one quantized
    assert all(w.dtype == torch.qint8 and w.qscheme() == torch.per_channel_affine for w in int8.values())
    assert all(int(w.q_per_channel_zero_points().abs().max()) == 0 for w in int8.values())  # symmetric
    assert not any(type(m) in (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d) for m in qmodel.modules())


@pytest.mark.parametrize("arch", ARCHS)
def test_static_int8_state_is_under_0_3x_of_fp32(arch):
    # At the smoke width (4-32 channels) per-channel float64 scales and int64 zero points weigh as much
    # as the int8 weights (ratio 0.33-0.41), so the 4x claim is checked at width 0.25 on an untrained
    # model calibrated on random data: the size depends on shapes, not on training.
    torch.manual_seed(0)
    model = models.build(arch, width=0.25).eval()
    qmodel = Q.quantize_static(model, "minmax", [torch.randn(16, 3, 32, 32)])
    protocol = MeasureProtocol()
    assert artifact_sizes(qmodel, protocol)["size_bytes"] <= 0.3 * artifact_sizes(model, protocol)["size_bytes"]


@pytest.mark.parametrize("observer", ["minmax", "histogram"])
@pytest.mark.parametrize("arch", ARCHS)
def test_static_int8_logits_agree_with_fp32(pt_smoke_ctx, arch, observer):
    ctx = pt_smoke_ctx
    baseline = load_baseline(ctx, Cell("pytorch", arch, "int8_static", 0)).eval()
    qmodel = Q.quantize_static(baseline, observer, val_batches(ctx, 64))
    x = next(Q.calibration_batches(ctx.dataset.test, len(ctx.dataset.test), len(ctx.dataset.test)))
    with torch.no_grad():
        fp32, int8 = baseline(x), qmodel(x)
    assert (fp32.argmax(1) == int8.argmax(1)).float().mean() >= 0.9
    # int8 noise stays a small fraction of the logit spread (uint8 activations: 1/128 of each range)
    assert (int8 - fp32).abs().max() <= 0.1 * (fp32.max() - fp32.min())


def test_static_int8_row(row):
    arch = "resnet18"
    r = row(arch, "int8_static", observer="histogram", calibration_images=32)
    assert ROW_KEYS <= r.keys()
    assert (r["observer"], r["calibration_images"], r["backend"]) == ("histogram", 32, "x86")
    assert r["int8_modules"] == n_layers(arch)
    assert r["params_total"] == specs.count_params(specs.plan(arch, width=0.0625))
    assert r["macs"] == specs.count_macs(specs.plan(arch, width=0.0625))
    assert abs(r["test_acc"] - r["fp32_test_acc"]) <= 0.1


def test_calibration_refuses_more_images_than_the_split_has(pt_smoke_ctx):
    with pytest.raises(ValueError, match="calibration needs"):
        next(val_batches(pt_smoke_ctx, len(pt_smoke_ctx.dataset.val) + 1))


# --- dynamic int8 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_dynamic_int8_quantizes_exactly_the_linear_layers(pt_smoke_ctx, row, arch):
    plan = specs.plan(arch, width=0.0625)
    linears, convs = specs.linears_of(plan), specs.convs_of(plan)
    r = row(arch, "int8_dynamic")
    assert r["quantized_layers"] == len(linears) == {"vgg16": 2, "resnet18": 1}[arch]
    assert r["quantized_params"] == sum(fc.cin * fc.cout for fc in linears)
    assert r["quantizable_params"] == r["quantized_params"] + sum(c.cout * c.cin * c.kernel**2 for c in convs)

    baseline = load_baseline(pt_smoke_ctx, Cell("pytorch", arch, "int8_dynamic", 0)).eval()
    qmodel = Q.quantize_dynamic_linear(baseline)
    for c in convs:  # PyTorch has no dynamic conv: every conv stays the same float module
        conv = qmodel.get_submodule(c.name)
        assert type(conv) is nn.Conv2d
        assert torch.equal(conv.weight, baseline.get_submodule(c.name).weight)
    assert all(Q.int8_weight(qmodel.get_submodule(fc.name)).dtype == torch.qint8 for fc in linears)


# --- QAT -------------------------------------------------------------------------------------------------

def test_qat_fine_tunes_and_converts_to_real_int8(row):
    # ResNet-18 only: its graph (residual adds, projection shortcuts) is the harder one to convert, and
    # fine-tuning on CPU is the slowest step of this file; VGG's conversion is checked without training below.
    r = row("resnet18", "int8_qat")
    assert ROW_KEYS | {"finetune_history", "finetune_time_s", "int8_modules", "fp32_test_acc"} <= r.keys()
    assert r["int8_modules"] == n_layers("resnet18")  # counts only modules whose weight() is qint8
    assert len(r["finetune_history"]) == 1  # the smoke protocol's fine-tune budget: 1 epoch


def test_qat_graph_of_vgg_converts_to_int8(pt_smoke_ctx):
    baseline = load_baseline(pt_smoke_ctx, Cell("pytorch", "vgg16", "int8_qat", 0))
    prepared = Q.prepare_qat(baseline)
    with torch.no_grad():  # one training-mode pass: the fake-quant observers need a range
        for x in val_batches(pt_smoke_ctx, 64):
            prepared(x)
    int8 = Q.int8_layers(Q.convert_qat(prepared))
    assert len(int8) == n_layers("vgg16") and all(w.dtype == torch.qint8 for w in int8.values())


# --- bf16 ------------------------------------------------------------------------------------------------

def test_bf16_runs_under_autocast(pt_smoke_ctx, row):
    r = row("resnet18", "bf16")
    assert r["autocast_dtype"] == "bfloat16" and ROW_KEYS <= r.keys()
    baseline = load_baseline(pt_smoke_ctx, Cell("pytorch", "resnet18", "bf16", 0)).eval()
    captured = []
    baseline.fc.register_forward_hook(lambda m, args, out: captured.append(out.dtype))
    out = Q.Autocast(baseline)(torch.randn(2, 3, 32, 32))
    assert captured == [torch.bfloat16] and out.dtype == torch.float32


# --- fixed point -----------------------------------------------------------------------------------------

def test_qmn_rule_golden_values():
    assert Q.qmn_format(3.2, 8) == (2, 5)  # Q2.5: codes -128..127 times 1/32 cover [-4, 3.96875]
    assert Q.qmn_format(127 / 32, 8) == (2, 5)  # the largest value Q2.5 holds exactly
    assert Q.qmn_format(4.0, 8) == (3, 4)  # 4.0 > 127/32: one integer bit more
    assert Q.qmn_format(1.0, 4) == (1, 2)  # Q1.2: 7/4 >= 1 > 7/8
    assert Q.qmn_format(0.01, 8) == (-6, 13)  # tiny tensor: more fractional bits than bits
    assert Q.qmn_format(300.0, 8) == (9, -2)  # huge tensor: scale 4
    x = np.array([3.2, -5.0, 4.0, 0.05, 1.5 / 32, 0.5 / 32, -4.0])
    expected = np.array([102, -128, 127, 2, 2, 0, -128]) / 32  # ties to even, clamped to [-128, 127]/32
    np.testing.assert_array_equal(Q.fixed_point_round(x, 5, 8), expected)
    np.testing.assert_array_equal(Q.fake_fixed_point(torch.tensor(x), 5, 8).numpy(), expected)


def test_torch_fake_quant_matches_numpy_rule():
    x = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 3
    for bits in (4, 6, 8):
        _, n = Q.qmn_format(float(np.abs(x).max()), bits)
        np.testing.assert_array_equal(Q.fake_fixed_point(torch.from_numpy(x), n, bits).numpy(),
                                      Q.fixed_point_round(x, n, bits).astype(np.float32))


@pytest.mark.parametrize("arch", ARCHS)
def test_fixed_point_weights_lie_on_their_grid(pt_smoke_ctx, arch):
    baseline = load_baseline(pt_smoke_ctx, Cell("pytorch", arch, "fixed_point", 0)).eval()
    model, formats = Q.fixed_point_model(baseline, 4, val_batches(pt_smoke_ctx, 64))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # folded
    for name, layer in Q.float_layers(model).items():
        m, n = formats["weights"][name]
        codes = layer.weight.double() * 2.0**n
        assert m + n + 1 == 4 and torch.equal(codes, codes.round())
        assert -8 <= codes.min() and codes.max() <= 7
        assert formats["activations"][name][0] + formats["activations"][name][1] + 1 == 4


def test_fixed_point_rows(row):
    r8, r4 = row("vgg16", "fixed_point", bits=8), row("vgg16", "fixed_point", bits=4)
    assert r8["simulated"] is True and r8["bits"] == 8 and ROW_KEYS <= r8.keys()
    assert r8["calibration_images"] == 64  # the smoke protocol's largest calibration size
    assert abs(r8["test_acc"] - r8["fp32_test_acc"]) <= 0.05
    plan = specs.plan("vgg16", width=0.0625)
    weights = sum(c.cout * c.cin * c.kernel**2 for c in specs.convs_of(plan))
    weights += sum(fc.cin * fc.cout for fc in specs.linears_of(plan))
    assert (r8["fixed_point_weight_bytes"], r4["fixed_point_weight_bytes"]) == (weights, weights // 2)


# --- every row -------------------------------------------------------------------------------------------

def test_every_row_is_json_serialisable(row):
    # the rows the tests above computed (cached): every technique of this module, both archs
    rows = [row("vgg16", "int8_dynamic"), row("resnet18", "int8_dynamic"),
            row("resnet18", "int8_static", observer="histogram", calibration_images=32),
            row("resnet18", "int8_qat"), row("resnet18", "bf16"),
            row("vgg16", "fixed_point", bits=8), row("vgg16", "fixed_point", bits=4)]
    for r in rows:
        assert json.loads(json.dumps(r, allow_nan=False)) == r
        assert ROW_KEYS <= r.keys()
