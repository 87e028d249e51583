"""Quantization and reduced precision in PyTorch: int8 dynamic, static (PTQ) and QAT; bf16 autocast; Qm.n.

Which int8 path, and why. The int8 techniques use ``torch.ao.quantization``'s FX graph mode
(``prepare_fx`` / ``prepare_qat_fx`` / ``convert_fx``, plus ``quantize_dynamic``) with the "x86" backend.
It is the only path in the pinned torch 2.14 that runs real int8 kernels in eager execution: the converted
GraphModule calls quantized conv/linear modules whose packed int8 weights run on fbgemm or oneDNN (the
"x86" engine picks one per op). The PT2E flow (``X86InductorQuantizer``, ``prepare_pt2e``/``convert_pt2e``)
is no longer part of torch 2.14 (it moved to the separate ``torchao`` package, not installed here), and
even with torchao it only produces quantize/dequantize patterns around float ops that become int8 kernels
once lowered by ``torch.compile``/Inductor; that would put a compiler in the measured path of int8 rows
only, unlike every other row. torch marks the FX API as deprecated in favour of torchao; its
DeprecationWarning is left visible on purpose (the migration is a real caveat of these results). All
choices of quantization API live in this module, so a move to torchao touches nothing else.

Conventions (Jacob et al. 2018): weights int8 symmetric per output channel, activations uint8 per tensor
(affine), BatchNorm folded into the preceding conv/linear (FX fuses conv+bn+relu), calibration on the
validation split only. Activation bits follow the CPU (``activation_bits``): fbgemm's AVX2/AVX-512 int8
GEMM without VNNI multiplies uint8 x int8 pairs into a saturating int16 (vpmaddubsw: 2 x 255 x 127 > 32767),
which the "x86" default guards against with 7-bit activations (``reduce_range``) on every CPU. With VNNI
(vpdpbusd accumulates in int32) nothing saturates, so such a CPU gets full 8-bit activations, as TFLite
uses; every row records the bits it ran with.

Measured rows keep the keys of the shared row builder. For a quantized model: ``params_total``
and ``macs`` are the baseline's (same network); ``params_nonzero`` counts int8 weights on their integer
codes (a weight rounded to zero is zero) plus the baseline's biases and BN parameters (folded, not gone);
sizes are ``torch.save`` of the quantized state_dict; latency feeds channels_last input like the float
rows, the faster layout for the int8 convs (fbgemm computes in NHWC, see ``benchmarks/pt_quant_latency.py``).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.ao import nn as ao_nn
from torch.ao.quantization import (
    HistogramObserver,
    FusedMovingAvgObsFakeQuantize,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    QConfig,
    default_dynamic_qconfig,
    default_fused_per_channel_wt_fake_quant,
    default_per_channel_weight_observer,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
    quantize_dynamic,
)
from torch.ao.quantization.backend_config.x86 import get_x86_backend_config
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from shared import provenance, specs
from shared.measure import model_row
from shared.fixed_point import QFormat, tensor_format, qmn_format
from . import models
from .measure import artifact_sizes, split_accuracy
from .train import evaluate

BACKEND = "x86"
CPU = torch.device("cpu")
OBSERVERS = {"minmax": MinMaxObserver, "histogram": HistogramObserver}
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def activation_bits() -> int:
    """8 where the CPU has int8 dot products that accumulate in int32 (VNNI, AMX), else the x86 default's 7."""
    return 8 if any(f in provenance.cpu_info()["cpu_flags"] for f in VNNI_FLAGS) else 7


def activation_range() -> dict:
    return {"quant_min": 0, "quant_max": 2 ** activation_bits() - 1}


# --- shared pieces ---------------------------------------------------------------------------------------

def use_x86_engine() -> None:
    # Packed int8 weights are packed for the engine active at convert time and the quantized ops dispatch
    # on it at run time, so it is pinned before any int8 work (it is torch's default on x86 already).
    if torch.backends.quantized.engine != BACKEND:
        torch.backends.quantized.engine = BACKEND


def example_inputs() -> tuple[torch.Tensor]:
    # zeros, not randn: tracing needs only the shape, and the global RNG stays as the seeded run left it
    return (torch.zeros(1, specs.INPUT_CHANNELS, specs.INPUT_HW, specs.INPUT_HW),)


def as_inputs(batches):
    """Normalised NHWC float32 numpy batches (the shared calibration images) as channels_last NCHW tensors."""
    for x in batches:
        yield torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def float_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def int8_weight(module: nn.Module) -> torch.Tensor | None:
    """The qint8 weight of a quantized conv/linear (static, fused or dynamic), else None."""
    if isinstance(module, (ao_nn.quantized.Conv2d, ao_nn.quantized.Linear)):
        w = module.weight()
        return w if w.dtype == torch.qint8 else None
    return None


def int8_layers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: w for name, m in model.named_modules() if (w := int8_weight(m)) is not None}


def nonzero_params(model: nn.Module, baseline: nn.Module) -> int:
    """Nonzero parameters of ``model`` counted on the baseline's parameter list (same network).

    Conv/linear weights are read from ``model`` at the same module path (int8 on their integer codes);
    biases and BN parameters come from the baseline, since folding moves them rather than removes them.
    """
    layers = float_layers(baseline)
    count = sum(int(torch.count_nonzero(p)) for name, p in baseline.named_parameters()
                if name.rpartition(".")[0] not in layers or not name.endswith("weight"))
    for name in layers:
        module = model.get_submodule(name)
        w = int8_weight(module)
        count += int(torch.count_nonzero(w.int_repr() if w is not None else module.weight))
    return count


def metrics(run_model: nn.Module, baseline: nn.Module, ctx, *, saved_model: nn.Module | None = None,
            params_nonzero: int | None = None) -> dict:
    """The shared row keys for a model that is not a plain float ``models.build`` network.

    ``run_model`` is evaluated and timed; ``saved_model`` (default: the same) is what torch.save stores.
    """
    preset = ctx.preset
    run_model = run_model.to(CPU).eval()  # quantized GraphModules have no parameters to infer a device from
    nonzero = nonzero_params(run_model, baseline) if params_nonzero is None else params_nonzero
    bs = preset.recipe.eval_batch_size
    return model_row(test_acc=split_accuracy(run_model, ctx.dataset.test, bs, device=CPU),
                     val_acc=split_accuracy(run_model, ctx.dataset.val, bs, device=CPU),
                     plan=baseline.plan, params_total=models.count_params(baseline), params_nonzero=nonzero,
                     sizes=artifact_sizes(saved_model if saved_model is not None else run_model, preset.measure),
                     widths=baseline.widths)


# --- int8 ------------------------------------------------------------------------------------------------

def quantize_dynamic_linear(model: nn.Module) -> nn.Module:
    """Dynamic int8 (weights int8, activations quantized per batch at run time); PyTorch does Linear only."""
    use_x86_engine()
    model = copy.deepcopy(model).to(CPU).eval()
    return quantize_dynamic(model, {nn.Linear: default_dynamic_qconfig}, dtype=torch.qint8)


def static_qconfig_mapping(observer: str):
    if observer not in OBSERVERS:
        raise ValueError(f"unknown observer {observer!r}: choose from {', '.join(OBSERVERS)}")
    activation = OBSERVERS[observer].with_args(dtype=torch.quint8, qscheme=torch.per_tensor_affine,
                                               **activation_range())
    qconfig = QConfig(activation=activation, weight=default_per_channel_weight_observer)
    return get_default_qconfig_mapping(BACKEND).set_global(qconfig)


def quantize_static(model: nn.Module, observer: str, batches) -> torch.fx.GraphModule:
    """Post-training static int8: fuse conv+bn(+relu), observe ``batches``, convert to int8 modules."""
    use_x86_engine()
    model = copy.deepcopy(model).to(CPU).eval()
    backend = get_x86_backend_config()
    prepared = prepare_fx(model, static_qconfig_mapping(observer), example_inputs(), backend_config=backend)
    with torch.no_grad():
        for x in batches:
            prepared(x)
    return convert_fx(prepared, backend_config=backend)


# What QAT does with BatchNorm in this toolchain, recorded in the QAT rows.
QAT_BN_FOLDING = ("folded during training: FX's ConvBn(ReLU) modules fake-quantize the BN-folded weight "
                  "(Jacob et al. 2018, batch statistics while training), converted with BN folded for good")


def qat_qconfig_mapping():
    """x86 QAT defaults (per-channel int8 weights, moving-average activation ranges) at ``activation_bits``."""
    activation = FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, dtype=torch.quint8,
                                                         qscheme=torch.per_tensor_affine, reduce_range=False,
                                                         **activation_range())
    qconfig = QConfig(activation=activation, weight=default_fused_per_channel_wt_fake_quant)
    return get_default_qat_qconfig_mapping(BACKEND).set_global(qconfig)


def prepare_qat(model: nn.Module) -> torch.fx.GraphModule:
    """Fake-quantized copy for QAT, BN kept in training mode and folded on the fly (ConvBn modules), as
    convert_fx will fold it for good."""
    use_x86_engine()
    model = copy.deepcopy(model).to(CPU).train()
    return prepare_qat_fx(model, qat_qconfig_mapping(), example_inputs(), backend_config=get_x86_backend_config())


@torch.no_grad()
def calibrate_qat(prepared: torch.fx.GraphModule, batches) -> None:
    """Initial activation ranges from the calibration images: one float forward (fake quantization off,
    eval mode, so BN uses its running statistics) over all of them as one batch, whose min/max is each
    moving-average observer's first observation; QAT then starts from these ranges, as the Keras suite does."""
    x = torch.cat(list(batches))
    prepared.eval()
    prepared.apply(torch.ao.quantization.disable_fake_quant)
    prepared.apply(torch.ao.quantization.enable_observer)
    # An observer shared by two tensors (x86 shares adaptive_avg_pool2d's with its input) must keep the
    # range of the first, as a per-tensor min/max would: no averaging while calibrating.
    observers = [m.activation_post_process for m in prepared.modules()
                 if isinstance(m, FusedMovingAvgObsFakeQuantize)]
    constants = [obs.averaging_constant for obs in observers]
    for obs in observers:
        obs.averaging_constant = 0.0
    try:
        prepared(x)
    finally:
        for obs, c in zip(observers, constants):
            obs.averaging_constant = c
    prepared.apply(torch.ao.quantization.enable_fake_quant)
    prepared.train()


def qat_activation_ranges(prepared: torch.fx.GraphModule, plan) -> dict[str, tuple[float, float]]:
    """(min, max) of the activation fake-quantizers at the shared calibration points: "input", every conv's
    output (after its BN and ReLU, fused by FX), every residual block's output (after add + ReLU)."""
    convs = {c.name for c in specs.convs_of(plan)}
    blocks = iter(b.name for b in getattr(plan, "blocks", ()))
    out = {}
    for node in prepared.graph.nodes:
        if node.op != "call_module" or "activation_post_process" not in str(node.target):
            continue
        src, name = node.args[0], None
        if src.op == "placeholder":
            name = "input"
        elif src.op == "call_module" and src.target in convs:
            name = src.target
        elif src.op == "call_function" and src.target is torch.nn.functional.relu:
            name = next(blocks, None)
        if name is not None:
            observer = prepared.get_submodule(node.target).activation_post_process
            out[name] = (float(observer.min_val), float(observer.max_val))
    return out


def convert_qat(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    use_x86_engine()
    return convert_fx(prepared.to(CPU).eval(), backend_config=get_x86_backend_config())


# --- bf16 ------------------------------------------------------------------------------------------------

class Autocast(nn.Module):
    """Runs a float model under CPU autocast; logits come back as fp32, like every other row's."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x):
        with torch.autocast("cpu", dtype=self.dtype):
            return self.model(x).float()


# --- fixed point (Qm.n), simulated -----------------------------------------------------------------------

def fake_fixed_point(x: torch.Tensor, fmt: QFormat) -> torch.Tensor:
    """``shared.fixed_point.fixed_point_round`` on a tensor (multiplying by a power of two is exact in float)."""
    lo, hi = fmt.code_range
    return torch.clamp(torch.round(x * 2.0**fmt.n), lo, hi) * 2.0**-fmt.n


class FixedPointInput:
    """Forward pre-hook: the layer's input activation in its Qm.n format."""

    def __init__(self, fmt: QFormat):
        self.fmt = fmt

    def __call__(self, module, args):
        return (fake_fixed_point(args[0], self.fmt), *args[1:])


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BN of the spec into its conv/linear (fixed-point hardware has no separate BN)."""
    pairs = [(c.name, c.bn_name) for c in specs.convs_of(model.plan)]
    pairs += [(fc.name, fc.bn_name) for fc in specs.linears_of(model.plan) if fc.bn_name]
    for layer_name, bn_name in pairs:
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        fuse = fuse_conv_bn_eval if isinstance(layer, nn.Conv2d) else fuse_linear_bn_eval
        model.set_submodule(layer_name, fuse(layer, bn))
        model.set_submodule(bn_name, nn.Identity())
    return model


@torch.no_grad()
def input_ranges(model: nn.Module, batches) -> dict[str, tuple[float, float]]:
    """(min, max) of the input of every conv/linear over the calibration batches."""
    ranges, handles = {}, []
    for name, layer in float_layers(model).items():
        def record(module, args, name=name):
            lo, hi = ranges.get(name, (np.inf, -np.inf))
            ranges[name] = (min(lo, float(args[0].min())), max(hi, float(args[0].max())))
        handles.append(layer.register_forward_pre_hook(record))
    try:
        for x in batches:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return ranges


@torch.no_grad()
def fixed_point_model(model: nn.Module, bits: int, batches) -> tuple[nn.Module, dict]:
    """BN-folded copy whose conv/linear weights (signed, per tensor) and inputs (per tensor, unsigned where
    never negative) are Qm.n at ``bits``.

    Biases stay float: fixed-point accumulators are wider than the operands (as int32 biases are in int8).
    Returns the model and the chosen formats {"weights": {layer: [m, n, signed]}, "activations": {...}}.
    """
    model = fold_batchnorm(copy.deepcopy(model).to(CPU).eval())
    ranges = input_ranges(model, batches)
    formats = {"weights": {}, "activations": {}}
    for name, layer in float_layers(model).items():
        fmt = qmn_format(float(layer.weight.abs().max()), bits)
        layer.weight.copy_(fake_fixed_point(layer.weight, fmt))
        formats["weights"][name] = fmt.as_list()
        fmt = tensor_format(*ranges[name], bits)
        layer.register_forward_pre_hook(FixedPointInput(fmt))
        formats["activations"][name] = fmt.as_list()
    return model, formats
