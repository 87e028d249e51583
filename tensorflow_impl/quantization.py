"""Quantization and reduced precision in Keras: int8 dynamic, static (PTQ) and QAT on TFLite; float16; Qm.n.

The mirror of ``pytorch_impl.quantization``, same keys, same protocol (calibration on the validation split
only, normalised as in training; the same fine-tuning budget for QAT), each technique on Keras' own
deployment path: the TFLite converter, measured on the LiteRT runtime with XNNPACK (``tensorflow_impl.tflite``).

Where the two toolchains differ, the row says so rather than pretending to be the same thing:

- ``int8_dynamic``: TFLite's dynamic range quantizes conv *and* FC weights (PyTorch: Linear only), except
  weights under ``tflite.DYNAMIC_MIN_ELEMENTS`` values, which it keeps in float32; the extras count both.
- ``int8_static``: the TFLite calibrator records min/max only. A "histogram" cell is still converted (with
  min/max) and carries ``observer_note``, so the report can show that the two observers are identical
  here. (The converter's experimental StableHLO quantizer has other calibration methods, but it converts
  from a SavedModel signature with a different quantization pipeline: not this one, so not used.)
- ``int8_qat``: tfmot's ``quantize_model`` (fake-quant wrappers, Conv+BN(+ReLU) patterns quantized after
  BN, as the converter folds them), fine-tuned with the common budget, converted to int8 with the
  learned ranges. Known gap: tfmot does not fold VGG's Dense -> BN -> ReLU (fc1), so that one FC stays
  float32 in the converted model (``int8_modules`` is 14 of 15 on VGG-16; ResNet-18 is all int8).
- ``bf16``: TFLite has no bfloat16 CPU path; the Keras row of this key is float16 TFLite, labelled in the row.
- ``fixed_point``: the same simulated Qm.n as PyTorch (BN folded, weights per tensor, inputs of every
  conv/dense fake-quantized with ranges calibrated on the validation split), run as a Keras model.
"""
from __future__ import annotations


import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from shared import specs
from shared.measure import model_row
from shared.fixed_point import QFormat, fixed_point_round, qmn_format, tensor_format
from . import models, tflite
from .measure import artifact_sizes, split_accuracy

OBSERVERS = ("minmax", "histogram")
HISTOGRAM_NOTE = "TFLite calibrates min/max only; histogram not available"
FLOAT16_NOTE = ("TFLite has no bfloat16 CPU kernels: float16 TFLite instead (float16 weights, dequantized "
                "once at load; XNNPACK computes in float32)")


# --- shared pieces ---------------------------------------------------------------------------------------

ACTIVATION_BITS = 8  # TFLite's int8 scheme: int8 activations (asymmetric), int8 per-channel weights


def int8_layers(content: bytes) -> list[tflite.WeightLayer]:
    return [layer for layer in tflite.weight_layers(content) if layer.weights.dtype == np.int8]


# --- int8 on TFLite --------------------------------------------------------------------------------------

def static_int8(model, observer: str, calibration) -> tuple[bytes, dict]:
    """Full-integer TFLite of ``model`` calibrated on ``calibration``; the flatbuffer and the row's facts."""
    if observer not in OBSERVERS:
        raise ValueError(f"unknown observer {observer!r}: choose from {', '.join(OBSERVERS)}")
    content = tflite.convert(model, "int8", representative=calibration)
    extra = {"observer_note": HISTOGRAM_NOTE} if observer == "histogram" else {}
    return content, {**extra, "int8_modules": len(int8_layers(content)), "backend": tflite.BACKEND,
                     "activation_bits": ACTIVATION_BITS}


def dynamic_int8(model) -> tuple[bytes, dict]:
    content = tflite.convert(model, "dynamic")
    layers, quantized = tflite.weight_layers(content), int8_layers(content)
    return content, {"quantized_layers": len(quantized),
                     "quantized_params": sum(layer.weights.size for layer in quantized),
                     "quantizable_params": sum(layer.weights.size for layer in layers),
                     "backend": tflite.BACKEND, "activation_bits": None}


def prepare_qat(model, calibration=None):
    """tfmot's default 8-bit QAT model (per-channel int8 weights, int8 activations, BN patterns handled),
    its activation ranges initialised from ``calibration`` (``calibrate_qat``) when given."""
    qat = tfmot.quantization.keras.quantize_model(model)
    qat.arch, qat.widths, qat.plan = model.arch, model.widths, model.plan  # cloning drops them
    if calibration is not None:
        calibrate_qat(model, qat, calibration)
    return qat


def _activation_quantizers(qat) -> dict[str, tuple]:
    """{float layer name: (min variable, max variable)} of every activation quantizer; "" is the input's."""
    out = {}
    for layer in qat.layers:
        names = {v.name.rsplit("/", 1)[-1].split(":")[0]: v for v in layer.weights}
        if type(layer).__name__ == "QuantizeLayer":  # the model input; its variables carry the layer's name
            out[""] = (names[f"{layer.name}_min"], names[f"{layer.name}_max"])
        elif "output_min" in names:
            out[layer.layer.name] = (names["output_min"], names["output_max"])
    return out


def calibrate_qat(model, qat, calibration) -> None:
    """Initial activation ranges: min/max of every quantized tensor over all calibration images, computed on
    the float model in inference mode (as the PyTorch suite's first observation), instead of tfmot's
    initial +-6 that its 0.999 moving average would take thousands of steps to leave."""
    batches = list(calibration)
    quantizers = _activation_quantizers(qat)
    names = [n for n in quantizers if n]
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    lo = {n: np.inf for n in quantizers}
    hi = {n: -np.inf for n in quantizers}
    for x in batches:
        lo[""], hi[""] = min(lo[""], float(np.min(x))), max(hi[""], float(np.max(x)))
        for n, value in zip(names, probe(x, training=False)):
            lo[n], hi[n] = min(lo[n], float(tf.reduce_min(value))), max(hi[n], float(tf.reduce_max(value)))
    for n, (vmin, vmax) in quantizers.items():
        vmin.assign(lo[n])
        vmax.assign(hi[n])


def qat_activation_ranges(qat) -> dict[str, tuple[float, float]]:
    """(min, max) of the activation quantizers at the shared calibration points: "input", every conv's
    output (after its BN, and its ReLU where there is one), every residual block's output."""
    convs = {c.name for c in specs.convs_of(qat.plan)}
    conv_of_bn = {c.bn_name: c.name for c in specs.convs_of(qat.plan)}
    blocks = {b.name for b in getattr(qat.plan, "blocks", ())}
    out = {}
    for name, (vmin, vmax) in _activation_quantizers(qat).items():
        base = name[: -len("_relu")] if name.endswith("_relu") else None
        point = ("input" if name == "" else base if base in convs or base in blocks else conv_of_bn.get(name))
        if point is not None:
            out[point] = (float(vmin.numpy()), float(vmax.numpy()))
    return out


# What QAT does with BatchNorm in this toolchain, recorded in the QAT rows.
QAT_BN_FOLDING = ("not folded during training: tfmot fake-quantizes the conv kernel and quantizes after BN "
                  "(and ReLU); the TFLite converter folds BN into the int8 kernels at conversion")


def convert_qat(qat) -> tuple[bytes, dict]:
    content = tflite.convert(qat, "int8")  # no representative data: the trained ranges are used
    return content, {"int8_modules": len(int8_layers(content)), "backend": tflite.BACKEND,
                     "activation_bits": ACTIVATION_BITS, "bn_folding": QAT_BN_FOLDING}


# --- float16 (the Keras row of "bf16") -------------------------------------------------------------------

def float16(model) -> tuple[bytes, dict]:
    return tflite.convert(model, "fp16"), {"autocast_dtype": "float16 (TFLite)", "note": FLOAT16_NOTE,
                                           "backend": tflite.BACKEND}


# --- fixed point (Qm.n), simulated -----------------------------------------------------------------------

def fake_fixed_point(x, fmt: QFormat):
    """``fixed_point_round`` on a tensor: tf.round also rounds ties to even; powers of two scale exactly."""
    lo, hi = fmt.code_range
    return tf.clip_by_value(tf.round(x * 2.0**fmt.n), float(lo), float(hi)) * 2.0**-fmt.n


class _FixedPointInput:
    """Mixin: the layer's input activation in Qm.n (``input_n`` fractional bits, ``bits`` in all, signed
    or not)."""

    def __init__(self, *args, input_n: int = 0, bits: int = 8, input_signed: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.input_n, self.bits, self.input_signed = int(input_n), int(bits), bool(input_signed)

    def call(self, inputs):
        return super().call(fake_fixed_point(inputs, QFormat(self.bits, self.input_n, self.input_signed)))

    def get_config(self):  # clone_model and .keras saving (artifact_sizes) rebuild the layer from it
        return {**super().get_config(), "input_n": self.input_n, "bits": self.bits,
                "input_signed": self.input_signed}


@keras.saving.register_keras_serializable(package="tensorflow_impl")
class FixedPointConv2D(_FixedPointInput, keras.layers.Conv2D):
    pass


@keras.saving.register_keras_serializable(package="tensorflow_impl")
class FixedPointDense(_FixedPointInput, keras.layers.Dense):
    pass


def weight_layer_names(plan) -> list[tuple[str, str | None]]:
    """(conv/dense name, its BN name or None) for every layer of the spec."""
    return ([(c.name, c.bn_name) for c in specs.convs_of(plan)]
            + [(fc.name, fc.bn_name) for fc in specs.linears_of(plan)])


def folded_weights(model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{layer: (kernel, bias)} with every BN of the spec folded into its conv/dense (inference statistics)."""
    out = {}
    for name, bn_name in weight_layer_names(model.plan):
        layer = model.get_layer(name)
        kernel = layer.kernel.numpy()
        bias = layer.bias.numpy() if layer.use_bias else np.zeros(kernel.shape[-1], np.float32)
        if bn_name:
            bn = model.get_layer(bn_name)
            scale = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
            kernel = kernel * scale  # the output channel is the kernel's last axis (HWIO / in-out)
            bias = (bias - bn.moving_mean.numpy()) * scale + bn.beta.numpy()
        out[name] = (kernel.astype(np.float32), bias.astype(np.float32))
    return out


def fold_batchnorm(model, formats: dict | None = None):
    """A copy without BN (fixed-point hardware has none): conv/dense carry the folded kernel and a bias,
    each BN becomes a pass-through. With ``formats`` ({layer: QFormat of its input}) conv/dense become their
    fixed-point-input versions; their kernels are set by the caller."""
    folded = folded_weights(model)
    bn_names = {bn for _, bn in weight_layer_names(model.plan) if bn}

    def clone(layer):
        config = layer.get_config()
        if layer.name in bn_names:
            return keras.layers.Activation("linear", name=layer.name)
        if layer.name in folded:
            config.update(use_bias=True, kernel_regularizer=None)
            if formats is None:
                return layer.__class__.from_config(config)
            cls = FixedPointConv2D if isinstance(layer, keras.layers.Conv2D) else FixedPointDense
            fmt = formats[layer.name]
            return cls.from_config({**config, "input_n": fmt.n, "bits": fmt.bits, "input_signed": fmt.signed})
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    for name, (kernel, bias) in folded.items():
        copy.get_layer(name).set_weights([kernel, bias])
    copy.arch, copy.widths, copy.plan = model.arch, model.widths, model.plan
    return copy


def input_ranges(model, batches) -> dict[str, tuple[float, float]]:
    """(min, max) of the input of every conv/dense of the spec over the calibration batches."""
    names = [name for name, _ in weight_layer_names(model.plan)]
    probe = keras.Model(model.inputs, [model.get_layer(name).input for name in names])
    ranges = {name: (np.inf, -np.inf) for name in names}
    for x in batches:
        for name, value in zip(names, probe(x, training=False)):
            lo, hi = ranges[name]
            ranges[name] = (min(lo, float(tf.reduce_min(value))), max(hi, float(tf.reduce_max(value))))
    return ranges


def fixed_point_model(model, bits: int, batches):
    """BN-folded copy whose conv/dense weights (signed, per tensor) and inputs (per tensor, unsigned where
    never negative) are Qm.n at ``bits``.

    Biases stay float: fixed-point accumulators are wider than the operands (as int32 biases are in int8).
    Returns the model and the chosen formats {"weights": {layer: [m, n, signed]}, "activations": {...}}.
    """
    ranges = input_ranges(fold_batchnorm(model), batches)  # calibrated on the folded float network
    activations = {name: tensor_format(lo, hi, bits) for name, (lo, hi) in ranges.items()}
    fixed = fold_batchnorm(model, activations)
    formats = {"weights": {}, "activations": {name: fmt.as_list() for name, fmt in activations.items()}}
    for name in ranges:
        layer = fixed.get_layer(name)
        kernel, bias = layer.get_weights()
        fmt = qmn_format(float(np.abs(kernel).max()), bits)
        layer.set_weights([fixed_point_round(kernel, fmt).astype(np.float32), bias])
        formats["weights"][name] = fmt.as_list()
    return fixed, formats


def keras_metrics(run_model, baseline, ctx, *, params_nonzero: int, **extra) -> dict:
    """The shared row keys for a Keras model that is not a plain ``models.build`` network: counts from the
    baseline (same network), accuracy and size from ``run_model``."""
    preset, bs = ctx.preset, ctx.preset.recipe.eval_batch_size
    row = model_row(test_acc=split_accuracy(run_model, ctx.dataset.test, bs),
                    val_acc=split_accuracy(run_model, ctx.dataset.val, bs), plan=baseline.plan, widths=baseline.widths,
                    params_total=models.count_params(baseline), params_nonzero=params_nonzero,
                    sizes=artifact_sizes(run_model, preset.measure))
    return {**row, **extra}
