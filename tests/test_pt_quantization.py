"""PyTorch quantization on the smoke preset: torchao PT2E int8 programs with int8 weights that Inductor lowers
to oneDNN's int8 kernels, dynamic int8 of the Linears, bf16 autocast, and the rows the shared drivers build.

The Qm.n rule, both suites' fake quantizers and the fixed-point rows are in tests/test_fixed_point.py.
"""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch._inductor.utils import run_and_get_code

from pytorch_impl import compiled, models
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
# quantize_dynamic (int8_dynamic rows) is torch.ao's, deprecated in torch 2.14: the module keeps the warning
# visible to users (see its docstring), the tests expect it
pytestmark = [pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning"),
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


def dequantize_nodes(program: torch.fx.GraphModule, op: str) -> list[torch.fx.Node]:
    return [n for n in program.graph.nodes if n.op == "call_function" and str(n.target).endswith(f"{op}.default")]


# --- activation bits and the quantizer -------------------------------------------------------------------

def test_activation_bits_follow_the_cpu():
    bits = Q.activation_bits()
    assert bits == expected_activation_bits()
    if "avx512_vnni" in provenance.cpu_info()["cpu_flags"]:
        assert bits == 8
    assert Q.activation_range() == {"quant_min": 0, "quant_max": 2**bits - 1}
    # both int8 flows quantize activations to that range, as uint8, and weights symmetric per channel
    for quantizer in (Q.quantizer("minmax"), Q.quantizer(qat=True)):
        config = quantizer.global_config
        act, weight = config.input_activation, config.weight
        assert (act.quant_min, act.quant_max, act.dtype) == (0, 2**bits - 1, torch.uint8)
        assert (weight.quant_min, weight.quant_max, weight.dtype) == (-128, 127, torch.int8)
        assert weight.qscheme == torch.per_channel_symmetric


def test_static_quantizer_observes_with_the_protocols_observer():
    for name, cls in Q.OBSERVERS.items():
        act = Q.quantizer(name).global_config.input_activation
        assert act.observer_or_fake_quant_ctr.p.func is cls
        assert act.observer_or_fake_quant_ctr.p.keywords == {"eps": Q.OBSERVER_EPS}


def test_unknown_observer_is_refused():
    with pytest.raises(ValueError, match="unknown observer 'mse': choose from minmax, histogram"):
        Q.quantizer("mse")


# --- static int8 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_static_int8_holds_int8_weights_and_its_compiled_graph_calls_int8_kernels(pt_backend, pt_smoke_ctx, arch):
    base = baseline(pt_backend, pt_smoke_ctx, arch)
    converted, _ = Q.quantize_static(base, "minmax", val_batches(pt_smoke_ctx, 32))
    weights = Q.pt2e_int8_weights(converted)
    assert len(weights) == n_layers(arch) == {"vgg16": 15, "resnet18": 21}[arch]
    float_weights = [m.weight for m in Q.float_layers(base).values()]
    assert sorted(w.numel() for w in weights) == sorted(w.numel() for w in float_weights)  # every one int8
    # weights symmetric per output channel (zero points 0), activations affine per tensor
    per_channel = dequantize_nodes(converted, "dequantize_per_channel")
    assert len(per_channel) == n_layers(arch)
    for node in per_channel:
        zero_points = getattr(converted, node.args[2].target)
        assert int(zero_points.abs().max()) == 0 and node.args[4:7] == (-128, 127, torch.int8)
    bits = expected_activation_bits()
    assert {(n.args[3], n.args[4], n.args[5]) for n in dequantize_nodes(converted, "dequantize_per_tensor")} == {
        (0, 2**bits - 1, torch.uint8)}
    # Inductor (freezing) lowers every int8 conv and linear to a oneDNN int8 kernel
    program = compiled.Compiled(converted)
    x = next(val_batches(pt_smoke_ctx, 2))
    out, code = run_and_get_code(program, x)
    assert compiled.int8_kernel_calls("\n".join(code)) == n_layers(arch)
    assert out.dtype == torch.float32 and out.shape == (2, 10)


def test_without_freezing_no_int8_kernel_runs(pt_backend, pt_smoke_ctx, monkeypatch):
    # why compiled.Compiled sets freezing: without it, Inductor keeps the quantize/dequantize arithmetic in
    # float and no weight is prepacked for oneDNN
    base = baseline(pt_backend, pt_smoke_ctx, "vgg16")
    converted, _ = Q.quantize_static(base, "minmax", val_batches(pt_smoke_ctx, 32))
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config, "freezing", False)
    fn = torch.compile(lambda x: converted(x), dynamic=True)
    with torch.inference_mode():
        _, code = run_and_get_code(fn, next(val_batches(pt_smoke_ctx, 2)))
    assert compiled.int8_kernel_calls("\n".join(code)) == 0


@pytest.mark.parametrize("arch", ARCHS)
def test_static_int8_state_is_under_0_3x_of_fp32(arch):
    # At the smoke width (4-32 channels) per-channel scales weigh as much as the int8 weights, so the 4x claim
    # is checked at width 0.25 on an untrained model calibrated on random data: the size depends on shapes.
    torch.manual_seed(0)
    model = models.build(arch, width=0.25).eval()
    converted, _ = Q.quantize_static(model, "minmax", [torch.randn(16, 3, 32, 32)])
    protocol = MeasureProtocol()
    deployed = Q.deployed_state(converted)
    assert artifact_sizes(deployed, protocol)["size_bytes"] <= 0.3 * artifact_sizes(model, protocol)["size_bytes"]
    assert sorted(t.numel() for t in deployed.values() if t.dtype == torch.int8) == sorted(
        m.weight.numel() for m in Q.float_layers(model).values())  # no float copy of a weight is stored


@pytest.mark.parametrize("observer", ["minmax", "histogram"])
@pytest.mark.parametrize("arch", ARCHS)
def test_static_int8_logits_agree_with_fp32_and_compiled_with_the_program(pt_backend, pt_smoke_ctx, arch, observer):
    ctx = pt_smoke_ctx
    base = baseline(pt_backend, ctx, arch)
    converted, _ = Q.quantize_static(base, observer, val_batches(ctx, 64))
    test = ctx.dataset.test
    x = next(Q.as_inputs(calibration_batches(test, len(test), len(test))))
    with torch.no_grad():
        fp32, int8 = base(x), converted(x)
    int8_compiled = Q.compiled_int8(converted)(x)
    spread = float(fp32.max() - fp32.min())
    assert (fp32.argmax(1) == int8.argmax(1)).float().mean() >= 0.9
    assert (int8 - fp32).abs().max() <= 0.1 * spread  # int8 noise stays a small fraction of the logit spread
    # oneDNN's integer kernels against the program's float q/dq reference: rounding of the requantization
    assert (int8_compiled - int8).abs().max() <= 0.01 * spread


def test_static_int8_program_rebuilds_exactly_from_its_state(pt_backend, pt_smoke_ctx):
    base = baseline(pt_backend, pt_smoke_ctx, "resnet18")
    converted, state = Q.quantize_static(base, "histogram", val_batches(pt_smoke_ctx, 32))
    fresh = models.build("resnet18", widths=base.widths)
    rebuilt = Q.rebuild_static(fresh, "histogram", state)
    x = next(val_batches(pt_smoke_ctx, 8))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), converted(x))
    with pytest.raises(RuntimeError, match="size mismatch"):  # a state of another shape is refused
        Q.rebuild_static(models.build("resnet18", width=0.125), "histogram", state)


def test_static_int8_row(row):
    arch = "resnet18"
    r = row(arch, "int8_static", **STATIC)
    assert ROW_KEYS | {"fp32_test_acc"} <= r.keys()
    assert (r["observer"], r["calibration_images"], r["backend"]) == ("histogram", 32, Q.BACKEND)
    assert r["runtime"] == "pytorch-inductor (cpu)"
    assert r["activation_bits"] == Q.activation_bits() == expected_activation_bits()
    assert r["int8_modules"] == n_layers(arch)
    plan = specs.plan(arch, width=0.0625)
    assert r["int8_weight_params"] == sum(c.cout * c.cin * c.kernel**2 for c in specs.convs_of(plan)) + sum(
        fc.cin * fc.cout for fc in specs.linears_of(plan))
    assert r["params_total"] == specs.count_params(plan)
    assert r["macs"] == specs.count_macs(plan)
    assert abs(r["test_acc"] - r["fp32_test_acc"]) <= 0.1


# --- dynamic int8 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_dynamic_int8_quantizes_exactly_the_linear_layers(pt_backend, pt_smoke_ctx, row, arch):
    plan = specs.plan(arch, width=0.0625)
    linears, convs = specs.linears_of(plan), specs.convs_of(plan)
    r = row(arch, "int8_dynamic")
    assert ROW_KEYS <= r.keys() and r["backend"] == Q.DYNAMIC_BACKEND and r["runtime"] == "pytorch-eager (cpu)"
    assert r["activation_bits"] is None  # activations are quantized per batch at run time
    assert r["quantized_layers"] == len(linears) == {"vgg16": 2, "resnet18": 1}[arch]
    assert r["quantized_params"] == sum(fc.cin * fc.cout for fc in linears)
    assert r["quantizable_params"] == r["quantized_params"] + sum(c.cout * c.cin * c.kernel**2 for c in convs)

    base = baseline(pt_backend, pt_smoke_ctx, arch, "int8_dynamic")
    with pytest.warns(DeprecationWarning, match="torch.ao.quantization is deprecated"):  # reaches users
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
    assert r["int8_modules"] == n_layers("resnet18")
    assert r["activation_bits"] == expected_activation_bits()
    assert (r["backend"], r["calibration_images"]) == (Q.BACKEND, max(ctx.preset.protocol.calibration_sizes))
    assert r["bn_folding"] == Q.QAT_BN_FOLDING
    n_train = len(ctx.dataset.train)
    budget = ctx.preset.protocol.qat_budget
    assert r["budget"]["steps"] == budget_steps(ctx.preset.recipe, budget, n_train) == 8  # smoke: 1 epoch of 8
    assert r["budget"] == budget_figures(ctx.preset.recipe, budget, n_train)
    assert r["budget"]["schedule"] == "constant" and r["budget"]["peak_lr"] == pytest.approx(0.05 * 0.02)
    assert len(r["finetune_history"]) == 1  # the smoke protocol's QAT budget: 1 epoch


def test_qat_program_of_vgg_converts_to_int8(pt_backend, pt_smoke_ctx):
    # (its exact rebuild from the saved state is tests/test_artifacts.py's int8_qat case)
    base = baseline(pt_backend, pt_smoke_ctx, "vgg16", "int8_qat")
    prepared = pt_backend.prepare_qat(base, calibration_batches(pt_smoke_ctx.dataset.val, 64, 128))
    assert prepared.training and prepared.qat_on_cpu
    with torch.no_grad():  # one training-mode pass moves the fake quantizers' ranges
        for x in val_batches(pt_smoke_ctx, 64):
            prepared(x)
    quantized = pt_backend.convert_qat(prepared)
    assert (quantized.facts["int8_modules"], quantized.facts["activation_bits"]) == (n_layers("vgg16"),
                                                                                     expected_activation_bits())
    converted = quantized.model.module
    assert len(Q.pt2e_int8_weights(converted)) == n_layers("vgg16")


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
    assert (r["observer"], r["calibration_images"], r["backend"]) == ("minmax", 64, Q.BACKEND)
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
