"""Keras artifacts (``shared.artifacts``): float models as ``.keras`` (loaded in safe mode) and, like every
Keras row, a ``.tflite`` flatbuffer; converted models as their ``.tflite``.

Forms: ``keras_fp32`` (a ``models.build`` network: ``.keras`` on TensorFlow, its fp32 flatbuffer on LiteRT),
``tflite_int8`` (full-integer, PTQ or QAT), ``tflite_dynamic`` (dynamic range), ``tflite_fp16`` (float16
weights) and ``simulated`` (BN-folded Qm.n fake quantization: weights only, not timed).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from shared import onnx_runtime
from shared.artifacts import write_atomic
from shared.backend import Quantized
from . import onnx_export, tflite

PRECISION = {"tflite_int8": "int8", "tflite_dynamic": "int8 weights, float activations (dynamic range)",
             "tflite_fp16": "fp16 weights", "simulated": "fixed point (simulated)"}


def _uncompiled_copy(model):
    # architecture and weights, no optimizer slots or regulariser state: what a user loads to run it
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def save(artifact, stem: Path) -> dict[str, dict]:
    if not isinstance(artifact, Quantized):  # a float Keras network
        keras_path, lite_path = stem.with_name(stem.name + ".keras"), stem.with_name(stem.name + ".tflite")
        write_atomic(keras_path, _uncompiled_copy(artifact).save)
        content = tflite.convert(artifact, "fp32")
        write_atomic(lite_path, lambda tmp: tmp.write_bytes(content))
        onnx_path = stem.with_name(stem.name + ".onnx")
        return {"tensorflow": {"file": keras_path.name, "form": "keras_fp32", "precision": "fp32"},
                "litert": {"file": lite_path.name, "form": "tflite_fp32", "precision": "fp32"},
                onnx_runtime.RUNTIME: onnx_runtime.exported(lambda: onnx_export.export(artifact, onnx_path))}
    form = artifact.form
    if form not in PRECISION:
        raise ValueError(f"unknown Keras artifact form {form!r}: one of {', '.join(PRECISION)}")
    if form == "simulated":
        path = stem.with_name(stem.name + ".weights.h5")
        write_atomic(path, artifact.model.save_weights)
        return {"none": {"file": path.name, "form": form, "precision": PRECISION[form],
                         "reason": "simulated fixed point: fake quantization in float32, no runtime executes Qm.n "
                                   "arithmetic, so its latency would mean nothing"}}
    path = stem.with_name(stem.name + ".tflite")
    write_atomic(path, lambda tmp: tmp.write_bytes(artifact.model))
    runtimes = {"litert": {"file": path.name, "form": form, "precision": PRECISION[form]}}
    if form == "tflite_int8":  # TFLite's int8 graph on ONNX Runtime: the quantizer without its runtime
        onnx_path = stem.with_name(stem.name + ".onnx")
        runtimes[onnx_runtime.RUNTIME] = onnx_runtime.exported(
            lambda: onnx_export.export_tflite(artifact.model, onnx_path, "onnx_from_tflite_int8", "int8"))
    return runtimes


class KerasRunner:
    """A ``.keras`` artifact through a traced tf.function; ``.numpy()`` waits for the result."""

    def __init__(self, path: Path):
        self.model = keras.models.load_model(path, compile=False, safe_mode=True)
        self.infer = tf.function(lambda x: self.model(x, training=False))

    def make_input(self, x: np.ndarray):
        return tf.constant(x)

    def __call__(self, x):
        return self.infer(x).numpy()


class LiteRunner:
    """A ``.tflite`` artifact on LiteRT, float input to float logits (int8 quantize/dequantize inside)."""

    def __init__(self, path: Path, threads: int):
        self.lite = tflite.LiteModel(Path(path).read_bytes(), threads)

    def make_input(self, x: np.ndarray):
        return np.asarray(x, np.float32)

    def __call__(self, x):
        return self.lite.logits(x)


def runner(sidecar: dict, runtime: str, artifacts_dir: Path, threads: int):
    if runtime == onnx_runtime.RUNTIME:
        return onnx_runtime.runner(sidecar, artifacts_dir, threads)
    entry = sidecar["runtimes"][runtime]
    path = Path(artifacts_dir) / entry["file"]
    if runtime == "tensorflow":
        return KerasRunner(path)
    if runtime == "litert":
        return LiteRunner(path, threads)
    raise ValueError(f"the Keras suite has no runtime {runtime!r}")
