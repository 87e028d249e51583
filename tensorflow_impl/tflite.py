"""TFLite conversion of Keras models and their measurement on the LiteRT runtime.

Keras' deployment path for reduced precision is the TFLite converter; what runs the converted flatbuffer
is LiteRT (``ai_edge_litert.interpreter.Interpreter``), the maintained runtime that replaces
``tf.lite.Interpreter`` (deprecated in TensorFlow). The interpreter applies its default delegate, XNNPACK,
with ``num_threads`` = the protocol's thread count, so every TFLite row runs on the same CPU backend.

Conversion modes (``convert``):

- ``fp32``: plain float32 flatbuffer (the reference for sizes and for debugging quantization errors).
- ``dynamic``: dynamic-range quantization (``Optimize.DEFAULT``, no representative data): int8 weights,
  float activations (quantized per batch inside the hybrid kernels). The converter leaves weights with
  fewer than ``DYNAMIC_MIN_ELEMENTS`` values in float32 (its default threshold: too small to matter).
- ``int8``: full-integer int8 (``TFLITE_BUILTINS_INT8``, int8 input and output). Activation ranges come
  from the representative data (min/max: the TFLite calibrator records nothing else), or, for a model
  trained with tfmot's quantization-aware wrappers, from the ranges learned in training (no data needed;
  the converter then refuses the int8-only op set, so it is left open and the tests check the result).
- ``fp16``: float16 weights (``supported_types=[tf.float16]``); the CPU kernels compute in float32 after
  dequantizing the constant weights once, so it halves the file, not the arithmetic.

Measured rows use the keys of ``shared.measure.model_row``. ``params_total`` and ``macs`` are the
baseline's (same network); ``params_nonzero`` counts the stored conv/FC weight values of the flatbuffer
(int8 on their integer codes, so a weight rounded to zero is zero) plus the baseline's biases and BN
parameters (folded into the ops, not removed), as the PyTorch quantized rows count them; sizes are the
.tflite file and its gzip.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

from shared.console import quiet_native
from shared.measure import MeasureProtocol, file_sizes, model_row
from . import models
from .train import normalise

MODES = ("fp32", "dynamic", "int8", "fp16")
BACKEND = "tflite/xnnpack"
DYNAMIC_MIN_ELEMENTS = 1024  # the converter's default: smaller weights stay float32 in dynamic-range mode
WEIGHT_OPS = {schema.BuiltinOperator.CONV_2D: "CONV_2D",
              schema.BuiltinOperator.DEPTHWISE_CONV_2D: "DEPTHWISE_CONV_2D",
              schema.BuiltinOperator.FULLY_CONNECTED: "FULLY_CONNECTED"}
DTYPES = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16,
          schema.TensorType.INT32: np.int32, schema.TensorType.UINT8: np.uint8,
          schema.TensorType.INT64: np.int64, schema.TensorType.INT16: np.int16,
          schema.TensorType.INT8: np.int8, schema.TensorType.FLOAT64: np.float64}


# --- conversion ------------------------------------------------------------------------------------------

def representative_dataset(batches):
    """The converter's calibration callable: one image at a time (the converted input has batch 1)."""
    def generate():
        for batch in batches:
            for image in np.asarray(batch, np.float32):
                yield [image[None]]

    return generate


def convert(model, mode: str, representative=None) -> bytes:
    """The TFLite flatbuffer of a Keras model in ``mode`` (see the module docstring).

    ``representative``: iterable of normalised float32 NHWC batches, required by ``int8`` unless the model
    was trained with tfmot's quantization wrappers (then the converter uses the trained ranges).
    """
    if mode not in MODES:
        raise ValueError(f"unknown TFLite mode {mode!r}: choose from {', '.join(MODES)}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        if representative is not None:
            converter.representative_dataset = representative_dataset(list(representative))
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # else a QAT model: the converter refuses TFLITE_BUILTINS_INT8 without representative data even
        # then (it checks before it sees the fake-quant ops), so int8-only is not enforced here; the QAT
        # tests check that every conv/FC op came out int8.
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with quiet_native():  # the converter prints its quantization settings from C++
        return converter.convert()


# --- reading the flatbuffer ------------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightLayer:
    """A conv/FC op of a flatbuffer: its stored weights and the activation types it consumes/produces."""

    op: str
    weights: np.ndarray  # as stored: int8 codes, float16 or float32 (behind a DEQUANTIZE if there is one)
    input_dtype: np.dtype
    output_dtype: np.dtype


def _buffer_values(content: bytes, model, tensor) -> np.ndarray | None:
    buf = model.Buffers(tensor.Buffer())
    data = buf.DataAsNumpy()
    if isinstance(data, int):  # empty inline data: either not a constant or stored past the flatbuffer
        if buf.Offset() <= 1:
            return None
        data = np.frombuffer(content, np.uint8, count=buf.Size(), offset=buf.Offset())
    shape = tensor.ShapeAsNumpy()
    return np.frombuffer(data.tobytes(), DTYPES[tensor.Type()]).reshape(shape if not isinstance(shape, int) else ())


def _builtin(model, op) -> int:
    code = model.OperatorCodes(op.OpcodeIndex())
    return max(code.BuiltinCode(), code.DeprecatedBuiltinCode())  # the deprecated field holds codes < 127


def weight_layers(content: bytes) -> list[WeightLayer]:
    """Every conv/FC op of the main subgraph, in graph order."""
    model = schema.Model.GetRootAs(content, 0)
    graph = model.Subgraphs(0)
    ops = [graph.Operators(i) for i in range(graph.OperatorsLength())]
    producer = {int(t): op for op in ops for t in op.OutputsAsNumpy()}
    out = []
    for op in ops:
        code = _builtin(model, op)
        if code not in WEIGHT_OPS:
            continue
        x, w = (int(i) for i in op.InputsAsNumpy()[:2])
        # float16 (and some int8) weights reach the op through a DEQUANTIZE of the stored constant
        source = producer.get(w)
        if source is not None and _builtin(model, source) == schema.BuiltinOperator.DEQUANTIZE:
            w = int(source.InputsAsNumpy()[0])
        weights = _buffer_values(content, model, graph.Tensors(w))
        if weights is None:
            raise ValueError(f"{WEIGHT_OPS[code]} op without constant weights (tensor {w})")
        out.append(WeightLayer(WEIGHT_OPS[code], weights, np.dtype(DTYPES[graph.Tensors(x).Type()]),
                               np.dtype(DTYPES[graph.Tensors(int(op.OutputsAsNumpy()[0])).Type()])))
    return out


def io_dtypes(content: bytes) -> tuple[np.dtype, np.dtype]:
    """(input dtype, output dtype) of the model."""
    graph = schema.Model.GetRootAs(content, 0).Subgraphs(0)
    return (np.dtype(DTYPES[graph.Tensors(int(graph.Inputs(0))).Type()]),
            np.dtype(DTYPES[graph.Tensors(int(graph.Outputs(0))).Type()]))


def non_weight_nonzero(baseline) -> int:
    """Nonzero parameters of the baseline other than conv/dense kernels (biases, BN gamma/beta)."""
    kernels = sum(int(np.count_nonzero(layer.kernel.numpy())) for layer in baseline.layers
                  if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)))
    return models.count_nonzero(baseline) - kernels


def params_nonzero(content: bytes, baseline) -> int:
    return sum(int(np.count_nonzero(layer.weights)) for layer in weight_layers(content)) + non_weight_nonzero(baseline)


# --- running on LiteRT -----------------------------------------------------------------------------------

class LiteModel:
    """A flatbuffer on the LiteRT interpreter (XNNPACK, fixed threads): float NHWC in, float logits out.

    int8 models get their input quantized and logits dequantized with the tensors' own scale/zero point.
    """

    def __init__(self, content: bytes, threads: int):
        with quiet_native():  # LiteRT prints "Created TensorFlow Lite XNNPACK delegate" per interpreter
            self.interpreter = Interpreter(model_content=content, num_threads=threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self.batch = None

    def resize(self, batch_size: int) -> None:
        if batch_size != self.batch:  # re-planning (and XNNPACK re-setup) only when the batch changes
            self.interpreter.resize_tensor_input(self.input["index"], [batch_size, *self.input["shape"][1:]])
            with quiet_native():  # XNNPACK's delegate announces itself when first applied
                self.interpreter.allocate_tensors()
            self.batch = batch_size

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """The input tensor for normalised float images: as is, or quantized for an int8 model."""
        if self.input["dtype"] == np.float32:
            return np.asarray(x, np.float32)
        scale, zero = self.input["quantization"]
        info = np.iinfo(self.input["dtype"])
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(self.input["dtype"])

    def run(self, prepared: np.ndarray) -> np.ndarray:
        """Raw output tensor for an already prepared input."""
        self.resize(len(prepared))
        self.interpreter.set_tensor(self.input["index"], prepared)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Float logits of normalised float images: input quantization and output dequantization included,
        which is also what the timing pass times (float in, float out, as PyTorch's int8 graph is called)."""
        out = self.run(self.prepare(x))
        details = self.interpreter.get_output_details()[0]
        if details["dtype"] == np.float32:
            return out.astype(np.float64)
        scale, zero = details["quantization"]
        return (out.astype(np.float64) - zero) * scale


def predict_logits(lite: LiteModel, x_uint8: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits for uint8 images, normalised as in training; the last batch is zero-padded to full size
    so the interpreter is planned once."""
    out = []
    for i in range(0, len(x_uint8), batch_size):
        chunk = x_uint8[i : i + batch_size]
        x = normalise(chunk).numpy()
        if len(chunk) < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - len(chunk), *x.shape[1:]), np.float32)])
        out.append(lite.logits(x)[: len(chunk)])
    return np.concatenate(out)


def accuracy(lite: LiteModel, split, batch_size: int) -> float:
    return float((predict_logits(lite, split.x, batch_size).argmax(1) == split.y).mean())


def artifact_sizes(content: bytes, protocol: MeasureProtocol) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(content)
        return file_sizes(path, protocol.gzip_level)


def measure(content: bytes, baseline, ctx, **extra) -> dict:
    """The row of a converted model: accuracy on LiteRT, counts from the baseline's spec (latency: the
    timing pass, against the fp32 flatbuffer of the baseline on the same runtime)."""
    preset, bs = ctx.preset, ctx.preset.recipe.eval_batch_size
    lite = LiteModel(content, preset.measure.threads)
    row = model_row(test_acc=accuracy(lite, ctx.dataset.test, bs),
                    val_acc=accuracy(lite, ctx.dataset.val, bs) if len(ctx.dataset.val) else None,
                    plan=baseline.plan, params_total=models.count_params(baseline),
                    params_nonzero=params_nonzero(content, baseline), sizes=artifact_sizes(content, preset.measure),
                    widths=baseline.widths)
    return {**row, **extra}
