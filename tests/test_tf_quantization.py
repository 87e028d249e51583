"""Keras quantization techniques on the smoke preset: real int8/float16 TFLite tensors, LiteRT logits, Qm.n."""
from __future__ import annotations

import json

import numpy as np
import pytest

import tensorflow_impl  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from shared import specs  # noqa: E402
from shared.measure import METRIC_COLUMNS  # noqa: E402
from shared.runner import Cell  # noqa: E402
from tensorflow_impl import models, tflite  # noqa: E402
from tensorflow_impl import quantization as Q  # noqa: E402
from tensorflow_impl.common import load_baseline  # noqa: E402
from tensorflow_impl.train import predict_logits  # noqa: E402

ARCHS = ("vgg16", "resnet18")
ROW_KEYS = {k for k in METRIC_COLUMNS if not k.startswith("train_")} | {"widths"}
INT8, FP16, FP32 = np.dtype(np.int8), np.dtype(np.float16), np.dtype(np.float32)


def n_layers(arch: str) -> int:
    plan = specs.plan(arch, width=0.0625)
    return len(specs.convs_of(plan)) + len(specs.linears_of(plan))


def baseline(ctx, arch, technique="int8_static"):
    return load_baseline(ctx, Cell("keras", arch, technique, 0))


def val_batches(ctx, n):
    return Q.calibration_batches(ctx.dataset.val, n, ctx.preset.recipe.eval_batch_size)


# the int8_static cell each arch is checked on (vgg16: the smoke protocol's largest calibration size)
STATIC = {"vgg16": {"observer": "minmax", "calibration_images": 64},
          "resnet18": {"observer": "histogram", "calibration_images": 32}}


@pytest.fixture(scope="module")
def row(tf_smoke_ctx):
    """row(arch, technique, **settings): the technique's result row, computed once per module."""
    cache = {}

    def get(arch, technique, **settings):
        key = (arch, technique, tuple(sorted(settings.items())))
        if key not in cache:
            cache[key] = Q.REGISTRY[technique](tf_smoke_ctx, Cell("keras", arch, technique, 0, settings))
        return cache[key]

    return get


@pytest.fixture(scope="module")
def flatbuffer(tf_smoke_ctx, row):
    """flatbuffer(arch, technique, **settings): the .tflite its row measured (saved by the technique);
    conversions cost seconds each, so the tests inspect the rows' own models rather than convert again."""
    def get(arch, technique, **settings):
        row(arch, technique, **settings)
        cell = Cell("keras", arch, technique, 0, settings)
        return (tf_smoke_ctx.out_dir / "tflite" / f"{cell.id}.tflite").read_bytes()

    return get


@pytest.fixture(scope="module")
def fp32_resnet(tf_smoke_ctx):
    return tflite.convert(baseline(tf_smoke_ctx, "resnet18"), "fp32")


# --- TFLite measurement path -----------------------------------------------------------------------------

def test_fp32_tflite_on_litert_reproduces_keras_logits(tf_smoke_ctx, fp32_resnet):
    # the measurement path itself (normalisation, batching with a padded last batch, output read-back)
    ctx = tf_smoke_ctx
    model, test = baseline(ctx, "resnet18"), ctx.dataset.test
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
def test_static_int8_logits_agree_with_fp32_keras(tf_smoke_ctx, flatbuffer, arch):
    ctx = tf_smoke_ctx
    test = ctx.dataset.test
    fp32 = predict_logits(baseline(ctx, arch), test.x, 128)
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


def test_static_int8_row(row):
    arch = "resnet18"
    r = row(arch, "int8_static", **STATIC[arch])
    assert ROW_KEYS <= r.keys()
    assert (r["observer"], r["calibration_images"], r["backend"]) == ("histogram", 32, "tflite/xnnpack")
    assert r["observer_note"] == Q.HISTOGRAM_NOTE
    assert r["int8_modules"] == n_layers(arch)
    assert r["params_total"] == specs.count_params(specs.plan(arch, width=0.0625))
    assert r["macs"] == specs.count_macs(specs.plan(arch, width=0.0625))
    assert 0 < r["params_nonzero"] <= r["params_total"]
    assert abs(r["test_acc"] - r["fp32_test_acc"]) <= 0.1
    # the speedup reference: the same network as an fp32 flatbuffer, timed on the same runtime
    assert {f"fp32_tflite_latency_b{b}_ms_{s}" for b in (1, 64) for s in ("median", "p90")} <= r.keys()


def test_calibration_refuses_more_images_than_the_split_has(tf_smoke_ctx):
    with pytest.raises(ValueError, match="calibration needs"):
        next(val_batches(tf_smoke_ctx, len(tf_smoke_ctx.dataset.val) + 1))


def test_unknown_observer_is_refused(tf_smoke_ctx):
    with pytest.raises(ValueError, match="unknown observer"):
        Q.int8_static(tf_smoke_ctx, Cell("keras", "vgg16", "int8_static", 0, {"observer": "mse", "calibration_images": 32}))


# --- dynamic range ---------------------------------------------------------------------------------------

def test_dynamic_range_quantizes_weights_not_activations(flatbuffer, row):
    arch = "vgg16"
    content = flatbuffer(arch, "int8_dynamic")
    layers = tflite.weight_layers(content)
    assert len(layers) == n_layers(arch)
    for layer in layers:  # the converter's threshold: smaller weights stay float32
        assert layer.weights.dtype == (INT8 if layer.weights.size >= tflite.DYNAMIC_MIN_ELEMENTS else FP32)
        assert layer.input_dtype == FP32 and layer.output_dtype == FP32  # activations stay float
    assert tflite.io_dtypes(content) == (FP32, FP32)

    r = row(arch, "int8_dynamic")
    int8 = [layer for layer in layers if layer.weights.dtype == INT8]
    assert r["quantized_layers"] == len(int8) > 0
    assert r["quantized_params"] == sum(layer.weights.size for layer in int8)
    plan = specs.plan(arch, width=0.0625)
    assert r["quantizable_params"] == (sum(c.cout * c.cin * c.kernel**2 for c in specs.convs_of(plan))
                                       + sum(fc.cin * fc.cout for fc in specs.linears_of(plan)))
    assert r["backend"] == "tflite/xnnpack" and ROW_KEYS <= r.keys()


# --- QAT -------------------------------------------------------------------------------------------------

def test_qat_fine_tunes_and_converts_to_full_int8(row, flatbuffer):
    # ResNet-18: its graph (explicit padding, residual adds, projection shortcuts) is the harder one to
    # wrap and convert; VGG's graph is checked without training below.
    r = row("resnet18", "int8_qat")
    assert ROW_KEYS | {"finetune_history", "finetune_time_s", "int8_modules", "fp32_test_acc"} <= r.keys()
    assert r["int8_modules"] == n_layers("resnet18")
    assert len(r["finetune_history"]) == 1  # the smoke protocol's fine-tune budget: 1 epoch
    content = flatbuffer("resnet18", "int8_qat")
    layers = tflite.weight_layers(content)  # every op int8, though int8-only was not enforced
    assert all(layer.input_dtype == INT8 and layer.output_dtype == INT8 for layer in layers)
    assert tflite.io_dtypes(content) == (INT8, INT8)


@pytest.mark.slow  # ~15 s for a known limitation; the default run keeps the file short
def test_qat_graph_of_vgg_leaves_the_hidden_dense_float(tf_smoke_ctx):
    # tfmot wraps VGG's fc1 -> BN -> ReLU as separate layers (no Dense+BN fold), so the converter keeps
    # fc1 as a float FULLY_CONNECTED; every conv and the classifier come out int8. Pinned so a fix shows.
    qat = Q.prepare_qat(baseline(tf_smoke_ctx, "vgg16", "int8_qat"))
    for x in val_batches(tf_smoke_ctx, 64):  # training-mode passes: the activation ranges move off their init
        qat(x, training=True)
    layers = tflite.weight_layers(tflite.convert(qat, "int8"))
    assert len(layers) == n_layers("vgg16")
    assert [layer.op for layer in layers if layer.weights.dtype != INT8] == ["FULLY_CONNECTED"]
    assert layers[-2].weights.dtype == FP32 and layers[-1].weights.dtype == INT8  # fc1 float, fc2 int8


# --- float16 (the "bf16" key) ----------------------------------------------------------------------------

def test_float16_tensors_and_row(flatbuffer, row, fp32_resnet):
    content = flatbuffer("resnet18", "bf16")
    layers = tflite.weight_layers(content)
    assert len(layers) == n_layers("resnet18") and all(layer.weights.dtype == FP16 for layer in layers)
    assert tflite.io_dtypes(content) == (FP32, FP32)
    r = row("resnet18", "bf16")
    assert r["autocast_dtype"] == "float16 (TFLite)" and "bfloat16" in r["note"] and ROW_KEYS <= r.keys()
    assert r["size_bytes"] == len(content) < 0.75 * len(fp32_resnet)


# --- fixed point -----------------------------------------------------------------------------------------

def test_qmn_rule_golden_values():
    # the same golden values as tests/test_pt_quantization.py: the two suites share one rule
    assert Q.qmn_format(3.2, 8) == (2, 5)  # Q2.5: codes -128..127 times 1/32 cover [-4, 3.96875]
    assert Q.qmn_format(127 / 32, 8) == (2, 5)  # the largest value Q2.5 holds exactly
    assert Q.qmn_format(4.0, 8) == (3, 4)  # 4.0 > 127/32: one integer bit more
    assert Q.qmn_format(1.0, 4) == (1, 2)  # Q1.2: 7/4 >= 1 > 7/8
    assert Q.qmn_format(0.01, 8) == (-6, 13)  # tiny tensor: more fractional bits than bits
    assert Q.qmn_format(300.0, 8) == (9, -2)  # huge tensor: scale 4
    x = np.array([3.2, -5.0, 4.0, 0.05, 1.5 / 32, 0.5 / 32, -4.0])
    expected = np.array([102, -128, 127, 2, 2, 0, -128]) / 32  # ties to even, clamped to [-128, 127]/32
    np.testing.assert_array_equal(Q.fixed_point_round(x, 5, 8), expected)
    np.testing.assert_array_equal(Q.fake_fixed_point(tf.constant(x), 5, 8).numpy(), expected)


def test_tf_fake_quant_matches_numpy_rule():
    x = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 3
    for bits in (4, 6, 8):
        _, n = Q.qmn_format(float(np.abs(x).max()), bits)
        np.testing.assert_array_equal(Q.fake_fixed_point(tf.constant(x), n, bits).numpy(),
                                      Q.fixed_point_round(x, n, bits).astype(np.float32))


@pytest.mark.parametrize("arch", ARCHS)
def test_fixed_point_weights_lie_on_their_grid(tf_smoke_ctx, arch):
    base = baseline(tf_smoke_ctx, arch, "fixed_point")
    folded = Q.fold_batchnorm(base)  # folding alone keeps the network's function
    x = next(val_batches(tf_smoke_ctx, 64))
    np.testing.assert_allclose(folded(x).numpy(), base(x, training=False).numpy(), rtol=1e-3, atol=1e-3)

    model, formats = Q.fixed_point_model(base, 4, val_batches(tf_smoke_ctx, 64))
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert set(formats["weights"]) == set(formats["activations"]) and len(formats["weights"]) == n_layers(arch)
    for name, (m, n) in formats["weights"].items():
        codes = model.get_layer(name).kernel.numpy().astype(np.float64) * 2.0**n
        assert m + n + 1 == 4 and np.array_equal(codes, codes.round())
        assert -8 <= codes.min() and codes.max() <= 7
        assert sum(formats["activations"][name]) + 1 == 4
        assert model.get_layer(name).input_n == formats["activations"][name][1]


def test_fixed_point_rows(row):
    r8, r4 = row("vgg16", "fixed_point", bits=8), row("vgg16", "fixed_point", bits=4)
    assert r8["simulated"] is True and r8["bits"] == 8 and ROW_KEYS <= r8.keys()
    assert r8["calibration_images"] == 64  # the smoke protocol's largest calibration size
    assert abs(r8["test_acc"] - r8["fp32_test_acc"]) <= 0.05
    plan = specs.plan("vgg16", width=0.0625)
    weights = sum(c.cout * c.cin * c.kernel**2 for c in specs.convs_of(plan))
    weights += sum(fc.cin * fc.cout for fc in specs.linears_of(plan))
    assert (r8["fixed_point_weight_bytes"], r4["fixed_point_weight_bytes"]) == (weights, weights // 2)
    assert r8["params_total"] == specs.count_params(plan)


# --- every row -------------------------------------------------------------------------------------------

def test_every_row_is_json_serialisable(row):
    # the rows the tests above computed (cached): every technique of this module
    rows = [row("vgg16", "int8_dynamic"),
            row("vgg16", "int8_static", **STATIC["vgg16"]), row("resnet18", "int8_static", **STATIC["resnet18"]),
            row("resnet18", "int8_qat"), row("resnet18", "bf16"),
            row("vgg16", "fixed_point", bits=8), row("vgg16", "fixed_point", bits=4)]
    for r in rows:
        assert json.loads(json.dumps(r, allow_nan=False)) == r
        assert ROW_KEYS <= r.keys()
