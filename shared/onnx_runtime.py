"""ONNX Runtime: one runtime that runs both frameworks' models, written once for both suites.

Each suite exports its float models to ONNX (PyTorch: ``torch.onnx.export``; Keras: tf2onnx) beside its
other artifacts, and both suites' timing backends time them here, on ORT's CPU execution provider with the
protocol's threads (intra-op N, inter-op 1, sequential). So "PyTorch-exported vs Keras-exported on ORT"
compares the exporters' graphs on one runtime, and nothing else. ONNX needs no torch or TensorFlow: this
module imports neither.

The layout is each exporter's own and is stated in the sidecar: a PyTorch export takes NCHW, a Keras export
NHWC. ``make_input`` converts (untimed), so both are fed the same numbers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

RUNTIME = "onnxruntime"
OPSET = 18  # the lowest opset torch 2.14's exporter implements (it converts down with errors); tf2onnx 1.17 writes it too
PARITY_TOL = 1e-4  # max |logit difference| an fp32 export may show against its source framework


def session(path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # as TensorFlow's and PyTorch's: a second pool would oversubscribe 2 cores
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its graph-optimisation notices are not the user's business
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtRunner:
    """An ``.onnx`` artifact on ORT: normalised NHWC float32 in, float32 logits out.

    A graph with integer input and output (TFLite's full-int8 models, converted) gets its input quantized
    and its logits dequantized inside the timed call, with the scales its ``quantization`` names, as LiteRT
    and PyTorch's int8 graphs are called: float in, float out."""

    def __init__(self, path, threads: int, layout: str, quantization: dict | None = None):
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"unknown ONNX input layout {layout!r}: NCHW (PyTorch exports) or NHWC (Keras)")
        self.session, self.layout, self.quantization = session(path, threads), layout, quantization
        self.input_name = self.session.get_inputs()[0].name

    def make_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.layout == "NCHW" else x)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        q = self.quantization
        if q is None:
            return self.session.run(None, {self.input_name: x})[0]
        (in_scale, in_zero, dtype), (out_scale, out_zero) = q["input"], q["output"]
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / in_scale) + in_zero, info.min, info.max).astype(dtype)
        out = self.session.run(None, {self.input_name: x})[0]
        return (out.astype(np.float32) - out_zero) * np.float32(out_scale)

    def logits(self, x_nhwc: np.ndarray) -> np.ndarray:
        return self(self.make_input(x_nhwc))


def runner(sidecar: dict, artifacts_dir, threads: int) -> OrtRunner:
    entry = sidecar["runtimes"][RUNTIME]
    return OrtRunner(Path(artifacts_dir) / entry["file"], threads, entry["layout"], entry.get("quantization"))


def probe_batch(n: int = 4, seed: int = 0, hw: int | None = None) -> np.ndarray:
    """Fixed normalised NHWC inputs on which an export is compared with its source framework; ``hw``: the
    network's input side (default CIFAR's 32; the ImageNet networks take 224)."""
    from .specs import INPUT_CHANNELS, INPUT_HW

    hw = hw or INPUT_HW
    shape = (n, hw, hw, INPUT_CHANNELS)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def parity(path, layout: str, source_logits: np.ndarray, probe: np.ndarray, quantization=None) -> float:
    """Max |ORT logits - source framework's logits| on ``probe``."""
    got = OrtRunner(path, 1, layout, quantization).logits(probe)
    return float(np.max(np.abs(got.astype(np.float64) - np.asarray(source_logits, np.float64))))


def entry(path: Path, form: str, precision: str, layout: str, exporter: str, max_abs: float,
          quantization: dict | None = None) -> dict:
    """The sidecar entry of an exported model; an fp32 export off by more than ``PARITY_TOL`` is refused."""
    if precision == "fp32" and not max_abs <= PARITY_TOL:
        raise ValueError(f"the ONNX export {path.name} ({exporter}) differs from its source model by "
                         f"{max_abs:.3g} in the logits (> {PARITY_TOL}): not timed")
    out = {"file": path.name, "form": form, "precision": precision, "layout": layout, "exporter": exporter,
           "parity_max_abs": max_abs}
    if quantization is not None:
        out["quantization"] = quantization
    return out


def exported(export) -> dict:
    """``export()``'s sidecar entry, or an untimed entry saying why the export failed: an exporter's gap
    costs the cell its ONNX row, never its result."""
    try:
        return export()
    except Exception as exc:  # noqa: BLE001 - exporters raise anything (conversion, shape inference, parity)
        return {"reason": f"ONNX export failed: {type(exc).__name__}: {str(exc)[:300]}"}


# --- ORT's own static int8 quantizer: a third int8 toolchain, on the runtime both frameworks share -------

ORT_QUANTIZER = "onnxruntime.quantization.quantize_static: QDQ, S8S8, per-channel weights, MinMax calibration"


def quantize_static(fp32_path, layout: str, calibration) -> bytes:
    """The int8 QDQ model of an fp32 export, calibrated on ``calibration`` (normalised NHWC float32 batches,
    the protocol's images). ``quant_pre_process`` first: ORT's docs ask for shape inference and its graph
    optimisations (BN folding) before quantizing."""
    import tempfile

    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static as ort_quantize_static)

    batches = [np.ascontiguousarray(np.asarray(b, np.float32).transpose(0, 3, 1, 2) if layout == "NCHW" else
                                    np.asarray(b, np.float32)) for b in calibration]
    name = session(fp32_path, 1).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {name: batch}

    with tempfile.TemporaryDirectory() as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(pre))
        ort_quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                            calibrate_method=CalibrationMethod.MinMax)
        return out.read_bytes()


def accuracy(path, layout: str, split, batch_size: int) -> float:
    """Top-1 accuracy of an ONNX model on a data split (uint8 NHWC images, normalised as in training)."""
    from . import data as data_mod

    mean = np.asarray(data_mod.MEAN, np.float32) * 255
    std = np.asarray(data_mod.STD, np.float32) * 255
    run = OrtRunner(path, 2, layout)
    correct = 0
    for i in range(0, len(split), batch_size):
        x = (split.x[i:i + batch_size].astype(np.float32) - mean) / std
        correct += int((run.logits(x).argmax(1) == split.y[i:i + batch_size]).sum())
    return correct / len(split)
