"""Keras models to ONNX (``shared.onnx_runtime``) with tf2onnx: float networks from the Keras model,
full-integer models from their TFLite flatbuffer (a QDQ graph), each checked against its source runtime.

tf2onnx is the converter that works with the pinned TensorFlow 2.21 and tf_keras (its ``from_keras`` fails on
Keras 3 models, which this suite does not build). Its output takes NHWC, as the Keras model does.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from shared import onnx_runtime
from shared.artifacts import write_atomic
from . import tflite


def _tf2onnx():
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)  # it logs every rewrite at INFO
    return tf2onnx


def _exporter() -> str:
    return f"tf2onnx {_tf2onnx().__version__}, tensorflow {tf.__version__}"


def export(model, path: Path) -> dict:
    """Write the float Keras ``model`` as ``path``; return its sidecar entry (layout NHWC)."""
    probe = onnx_runtime.probe_batch(hw=int(model.input_shape[1]))
    spec = (tf.TensorSpec((None, *probe.shape[1:]), tf.float32, name="x"),)
    proto, _ = _tf2onnx().convert.from_keras(model, input_signature=spec, opset=onnx_runtime.OPSET)
    write_atomic(path, lambda tmp: tmp.write_bytes(proto.SerializeToString()))
    source = model(probe, training=False).numpy()
    return onnx_runtime.entry(path, "onnx_fp32", "fp32", "NHWC", _exporter(),
                              onnx_runtime.parity(path, "NHWC", source, probe))


def export_tflite(content: bytes, path: Path, form: str, precision: str) -> dict:
    """A TFLite flatbuffer (e.g. full int8) as ONNX; checked against LiteRT running the same flatbuffer."""
    with tempfile.TemporaryDirectory() as tmp:
        source_file = Path(tmp) / "model.tflite"
        source_file.write_bytes(content)
        proto, _ = _tf2onnx().convert.from_tflite(str(source_file), opset=onnx_runtime.OPSET)
    write_atomic(path, lambda tmp: tmp.write_bytes(proto.SerializeToString()))
    lite = tflite.LiteModel(content, 1)
    quantization = None
    if lite.input["dtype"] != np.float32:  # the graph keeps TFLite's integer input and output
        out = lite.interpreter.get_output_details()[0]
        quantization = {"input": [float(lite.input["quantization"][0]), int(lite.input["quantization"][1]),
                                  np.dtype(lite.input["dtype"]).name],
                        "output": [float(out["quantization"][0]), int(out["quantization"][1])]}
    probe = onnx_runtime.probe_batch(hw=int(lite.input["shape"][1]))
    source = np.asarray(lite.logits(probe))
    return onnx_runtime.entry(path, form, precision, "NHWC", _exporter() + " (from the .tflite)",
                              onnx_runtime.parity(path, "NHWC", source, probe, quantization), quantization)
