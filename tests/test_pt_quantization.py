"""PyTorch quantization on the smoke preset: real int8 modules, exact counts, the rows the shared drivers build.

The Qm.n rule, both suites' fake quantizers and the fixed-point rows are in tests/test_fixed_point.py.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from pytorch_impl import models
from pytorch_impl import quantization as Q
from pytorch_impl.measure import artifact_sizes
from shared import provenance, specs
from shared.drivers import REGISTRY
from shared.drivers.common import calibration_batches, load_baseline
from shared.measure import MODEL_COLUMNS, MeasureProtocol
from shared.protocols import budget_figures, budget_steps
from shared.runner import Cell

ARCHS = ("vgg16", "resnet18")
ROW_KEYS = set(MODEL_COLUMNS) | {"widths"}
STATIC = {"observer": "histogram", "calibration_images": 32}  # the int8_static cell the row tests use
# torch.ao.quantization warns on every prepare/convert that it is deprecated in favour of torchao (see
# pytorch_impl.quantization's docstring for why it is still the path here); the tests expect it, not hide it
# from users: the module itself never filters it.
pytestmark = [pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max:UserWarning"),
              # torch's own convert_fx creates qint8 tensors, whose creation functions it also marks deprecated
              pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor, torch.quantize_per_channel:UserWarning")]


def n_layers(arch: str) -> int:
    plan = specs.plan(arch, width=0.0625)
    return len(specs.convs_of(plan)) + len(specs.linears_of(plan))


def expected_activation_bits() -> int:
    """8 on a CPU whose int8 dot products accumulate in int32 (VNNI/AMX), else the x86 default's 7."""
    flags = set(provenance.cpu_info()["cpu_flags"])
    return 8 if flags & {"avx512_vnni", "avx_vnni", "amx_int8"} else 7


@pytest.fixture(scope="module")
def row(pt_backend, pt_smoke_ctx):
    """row(arch, technique, **settings): the shared driver's row for the PyTorch backend, computed once."""
    cache = {}

    def get(arch, technique, **settings):
        key = (arch, technique, tuple(sorted(settings.items())))
        if key not in cache:
            cell = Cell("pytorch", arch, technique, 0, settings)
            cache[key] = REGISTRY[technique](pt_backend, pt_smoke_ctx, cell)
        return cache[key]

    return get


def baseline(backend, ctx, arch, technique="int8_static"):
    return load_baseline(backend, ctx, Cell("pytorch", arch, technique, 0)).eval()


def val_batches(ctx, n):
    """The shared calibration images (first n of the validation split) as channels_last NCHW tensors."""
    return Q.as_inputs(calibration_batches(ctx.dataset.val, n, ctx.preset.recipe.eval_batch_size))


# --- activation bits -------------------------------------------------------------------------------------

def test_activation_bits_follow_the_cpu():
    bits = Q.activation_bits()
    assert bits == expected_activation_bits()
    if "avx512_vnni" in provenance.cpu_info()["cpu_flags"]:
        assert bits == 8
    assert Q.activation_range() == {"quant_min": 0, "quant_max": 2**bits - 1}
    # both int8 paths observe activations with that range
    static = Q.static_qconfig_mapping("minmax").global_qconfig.activation()
    qat = Q.qat_qconfig_mapping().global_qconfig.activation()
    assert (static.quant_min, static.quant_max, static.dtype) == (0, 2**bits - 1, torch.quint8)
    assert (qat.quant_min, qat.quant_max, qat.dtype) == (0, 2**bits - 1, torch.quint8)


def test_unknown_observer_is_refused():
    with pytest.raises(ValueError, match="unknown observer 'mse'"):
        Q.static_qconfig_mapping("mse")


# --- static int8 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_static_int8_every_conv_and_linear_holds_int8_weights(pt_backend, pt_smoke_ctx, arch):
    base = baseline(pt_backend, pt_smoke_ctx, arch)
    with pytest.warns(DeprecationWarning, match="torch.ao.quantization is deprecated"):  # reaches users
        quantized = pt_backend.quantize_static(base, "minmax",
                                               calibration_batches(pt_smoke_ctx.dataset.val, 32, 128))
    qmodel = quantized.model
    int8 = Q.int8_layers(qmodel)
    assert len(int8) == n_layers(arch) == {"vgg16": 15, "resnet18": 21}[arch]
    assert set(int8) == set(Q.float_layers(base))  # same module paths, every one quantized
    assert all(w.dtype == torch.qint8 and w.qscheme() == torch.per_channel_affine for w in int8.values())
    assert all(int(w.q_per_channel_zero_points().abs().max()) == 0 for w in int8.values())  # symmetric
    assert not any(type(m) in (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d) for m in qmodel.modules())
    assert quantized.facts == {"backend": "x86", "runtime": "pytorch eager (cpu)", "int8_modules": n_layers(arch),
                               "activation_bits": expected_activation_bits()}


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
def test_static_int8_logits_agree_with_fp32(pt_backend, pt_smoke_ctx, arch, observer):
    ctx = pt_smoke_ctx
    base = baseline(pt_backend, ctx, arch)
    qmodel = Q.quantize_static(base, observer, val_batches(ctx, 64))
    test = ctx.dataset.test
    x = next(Q.as_inputs(calibration_batches(test, len(test), len(test))))
    with torch.no_grad():
        fp32, int8 = base(x), qmodel(x)
    assert (fp32.argmax(1) == int8.argmax(1)).float().mean() >= 0.9
    # int8 noise stays a small fraction of the logit spread
    assert (int8 - fp32).abs().max() <= 0.1 * (fp32.max() - fp32.min())


def test_static_int8_row(row):
    arch = "resnet18"
    r = row(arch, "int8_static", **STATIC)
    assert ROW_KEYS | {"fp32_test_acc"} <= r.keys()
    assert (r["observer"], r["calibration_images"], r["backend"]) == ("histogram", 32, "x86")
    assert r["activation_bits"] == Q.activation_bits() == expected_activation_bits()
    assert r["int8_modules"] == n_layers(arch)
    assert r["params_total"] == specs.count_params(specs.plan(arch, width=0.0625))
    assert r["macs"] == specs.count_macs(specs.plan(arch, width=0.0625))
    assert abs(r["test_acc"] - r["fp32_test_acc"]) <= 0.1


# --- dynamic int8 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_dynamic_int8_quantizes_exactly_the_linear_layers(pt_backend, pt_smoke_ctx, row, arch):
    plan = specs.plan(arch, width=0.0625)
    linears, convs = specs.linears_of(plan), specs.convs_of(plan)
    r = row(arch, "int8_dynamic")
    assert ROW_KEYS <= r.keys() and r["backend"] == "x86"
    assert r["activation_bits"] is None  # activations are quantized per batch at run time
    assert r["quantized_layers"] == len(linears) == {"vgg16": 2, "resnet18": 1}[arch]
    assert r["quantized_params"] == sum(fc.cin * fc.cout for fc in linears)
    assert r["quantizable_params"] == r["quantized_params"] + sum(c.cout * c.cin * c.kernel**2 for c in convs)

    base = baseline(pt_backend, pt_smoke_ctx, arch, "int8_dynamic")
    qmodel = pt_backend.quantize_dynamic(base).model
    for c in convs:  # PyTorch has no dynamic conv: every conv stays the same float module
        conv = qmodel.get_submodule(c.name)
        assert type(conv) is nn.Conv2d
        assert torch.equal(conv.weight, base.get_submodule(c.name).weight)
    assert set(Q.int8_layers(qmodel)) == {fc.name for fc in linears}
    assert all(Q.int8_weight(qmodel.get_submodule(fc.name)).dtype == torch.qint8 for fc in linears)


# --- QAT -------------------------------------------------------------------------------------------------

def test_qat_fine_tunes_on_its_budget_and_converts_to_real_int8(pt_smoke_ctx, row):
    # ResNet-18 only: its graph (residual adds, projection shortcuts) is the harder one to convert, and
    # fine-tuning on CPU is the slowest step of this file; VGG's conversion is checked without training below.
    ctx = pt_smoke_ctx
    r = row("resnet18", "int8_qat")
    assert ROW_KEYS | {"finetune_history", "finetune_time_s", "int8_modules", "fp32_test_acc", "budget"} <= r.keys()
    assert r["int8_modules"] == n_layers("resnet18")  # counts only modules whose weight() is qint8
    assert r["activation_bits"] == expected_activation_bits()
    assert (r["backend"], r["calibration_images"]) == ("x86", max(ctx.preset.protocol.calibration_sizes))
    n_train = len(ctx.dataset.train)
    budget = ctx.preset.protocol.qat_budget
    assert r["budget"]["steps"] == budget_steps(ctx.preset.recipe, budget, n_train) == 8  # smoke: 1 epoch of 8
    assert r["budget"] == budget_figures(ctx.preset.recipe, budget, n_train)
    assert r["budget"]["schedule"] == "constant" and r["budget"]["peak_lr"] == pytest.approx(0.05 * 0.02)
    assert len(r["finetune_history"]) == 1  # the smoke protocol's QAT budget: 1 epoch


def test_qat_graph_of_vgg_converts_to_int8(pt_backend, pt_smoke_ctx):
    base = baseline(pt_backend, pt_smoke_ctx, "vgg16", "int8_qat")
    prepared = pt_backend.prepare_qat(base, calibration_batches(pt_smoke_ctx.dataset.val, 64, 128))
    assert prepared.training and prepared.qat_on_cpu  # trains on the CPU, where convert_fx packs for
    with torch.no_grad():  # one training-mode pass: the fake-quant observers need a range
        for x in val_batches(pt_smoke_ctx, 64):
            prepared(x)
    quantized = pt_backend.convert_qat(prepared)
    int8 = Q.int8_layers(quantized.model)
    assert len(int8) == n_layers("vgg16") and all(w.dtype == torch.qint8 for w in int8.values())
    assert (quantized.facts["int8_modules"], quantized.facts["activation_bits"]) == (n_layers("vgg16"),
                                                                                     expected_activation_bits())


# --- bf16 ------------------------------------------------------------------------------------------------

def test_bf16_runs_under_autocast(pt_backend, pt_smoke_ctx, row):
    r = row("resnet18", "bf16")
    assert r["autocast_dtype"] == "bfloat16" and ROW_KEYS <= r.keys()
    base = baseline(pt_backend, pt_smoke_ctx, "resnet18", "bf16")
    assert r["params_nonzero"] == models.count_nonzero(base)
    assert r["size_bytes"] == artifact_sizes(base, pt_smoke_ctx.preset.measure)["size_bytes"]  # fp32 state
    captured = []
    base.fc.register_forward_hook(lambda m, args, out: captured.append(out.dtype))
    out = pt_backend.reduced_precision(base).model(torch.randn(2, 3, 32, 32))
    assert captured == [torch.bfloat16] and out.dtype == torch.float32


# --- pipeline --------------------------------------------------------------------------------------------

def pipeline_settings(protocol) -> dict:
    return {"sparsity": protocol.sparsities[0], "observer": "minmax", "calibration_images": max(protocol.calibration_sizes)}


def test_prune_int8_pipeline_row_is_int8_at_the_cpus_activation_bits(pt_smoke_ctx, row):
    ctx = pt_smoke_ctx
    p = ctx.preset.protocol
    r = row("vgg16", "pipeline_prune_int8", **pipeline_settings(p))
    assert ROW_KEYS <= r.keys()
    assert (r["observer"], r["calibration_images"], r["backend"]) == ("minmax", 64, "x86")
    assert r["activation_bits"] == expected_activation_bits()
    assert r["int8_modules"] == n_layers("vgg16")
    assert [s["stage"] for s in r["stages"]] == ["pruned_finetuned", "int8_static"]
    assert r["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert r["budget"] == budget_figures(ctx.preset.recipe, p.prune_budget, len(ctx.dataset.train))


# --- every row -------------------------------------------------------------------------------------------

def test_every_row_is_json_serialisable(pt_smoke_ctx, row):
    # the rows the tests above computed (cached): every quantization technique of this module, both archs
    rows = [row("vgg16", "int8_dynamic"), row("resnet18", "int8_dynamic"),
            row("resnet18", "int8_static", **STATIC), row("resnet18", "int8_qat"), row("resnet18", "bf16"),
            row("vgg16", "pipeline_prune_int8", **pipeline_settings(pt_smoke_ctx.preset.protocol))]
    for r in rows:
        assert json.loads(json.dumps(r, allow_nan=False)) == r
        assert ROW_KEYS <= r.keys()
