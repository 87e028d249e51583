"""Quantization and reduced precision in PyTorch: int8 static (PTQ) and QAT on torchao's PT2E flow, int8
dynamic, bf16 autocast, simulated Qm.n. Every quantization API choice of the PyTorch suite lives here.

Which int8 path, and why. Static PTQ and QAT run torchao's PT2E flow, the path PyTorch maintains: the
network is captured with ``torch.export`` (a dynamic batch dimension, so one program serves every batch
size), ``prepare_pt2e`` / ``prepare_qat_pt2e`` insert observers chosen by ``X86InductorQuantizer``,
``convert_pt2e`` produces quantize/dequantize patterns around int8 weights, and ``torch.compile`` (Inductor,
freezing: ``compiled``) lowers those patterns to oneDNN's int8 convolutions and linears. So a PyTorch int8
row is measured, evaluated and timed compiled; its fp32 reference is timed compiled too, which keeps the
speedup compiled-for-compiled. The uncompiled converted graph only simulates int8 in float (reference
quantize/dequantize ops) and is never timed.

``torch.ao.quantization``'s FX path (``prepare_fx``/``convert_fx``) is gone from this suite: torch 2.14
deprecates it with removal announced. One deprecated API remains on purpose, ``quantize_dynamic``, for the
``int8_dynamic`` rows: eager dynamic int8 of the Linear layers (PyTorch has no dynamic int8 conv), the
technique a user of eager PyTorch reaches for and whose rows show that it gives a conv net nothing. Its
DeprecationWarning is left visible.

Conventions (Jacob et al. 2018): weights int8 symmetric per output channel, activations uint8 per tensor
(affine), BatchNorm folded into the preceding conv (PT2E folds it at convert time; QAT fake-quantizes the
BN-folded weight while training), calibration on the validation split only. Activation bits follow the
CPU (``activation_bits``): without VNNI the uint8 x int8 products saturate a 16-bit accumulator
(vpmaddubsw: 2 x 255 x 127 > 32767), so such CPUs get 7-bit activations (``reduce_range``, what
X86InductorQuantizer documents for "earlier CPUs"); with VNNI (vpdpbusd accumulates in int32) nothing
saturates, and activations use 8 bits, as TFLite's do. Every row records the bits it ran with.

What the x86 quantizer fuses differs from TFLite: oneDNN's int8 conv takes the residual add and the ReLU as
post-ops, so a ResNet block's second conv output is never quantized on its own (TFLite quantizes it, then
adds in int8). ``qat_activation_ranges`` therefore reports the points PT2E quantizes.

Measured rows keep the keys of the shared row builder. For an int8 model: ``params_total`` and ``macs``
are the baseline's (same network); ``params_nonzero`` counts int8 weights on their integer codes (a weight
rounded to zero is zero) plus the baseline's biases and BN parameters (folded, not gone); sizes are
``torch.save`` of the tensors the converted program computes with (``deployed_state``: int8 weights, their
scales, float biases).
"""
from __future__ import annotations

import collections
import copy
import dataclasses

import numpy as np
import torch
from torch import nn
from torch.ao import nn as ao_nn
from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
from torch.export import Dim
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval
from torchao.quantization import pt2e as ao
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)

from shared import provenance, specs
from shared.measure import model_row
from shared.fixed_point import QFormat, tensor_format, qmn_format
from . import models
from .compiled import Compiled
from .measure import artifact_sizes, split_accuracy

BACKEND = "x86 (torchao PT2E, X86InductorQuantizer; oneDNN int8 via Inductor)"
DYNAMIC_BACKEND = "x86 (torch.ao quantize_dynamic, eager; deprecated in torch 2.14)"
CPU = torch.device("cpu")
# X86InductorQuantizer's own observer settings (eps 2**-12), with the protocol's observer for activations
OBSERVERS = {"minmax": ao.MinMaxObserver, "histogram": ao.HistogramObserver}
OBSERVER_EPS = 2**-12
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
EXPORT_BATCH = 2  # torch.export specialises a dimension of size 1, so the example batch has two images


def activation_bits() -> int:
    """8 where the CPU has int8 dot products that accumulate in int32 (VNNI, AMX), else 7 (reduce_range)."""
    return 8 if any(f in provenance.cpu_info()["cpu_flags"] for f in VNNI_FLAGS) else 7


def activation_range() -> dict:
    return {"quant_min": 0, "quant_max": 2 ** activation_bits() - 1}


# --- shared pieces ---------------------------------------------------------------------------------------

def use_x86_engine() -> None:
    # quantize_dynamic's packed weights are packed for the engine active at convert time
    if torch.backends.quantized.engine != "x86":
        torch.backends.quantized.engine = "x86"


def example_inputs(batch: int = EXPORT_BATCH) -> tuple[torch.Tensor]:
    # zeros, not randn: tracing needs only the shape, and the global RNG stays as the seeded run left it
    return (torch.zeros(batch, specs.INPUT_CHANNELS, specs.INPUT_HW, specs.INPUT_HW),)


def as_inputs(batches):
    """Normalised NHWC float32 numpy batches (the shared calibration images) as channels_last NCHW tensors."""
    for x in batches:
        yield torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def float_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def int8_weight(module: nn.Module) -> torch.Tensor | None:
    """The qint8 weight of a dynamically quantized Linear, else None."""
    if isinstance(module, (ao_nn.quantized.Conv2d, ao_nn.quantized.Linear)):
        w = module.weight()
        return w if w.dtype == torch.qint8 else None
    return None


def int8_layers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Module path -> qint8 weight of every quantized module (``quantize_dynamic``'s Linears)."""
    return {name: w for name, m in model.named_modules() if (w := int8_weight(m)) is not None}


def pt2e_int8_weights(converted: torch.fx.GraphModule) -> list[torch.Tensor]:
    """The int8 weight tensors a converted PT2E program holds (``convert_pt2e`` folds each weight's
    quantize into an int8 constant), in graph order."""
    out = []
    for node in converted.graph.nodes:
        if node.op == "get_attr":
            t = getattr(converted, node.target, None)
            if isinstance(t, torch.Tensor) and t.dtype == torch.int8:
                out.append(t)
    return out


def deployed_state(converted: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    """The tensors a converted PT2E program computes with (int8 weights, their scales and zero points, float
    biases): what a deployment stores. Its ``state_dict`` also keeps the unused float weights (measured: 4.7 MB
    against the fp32 state's 3.8 MB for VGG-16 at width 0.25)."""
    out = {}
    for node in converted.graph.nodes:
        if node.op == "get_attr":
            obj = converted
            for part in node.target.split("."):
                obj = getattr(obj, part)
            if isinstance(obj, torch.Tensor):
                out[node.target] = obj.detach()
    return out


def nonzero_params(model: nn.Module, baseline: nn.Module) -> int:
    """Nonzero parameters of a dynamic-int8 ``model`` on the baseline's parameter list (same network):
    conv/linear weights from ``model`` at the same path (int8 on their integer codes), biases and BN
    parameters from the baseline."""
    layers = float_layers(baseline)
    count = _non_weight_nonzero(baseline, layers)
    for name in layers:
        module = model.get_submodule(name)
        w = int8_weight(module)
        count += int(torch.count_nonzero(w.int_repr() if w is not None else module.weight))
    return count


def _non_weight_nonzero(baseline: nn.Module, layers) -> int:
    return sum(int(torch.count_nonzero(p)) for name, p in baseline.named_parameters()
               if name.rpartition(".")[0] not in layers or not name.endswith("weight"))


def pt2e_nonzero_params(converted: torch.fx.GraphModule, baseline: nn.Module) -> int:
    """``nonzero_params`` for a converted PT2E program: its int8 weight codes plus the baseline's rest."""
    return (_non_weight_nonzero(baseline, float_layers(baseline))
            + sum(int(torch.count_nonzero(w)) for w in pt2e_int8_weights(converted)))


def metrics(run_model: nn.Module, baseline: nn.Module, ctx, *, saved_model: nn.Module | None = None,
            params_nonzero: int | None = None) -> dict:
    """The shared row keys for a model that is not a plain float ``models.build`` network.

    ``run_model`` is evaluated; ``saved_model`` (default: the same; a dict: those tensors) is what torch.save
    stores.
    """
    preset = ctx.preset
    run_model = run_model.to(CPU).eval()  # quantized programs have no parameters to infer a device from
    nonzero = nonzero_params(run_model, baseline) if params_nonzero is None else params_nonzero
    bs = preset.recipe.eval_batch_size
    return model_row(test_acc=split_accuracy(run_model, ctx.dataset.test, bs, device=CPU),
                     val_acc=split_accuracy(run_model, ctx.dataset.val, bs, device=CPU),
                     plan=baseline.plan, params_total=models.count_params(baseline), params_nonzero=nonzero,
                     sizes=artifact_sizes(saved_model if saved_model is not None else run_model, preset.measure),
                     widths=baseline.widths)


# --- int8 dynamic (eager, Linear only) ---------------------------------------------------------------------

def quantize_dynamic_linear(model: nn.Module) -> nn.Module:
    """Dynamic int8 (weights int8, activations quantized per batch at run time); PyTorch does Linear only."""
    use_x86_engine()
    model = copy.deepcopy(model).to(CPU).eval()
    return quantize_dynamic(model, {nn.Linear: default_dynamic_qconfig}, dtype=torch.qint8)


# --- int8 static and QAT: torchao PT2E -------------------------------------------------------------------

def export(model: nn.Module) -> torch.fx.GraphModule:
    """``model`` captured by torch.export with a dynamic batch dimension (eval or train mode as it is)."""
    batch = Dim("batch", min=1)
    return torch.export.export(model, example_inputs(), dynamic_shapes=({0: batch},)).module()


def quantizer(observer: str | None = None, *, qat: bool = False) -> X86InductorQuantizer:
    """X86InductorQuantizer at this CPU's activation bits; static PTQ observes activations with the
    protocol's ``observer`` (the x86 default is a histogram), QAT with moving-average fake quantizers."""
    config = get_default_x86_inductor_quantization_config(is_qat=qat, reduce_range=activation_bits() == 7)
    if not qat:
        if observer not in OBSERVERS:
            raise ValueError(f"unknown observer {observer!r}: choose from {', '.join(OBSERVERS)}")
        act = dataclasses.replace(config.input_activation,
                                  observer_or_fake_quant_ctr=OBSERVERS[observer].with_args(eps=OBSERVER_EPS))
        config = dataclasses.replace(config, input_activation=act, output_activation=act)
    return X86InductorQuantizer().set_global(config)


def prepare_static(model: nn.Module, observer: str) -> torch.fx.GraphModule:
    """The exported copy of ``model`` with the quantizer's observers inserted (uncalibrated)."""
    model = copy.deepcopy(model).to(CPU).eval().to(memory_format=torch.contiguous_format)
    return prepare_pt2e(export(model), quantizer(observer))


def convert(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Observed (or QAT-trained) program -> quantize/dequantize program with int8 weights, eval mode,
    ``.eval()``/``.train()`` allowed (exported programs refuse them otherwise)."""
    converted = convert_pt2e(prepared)
    ao.allow_exported_model_train_eval(converted)
    return converted


def quantize_static(model: nn.Module, observer: str, batches) -> tuple[torch.fx.GraphModule, dict]:
    """Post-training static int8: observe ``batches``, convert. Returns the converted program and the
    calibrated observers' state (with the float weights), from which ``rebuild_static`` reproduces it."""
    prepared = prepare_static(model, observer)
    with torch.no_grad():
        for x in batches:
            prepared(x.contiguous())
    state = {k: v.detach().clone() for k, v in prepared.state_dict().items()}
    return convert(prepared), state


def _load_state(prepared: torch.fx.GraphModule, state: dict) -> None:
    """Strict load of a saved prepared state. A plain dict (as ``torch.load`` returns it) has no module version
    metadata, and torchao's observers take a state without it for a version-1 one: they reset ``eps`` to
    float32's, so a tiny activation range got another scale than at calibration (measured: 2.2e-4 against the
    quantizer's 2**-12). The fresh program's own metadata says which version each module is."""
    versioned = collections.OrderedDict(state)
    versioned._metadata = prepared.state_dict()._metadata
    prepared.load_state_dict(versioned, strict=True)


def rebuild_static(model: nn.Module, observer: str, state: dict) -> torch.fx.GraphModule:
    """The converted program of ``quantize_static`` from its saved state, on a fresh network of the same
    widths (strict: a program of another shape fails here)."""
    prepared = prepare_static(model, observer)
    _load_state(prepared, state)
    return convert(prepared)


def compiled_int8(converted: torch.fx.GraphModule) -> Compiled:
    """The converted program lowered by Inductor: what runs oneDNN's int8 kernels (``compiled``)."""
    return Compiled(converted).warm_up(example_inputs(1)[0])


# What QAT does with BatchNorm in this toolchain, recorded in the QAT rows.
QAT_BN_FOLDING = ("folded during training: PT2E's QAT conv-BN pattern fake-quantizes the BN-folded weight "
                  "(Jacob et al. 2018, batch statistics while training), folded for good at convert")


def prepare_qat(model: nn.Module) -> torch.fx.GraphModule:
    """Fake-quantized copy for QAT (train mode, BN folded on the fly), whose ``.train()``/``.eval()`` swap
    BN between batch and running statistics as an eager module's would."""
    model = copy.deepcopy(model).to(CPU).train().to(memory_format=torch.contiguous_format)
    prepared = prepare_qat_pt2e(export(model), quantizer(qat=True))
    ao.allow_exported_model_train_eval(prepared)
    return prepared


def _fake_quantizers(prepared) -> list:
    return [m for m in prepared.modules() if isinstance(m, ao.FusedMovingAvgObsFakeQuantize)]


@torch.no_grad()
def calibrate_qat(prepared: torch.fx.GraphModule, batches) -> None:
    """Initial activation ranges from the calibration images: one float forward (fake quantization off,
    eval mode, so BN uses its running statistics) over all of them as one batch, whose min/max is each
    moving-average observer's first observation; QAT then starts from these ranges, as the Keras suite does."""
    x = torch.cat(list(batches)).contiguous()
    prepared.eval()
    prepared.apply(ao.disable_fake_quant)
    prepared.apply(ao.enable_observer)
    # An observer shared by two tensors must keep the range of the first, as a per-tensor min/max would:
    # no averaging while calibrating.
    observers = [m.activation_post_process for m in _fake_quantizers(prepared)]
    constants = [obs.averaging_constant for obs in observers]
    for obs in observers:
        obs.averaging_constant = 0.0
    try:
        prepared(x)
    finally:
        for obs, c in zip(observers, constants):
            obs.averaging_constant = c
    prepared.apply(ao.enable_fake_quant)
    prepared.train()


# ops whose output range is their input's (max pooling keeps the max and, post-ReLU, the 0); average pooling
# is not among them: a quantizer after it observes a narrower range than the tensor it pools
_PASS_THROUGH = {"getitem", "max_pool2d", "max_pool2d_with_indices", "flatten", "view", "reshape", "clone",
                 "contiguous"}


def _op(node) -> str:
    target = node.target
    name = getattr(target, "__name__", str(target))
    return name.split(".")[0].lstrip("_")


def _param_owner(node, index: int) -> str:
    """The module path of the parameter an op takes at ``args[index]`` ("layer1.0.bn1" for its weight).
    Parameter names survive every graph rewrite; ``nn_module_stack`` metadata does not (PT2E's train/eval
    swap of the BN pattern drops it)."""
    arg = node.args[index] if len(node.args) > index else None
    return arg.target.rpartition(".")[0] if getattr(arg, "op", None) == "get_attr" else ""


def qat_activation_ranges(prepared: torch.fx.GraphModule, plan) -> dict[str, tuple[float, float]]:
    """(min, max) of the activation fake-quantizers at the shared calibration points that PT2E quantizes:
    "input", every conv's output (after its BN, and after its ReLU where one follows), every residual
    block's output (after add + ReLU). Not among them: a ResNet block's conv2 output (the x86 int8 conv fuses
    BN, the residual add and the ReLU) and the last block's output, which X86InductorQuantizer quantizes only
    after the global average pool."""
    convs = specs.convs_of(plan)
    bn_to_conv = {c.bn_name: c.name for c in convs if c.bn_name}
    conv_names = {c.name for c in convs}
    blocks = {b.name for b in getattr(plan, "blocks", ())}
    fq = {name for name, m in prepared.named_modules() if isinstance(m, ao.FusedMovingAvgObsFakeQuantize)}

    def producer(node):
        while node.op == "call_module" and node.target in fq:
            node = node.args[0]
        return node

    pre, post = {}, {}
    for node in prepared.graph.nodes:
        if node.op != "call_module" or node.target not in fq:
            continue
        src = producer(node.args[0])
        observer = prepared.get_submodule(node.target).activation_post_process
        if observer.min_val.numel() != 1:
            continue  # a per-channel weight fake quantizer
        lo_hi = (float(observer.min_val), float(observer.max_val))
        if src.op == "placeholder":
            post.setdefault("input", lo_hi)
            continue
        if src.op != "call_function":
            continue  # weights (get_attr) and their scaling
        op, relu = _op(src), False
        while op in _PASS_THROUGH:
            src = producer(src.args[0]); op = _op(src)
        if op in ("relu", "relu_"):
            src, relu = producer(src.args[0]), True
            op = _op(src)
        if "batch_norm" in op:
            name = bn_to_conv.get(_param_owner(src, 1))
        elif op.startswith("conv"):
            name = _param_owner(src, 1) if _param_owner(src, 1) in conv_names else None
        elif op in ("add", "add_") and relu:
            # the block whose second BN feeds the add
            bn = producer(src.args[0])
            owner = bn_to_conv.get(_param_owner(bn, 1), "") if "batch_norm" in _op(bn) else ""
            name = next((b for b in blocks if owner.startswith(b + ".")), None)
        else:
            name = None
        if name is not None:
            (post if relu else pre).setdefault(name, lo_hi)
    return {**pre, **post}


def convert_qat(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    prepared = prepared.to(CPU)
    ao.move_exported_model_to_eval(prepared)
    return convert(prepared)


def rebuild_qat(model: nn.Module, state: dict) -> torch.fx.GraphModule:
    """The converted QAT program from the trained prepared state, on a fresh network of the same widths."""
    prepared = prepare_qat(model)
    _load_state(prepared, state)
    return convert_qat(prepared)


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
