"""Quantization drivers (Jacob et al. 2018) and reduced precision: the protocol once, each toolchain's
quantizer behind the backend.

Calibration is always the first N images of the validation split, normalised as in training
(``common.calibration_batches``); QAT first calibrates its activation ranges on the same images, then
fine-tunes with fake quantization on the QAT budget; every row records what its toolchain did.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

from .. import onnx_runtime, specs
from ..backend import Quantized
from ..measure import file_sizes, model_row
from .common import accuracy, calibration_batches, finetune, finetune_extras, load_baseline, measured_quantized


def _calibration(ctx, n_images: int):
    return calibration_batches(ctx.dataset.val, n_images, ctx.preset.recipe.eval_batch_size)


def static_int8(backend, model, ctx, cell):
    observer, n_images = cell.settings["observer"], int(cell.settings["calibration_images"])
    quantized = backend.quantize_static(model, observer, _calibration(ctx, n_images))
    quantized.facts.update(observer=observer, calibration_images=n_images)
    return quantized


def int8_dynamic(backend, ctx, cell) -> dict:
    baseline = load_baseline(backend, ctx, cell)
    return measured_quantized(backend, backend.quantize_dynamic(baseline), baseline, ctx, cell)


def int8_static(backend, ctx, cell) -> dict:
    baseline = load_baseline(backend, ctx, cell)
    return measured_quantized(backend, static_int8(backend, baseline, ctx, cell), baseline, ctx, cell,
                              fp32_test_acc=accuracy(backend, baseline, ctx, "test"))


def int8_qat(backend, ctx, cell) -> dict:
    baseline = load_baseline(backend, ctx, cell)
    n_images = max(ctx.preset.protocol.calibration_sizes)
    prepared = backend.prepare_qat(baseline, _calibration(ctx, n_images))
    stats = finetune(backend, ctx, cell, prepared, ctx.preset.protocol.qat_budget, "int8_qat")
    quantized = backend.convert_qat(prepared)
    quantized.facts.update(calibration_images=n_images)
    return measured_quantized(backend, quantized, baseline, ctx, cell,
                              fp32_test_acc=accuracy(backend, baseline, ctx, "test"), **finetune_extras(stats))


def bf16(backend, ctx, cell) -> dict:
    """The framework's reduced-precision float path on this CPU (bf16 autocast; float16 TFLite in Keras)."""
    baseline = load_baseline(backend, ctx, cell)
    return measured_quantized(backend, backend.reduced_precision(baseline), baseline, ctx, cell)


def fixed_point(backend, ctx, cell) -> dict:
    """Simulated power-of-two Qm.n (``shared.fixed_point``): BN folded, weights per tensor (signed), every
    conv/linear input per tensor (unsigned where it is never negative), calibrated on the validation split."""
    baseline = load_baseline(backend, ctx, cell)
    bits = int(cell.settings["bits"])
    n_images = max(ctx.preset.protocol.calibration_sizes)
    quantized = backend.fixed_point(baseline, bits, _calibration(ctx, n_images))
    weights = quantized.facts.pop("quantized_weights")
    quantized.facts.update(bits=bits, simulated=True, calibration_images=n_images,
                           fixed_point_weight_bytes=math.ceil(weights * bits / 8))
    return measured_quantized(backend, quantized, baseline, ctx, cell,
                              fp32_test_acc=accuracy(backend, baseline, ctx, "test"))


def int8_ort(backend, ctx, cell) -> dict:
    """ONNX Runtime's static int8 quantizer on this framework's fp32 export: the same quantizer and runtime
    for both frameworks, so the two rows differ only in the exported graph (and, independently trained, the
    weights). Accuracy is measured on ORT itself."""
    ort = backend.onnx_toolchain  # shared.onnx_runtime in both suites (the estimate's dry run prices it)
    baseline = load_baseline(backend, ctx, cell)
    n_images = int(cell.settings["calibration_images"])
    bs = ctx.preset.recipe.eval_batch_size
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = backend.export_onnx(baseline, Path(tmp) / "fp32.onnx")
        layout = fp32["layout"]
        content = ort.quantize_static(Path(tmp) / fp32["file"], layout, _calibration(ctx, n_images))
        int8 = Path(tmp) / "int8.onnx"
        int8.write_bytes(content)
        test_acc = ort.accuracy(int8, layout, ctx.dataset.test, bs)
        val_acc = ort.accuracy(int8, layout, ctx.dataset.val, bs) if len(ctx.dataset.val) else None
        fp32_test_acc = ort.accuracy(Path(tmp) / fp32["file"], layout, ctx.dataset.test, bs)
        sizes = file_sizes(int8, ctx.preset.measure.gzip_level)
    n = specs.count_params(baseline.plan)
    ctx.measured_model = Quantized(content, {"layout": layout, "exporter": fp32["exporter"]}, form="onnx_int8")
    return {**model_row(test_acc=test_acc, val_acc=val_acc, params_total=n, params_nonzero=n, plan=baseline.plan,
                        sizes=sizes, widths=baseline.widths),
            "fp32_test_acc": fp32_test_acc, "runs_on": onnx_runtime.RUNTIME, "quantizer": onnx_runtime.ORT_QUANTIZER,
            "exporter": fp32["exporter"], "observer": cell.settings["observer"], "calibration_images": n_images,
            "activation_bits": 8}


REGISTRY = {"int8_dynamic": int8_dynamic, "int8_static": int8_static, "int8_qat": int8_qat, "bf16": bf16,
            "fixed_point": fixed_point, "int8_ort": int8_ort}
