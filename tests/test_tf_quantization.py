"""Keras quantization on the smoke preset: real int8/float16 TFLite tensors, LiteRT logits, the shared drivers' rows.

The Qm.n rule, both suites' fake quantizers and the fixed-point rows are in tests/test_fixed_point.py.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import tensorflow_impl  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tf_keras as keras  # noqa: E402

from shared import specs  # noqa: E402
from shared.drivers import REGISTRY  # noqa: E402
from shared.drivers.common import calibration_batches, load_baseline  # noqa: E402
from shared.measure import MODEL_COLUMNS  # noqa: E402
from shared.protocols import budget_figures, budget_steps  # noqa: E402
from shared.runner import Cell  # noqa: E402
from tensorflow_impl import models, tflite  # noqa: E402
from tensorflow_impl import quantization as Q  # noqa: E402
from tensorflow_impl.train import predict_logits  # noqa: E402

ARCHS = ("vgg16", "resnet18")
ROW_KEYS = set(MODEL_COLUMNS) | {"widths"}
INT8, FP16, FP32 = np.dtype(np.int8), np.dtype(np.float16), np.dtype(np.float32)


def n_layers(arch: str) -> int:
    plan = specs.plan(arch, width=0.0625)
    return len(specs.convs_of(plan)) + len(specs.linears_of(plan))


def baseline(backend, ctx, arch, technique="int8_static"):
    return load_baseline(backend, ctx, Cell("keras", arch, technique, 0))


def val_batches(ctx, n):
    return calibration_batches(ctx.dataset.val, n, ctx.preset.recipe.eval_batch_size)


# the int8_static cell each arch is checked on (vgg16: the smoke protocol's largest calibration size)
STATIC = {"vgg16": {"observer": "minmax", "calibration_images": 64},
          "resnet18": {"observer": "histogram", "calibration_images": 32}}


def pipeline_settings(protocol) -> dict:
    return {"sparsity": protocol.sparsities[0], "observer": "minmax", "calibration_images": max(protocol.calibration_sizes)}


@pytest.fixture(scope="module")
def row(tf_backend, tf_smoke_ctx):
    """row(arch, technique, **settings): the shared driver's row for the Keras backend, computed once."""
    cache = {}

    def get(arch, technique, **settings):
        key = (arch, technique, tuple(sorted(settings.items())))
        if key not in cache:
            cache[key] = REGISTRY[technique](tf_backend, tf_smoke_ctx, Cell("keras", arch, technique, 0, settings))
            MEASURED[key] = tf_smoke_ctx.measured_model
        return cache[key]

    return get


MEASURED = {}  # (arch, technique, settings) -> the model its driver measured (the runner's artifact)


@pytest.fixture(scope="module")
def flatbuffer(tf_smoke_ctx, row):
    """flatbuffer(arch, technique, **settings): the .tflite its row measured (what the runner saves as the
    cell's artifact); conversions cost seconds each, so the tests inspect the rows' own models rather than
    convert again."""
    def get(arch, technique, **settings):
        row(arch, technique, **settings)
        return MEASURED[(arch, technique, tuple(sorted(settings.items())))].model

    return get


@pytest.fixture(scope="module")
def fp32_resnet(tf_backend, tf_smoke_ctx):
    return tflite.convert(baseline(tf_backend, tf_smoke_ctx, "resnet18"), "fp32")


# --- TFLite measurement path -----------------------------------------------------------------------------

def test_fp32_tflite_on_litert_reproduces_keras_logits(tf_backend, tf_smoke_ctx, fp32_resnet):
    # the measurement path itself (normalisation, batching with a padded last batch, output read-back)
    ctx = tf_smoke_ctx
    model, test = baseline(tf_backend, ctx, "resnet18"), ctx.dataset.test
    lite = tflite.LiteModel(fp32_resnet, ctx.preset.measure.threads)
    got = tflite.predict_logits(lite, test.x, 100)  # 256 test images: the last batch is padded
    np.testing.assert_allclose(got, predict_logits(model, test.x, 128), rtol=1e-4, atol=1e-4)
    layers = tflite.weight_layers(fp32_resnet)
    assert len(layers) == n_layers("resnet18") and all(layer.weights.dtype == FP32 for layer in layers)
    assert tflite.io_dtypes(fp32_resnet) == (FP32, FP32)


# --- static int8 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_static_int8_is_full_integer(flatbuffer, arch):
    content = flatbuffer(arch, "int8_static", **STATIC[arch])
    layers = tflite.weight_layers(content)
    assert len(layers) == n_layers(arch) == {"vgg16": 15, "resnet18": 21}[arch]
    assert all(layer.weights.dtype == INT8 for layer in layers)
    assert all(layer.input_dtype == INT8 and layer.output_dtype == INT8 for layer in layers)
    assert tflite.io_dtypes(content) == (INT8, INT8)


@pytest.mark.parametrize("arch", ARCHS)
def test_static_int8_logits_agree_with_fp32_keras(tf_backend, tf_smoke_ctx, flatbuffer, arch):
    ctx = tf_smoke_ctx
    test = ctx.dataset.test
    fp32 = predict_logits(baseline(tf_backend, ctx, arch), test.x, 128)
    lite = tflite.LiteModel(flatbuffer(arch, "int8_static", **STATIC[arch]), ctx.preset.measure.threads)
    int8 = tflite.predict_logits(lite, test.x, 128)
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.9


def test_static_int8_file_is_under_0_3x_of_fp32():
    # At the smoke width (4-32 channels) per-channel scales, zero points and int32 biases weigh as much as
    # the int8 weights, so the 4x claim is checked at width 0.25 on an untrained model calibrated on random
    # data: the size depends on shapes, not on training.
    keras.utils.set_random_seed(0)
    model = models.build("vgg16", width=0.25)
    rep = [np.random.default_rng(0).standard_normal((8, 32, 32, 3)).astype(np.float32)]
    assert len(tflite.convert(model, "int8", rep)) <= 0.3 * len(tflite.convert(model, "fp32"))


@pytest.mark.parametrize("arch", ARCHS)
def test_static_int8_rows(row, arch):
    r = row(arch, "int8_static", **STATIC[arch])
    assert ROW_KEYS | {"fp32_test_acc"} <= r.keys()
    assert (r["observer"], r["calibration_images"], r["backend"]) == (*STATIC[arch].values(), "tflite/xnnpack")
    assert r["activation_bits"] == Q.ACTIVATION_BITS == 8  # TFLite's int8 scheme: int8 activations
    if arch == "resnet18":  # the histogram cell is converted with min/max, and says so
        assert r["observer_note"] == Q.HISTOGRAM_NOTE
    else:
        assert "observer_note" not in r
    assert r["int8_modules"] == n_layers(arch)
    assert r["params_total"] == specs.count_params(specs.plan(arch, width=0.0625))
    assert r["macs"] == specs.count_macs(specs.plan(arch, width=0.0625))
    assert 0 < r["params_nonzero"] <= r["params_total"]
    assert abs(r["test_acc"] - r["fp32_test_acc"]) <= 0.1
    # no latency in a training row: the timing pass times the artifact against the fp32 baseline flatbuffer
    assert not [k for k in r if "latency" in k]


def test_unknown_observer_is_refused(tf_backend, tf_smoke_ctx):
    cell = Cell("keras", "vgg16", "int8_static", 0, {"observer": "mse", "calibration_images": 32})
    with pytest.raises(ValueError, match="unknown observer 'mse'"):
        REGISTRY["int8_static"](tf_backend, tf_smoke_ctx, cell)


# --- dynamic range ---------------------------------------------------------------------------------------

def test_dynamic_range_quantizes_conv_and_fc_weights_not_activations(flatbuffer, row):
    arch = "vgg16"
    content = flatbuffer(arch, "int8_dynamic")
    layers = tflite.weight_layers(content)
    assert len(layers) == n_layers(arch)
    assert {layer.op for layer in layers} == {"CONV_2D", "FULLY_CONNECTED"}
    for layer in layers:  # the converter's threshold: smaller weights stay float32
        assert layer.weights.dtype == (INT8 if layer.weights.size >= tflite.DYNAMIC_MIN_ELEMENTS else FP32)
        assert layer.input_dtype == FP32 and layer.output_dtype == FP32  # activations stay float
    assert tflite.io_dtypes(content) == (FP32, FP32)

    r = row(arch, "int8_dynamic")
    int8 = [layer for layer in layers if layer.weights.dtype == INT8]
    assert {layer.op for layer in int8} == {"CONV_2D", "FULLY_CONNECTED"}  # unlike PyTorch: convs too
    assert r["quantized_layers"] == len(int8) > 0
    assert r["quantized_params"] == sum(layer.weights.size for layer in int8)
    plan = specs.plan(arch, width=0.0625)
    assert r["quantizable_params"] == (sum(c.cout * c.cin * c.kernel**2 for c in specs.convs_of(plan))
                                       + sum(fc.cin * fc.cout for fc in specs.linears_of(plan)))
    assert r["backend"] == "tflite/xnnpack" and ROW_KEYS <= r.keys()
    assert r["activation_bits"] is None  # activations are quantized per batch at run time


# --- QAT -------------------------------------------------------------------------------------------------

def test_qat_fine_tunes_on_its_budget_and_converts_to_full_int8(tf_smoke_ctx, row, flatbuffer):
    # ResNet-18: its graph (explicit padding, residual adds, projection shortcuts) is the harder one to
    # wrap and convert; VGG's graph is checked without training below.
    ctx = tf_smoke_ctx
    r = row("resnet18", "int8_qat")
    assert ROW_KEYS | {"finetune_history", "finetune_time_s", "int8_modules", "fp32_test_acc", "budget"} <= r.keys()
    assert r["int8_modules"] == n_layers("resnet18")
    assert (r["activation_bits"], r["backend"]) == (8, "tflite/xnnpack")
    assert r["calibration_images"] == max(ctx.preset.protocol.calibration_sizes)
    n_train = len(ctx.dataset.train)
    budget = ctx.preset.protocol.qat_budget
    assert r["budget"]["steps"] == budget_steps(ctx.preset.recipe, budget, n_train) == 8  # smoke: 1 epoch of 8
    assert r["budget"] == budget_figures(ctx.preset.recipe, budget, n_train)
    assert r["budget"]["schedule"] == "constant" and r["budget"]["peak_lr"] == pytest.approx(0.05 * 0.02)
    assert len(r["finetune_history"]) == 1  # the smoke protocol's QAT budget: 1 epoch
    content = flatbuffer("resnet18", "int8_qat")
    layers = tflite.weight_layers(content)  # every op int8, though int8-only was not enforced
    assert len(layers) == n_layers("resnet18") and all(layer.weights.dtype == INT8 for layer in layers)
    assert all(layer.input_dtype == INT8 and layer.output_dtype == INT8 for layer in layers)
    assert tflite.io_dtypes(content) == (INT8, INT8)


@pytest.mark.slow  # ~15 s for a known limitation; the default run keeps the file short
def test_qat_graph_of_vgg_leaves_the_hidden_dense_float(tf_backend, tf_smoke_ctx):
    # tfmot wraps VGG's fc1 -> BN -> ReLU as separate layers (no Dense+BN fold), so the converter keeps
    # fc1 as a float FULLY_CONNECTED; every conv and the classifier come out int8. Pinned so a fix shows.
    qat = tf_backend.prepare_qat(baseline(tf_backend, tf_smoke_ctx, "vgg16", "int8_qat"), val_batches(tf_smoke_ctx, 64))
    for x in val_batches(tf_smoke_ctx, 64):  # training-mode passes: the activation ranges move off their init
        qat(x, training=True)
    quantized = tf_backend.convert_qat(qat)
    layers = tflite.weight_layers(quantized.model)
    assert len(layers) == n_layers("vgg16")
    assert [layer.op for layer in layers if layer.weights.dtype != INT8] == ["FULLY_CONNECTED"]
    assert layers[-2].weights.dtype == FP32 and layers[-1].weights.dtype == INT8  # fc1 float, fc2 int8
    assert (quantized.facts["int8_modules"], quantized.facts["activation_bits"]) == (n_layers("vgg16") - 1, 8)


# --- float16 (the "bf16" key) ----------------------------------------------------------------------------

def test_float16_tensors_and_row(flatbuffer, row, fp32_resnet):
    content = flatbuffer("resnet18", "bf16")
    layers = tflite.weight_layers(content)
    assert len(layers) == n_layers("resnet18") and all(layer.weights.dtype == FP16 for layer in layers)
    assert tflite.io_dtypes(content) == (FP32, FP32)
    r = row("resnet18", "bf16")
    assert r["autocast_dtype"] == "float16 (TFLite)" and "bfloat16" in r["note"] and ROW_KEYS <= r.keys()
    assert r["note"] == Q.FLOAT16_NOTE and "activation_bits" not in r
    assert r["size_bytes"] == len(content) < 0.75 * len(fp32_resnet)


# --- pipeline --------------------------------------------------------------------------------------------

def test_prune_int8_pipeline_row_is_full_integer(tf_smoke_ctx, row, flatbuffer):
    ctx = tf_smoke_ctx
    p = ctx.preset.protocol
    r = row("vgg16", "pipeline_prune_int8", **pipeline_settings(p))
    assert ROW_KEYS <= r.keys() and not [k for k in r if "latency" in k]
    assert (r["observer"], r["calibration_images"], r["backend"]) == ("minmax", 64, "tflite/xnnpack")
    assert r["activation_bits"] == 8
    assert r["int8_modules"] == n_layers("vgg16")
    assert [s["stage"] for s in r["stages"]] == ["pruned_finetuned", "int8_static"]
    assert r["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert r["budget"] == budget_figures(ctx.preset.recipe, p.prune_budget, len(ctx.dataset.train))
    layers = tflite.weight_layers(flatbuffer("vgg16", "pipeline_prune_int8", **pipeline_settings(p)))
    assert len(layers) == n_layers("vgg16")
    assert all(layer.weights.dtype == INT8 and layer.input_dtype == INT8 for layer in layers)


# --- every row -------------------------------------------------------------------------------------------

def test_every_row_is_json_serialisable(tf_smoke_ctx, row):
    # the rows the tests above computed (cached): every quantization technique of this module
    rows = [row("vgg16", "int8_dynamic"),
            row("vgg16", "int8_static", **STATIC["vgg16"]), row("resnet18", "int8_static", **STATIC["resnet18"]),
            row("resnet18", "int8_qat"), row("resnet18", "bf16"),
            row("vgg16", "pipeline_prune_int8", **pipeline_settings(tf_smoke_ctx.preset.protocol))]
    for r in rows:
        assert json.loads(json.dumps(r, allow_nan=False)) == r
        assert ROW_KEYS <= r.keys()
