"""Power-of-two fixed point (Qm.n), once for both suites: the shared rule's golden values (signed and unsigned),
each framework's fake quantizer against it, and the fixed_point rows and models of real smoke baselines.

Also the calibration images every quantizer and every fixed-point range is calibrated on.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from shared import data as data_mod, specs
from shared.drivers import REGISTRY
from shared.drivers.common import calibration_batches, load_baseline
from shared.fixed_point import QFormat, fixed_point_round, qmn_format, tensor_format
from shared.measure import MODEL_COLUMNS
from shared.runner import Cell

ARCHS = ("vgg16", "resnet18")
ROW_KEYS = set(MODEL_COLUMNS) | {"widths"}


# --- the framework side, behind one small adapter each -----------------------------------------------------

class Torch:
    name, backend_fixture, ctx_fixture = "pytorch", "pt_backend", "pt_smoke_ctx"

    @staticmethod
    def fake(x: np.ndarray, fmt: QFormat) -> np.ndarray:
        import torch
        from pytorch_impl.quantization import fake_fixed_point

        return fake_fixed_point(torch.from_numpy(x), fmt).numpy()

    @staticmethod
    def kernel(model, name: str) -> np.ndarray:
        return model.get_submodule(name).weight.detach().double().numpy()

    @staticmethod
    def input_format(model, name: str) -> QFormat:
        from pytorch_impl.quantization import FixedPointInput

        hooks = [h for h in model.get_submodule(name)._forward_pre_hooks.values() if isinstance(h, FixedPointInput)]
        assert len(hooks) == 1
        return hooks[0].fmt

    @staticmethod
    def has_batchnorm(model) -> bool:
        from torch import nn

        return any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.modules())

    @staticmethod
    def fold(model):
        from pytorch_impl.quantization import fold_batchnorm

        return fold_batchnorm(copy.deepcopy(model).eval())

    @staticmethod
    def logits(model, x: np.ndarray) -> np.ndarray:
        import torch
        from pytorch_impl.quantization import as_inputs

        with torch.no_grad():
            return model.eval()(next(as_inputs([x]))).numpy()


class Keras:
    name, backend_fixture, ctx_fixture = "keras", "tf_backend", "tf_smoke_ctx"

    @staticmethod
    def fake(x: np.ndarray, fmt: QFormat) -> np.ndarray:
        import tensorflow_impl  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
        import tensorflow as tf
        from tensorflow_impl.quantization import fake_fixed_point

        return fake_fixed_point(tf.constant(x), fmt).numpy()

    @staticmethod
    def kernel(model, name: str) -> np.ndarray:
        return model.get_layer(name).kernel.numpy().astype(np.float64)

    @staticmethod
    def input_format(model, name: str) -> QFormat:
        from tensorflow_impl.quantization import FixedPointConv2D, FixedPointDense

        layer = model.get_layer(name)
        assert isinstance(layer, (FixedPointConv2D, FixedPointDense))
        return QFormat(layer.bits, layer.input_n, layer.input_signed)

    @staticmethod
    def has_batchnorm(model) -> bool:
        import tf_keras as keras

        return any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)

    @staticmethod
    def fold(model):
        from tensorflow_impl.quantization import fold_batchnorm

        return fold_batchnorm(model)

    @staticmethod
    def logits(model, x: np.ndarray) -> np.ndarray:
        return model(x, training=False).numpy()


FRAMEWORKS = [pytest.param(Torch, id="pytorch"), pytest.param(Keras, id="keras")]


@pytest.fixture(scope="module")
def row(request):
    """row(fw, arch, bits): the fixed_point driver's row on that framework's smoke baseline, computed once."""
    cache = {}

    def get(fw, arch, bits):
        if (fw.name, arch, bits) not in cache:
            backend, ctx = request.getfixturevalue(fw.backend_fixture), request.getfixturevalue(fw.ctx_fixture)
            cell = Cell(fw.name, arch, "fixed_point", 0, {"bits": bits})
            cache[fw.name, arch, bits] = REGISTRY["fixed_point"](backend, ctx, cell)
        return cache[fw.name, arch, bits]

    return get


def layer_names(arch: str) -> list[str]:
    plan = specs.plan(arch, width=0.0625)
    return [c.name for c in specs.convs_of(plan)] + [fc.name for fc in specs.linears_of(plan)]


# --- the rule: signed formats ------------------------------------------------------------------------------

def test_signed_qmn_golden_values():
    assert qmn_format(3.2, 8) == QFormat(8, 5, True)  # Q2.5: codes -128..127 times 1/32 cover [-4, 3.96875]
    assert qmn_format(3.2, 8).m == 2 and qmn_format(3.2, 8).as_list() == [2, 5, True]
    assert qmn_format(127 / 32, 8) == QFormat(8, 5)  # the largest value Q2.5 holds exactly
    assert qmn_format(4.0, 8) == QFormat(8, 4)  # 4.0 > 127/32: one integer bit more (Q3.4)
    assert qmn_format(1.0, 4) == QFormat(4, 2)  # Q1.2: 7/4 >= 1 > 7/8
    assert qmn_format(0.01, 8).as_list() == [-6, 13, True]  # tiny tensor: more fractional bits than bits
    assert qmn_format(300.0, 8).as_list() == [9, -2, True]  # huge tensor: scale 4
    assert qmn_format(0.0, 8) == QFormat(8, 7)  # an all-zero tensor: Q0.7
    assert qmn_format(1.0, 2) == QFormat(2, 0)  # the narrowest signed format: codes -2..1
    with pytest.raises(ValueError, match="signed fixed-point format needs at least 2 bits, got 1"):
        qmn_format(1.0, 1)
    assert [QFormat(b, 0).code_range for b in (2, 4, 8)] == [(-2, 1), (-8, 7), (-128, 127)]


def test_signed_rounding_golden_values():
    fmt = QFormat(8, 5, True)
    x = np.array([3.2, -5.0, 4.0, 0.05, 1.5 / 32, 0.5 / 32, 2.5 / 32, -1.5 / 32, -4.0])
    expected = np.array([102, -128, 127, 2, 2, 0, 2, -2, -128]) / 32  # ties to even, clamped to [-128, 127]/32
    np.testing.assert_array_equal(fixed_point_round(x, fmt), expected)
    # a negative n is a coarser power of two: Q9.-2 holds multiples of 4 from -512 to 508
    np.testing.assert_array_equal(fixed_point_round(np.array([6.0, 10.0, 1e4, -1e4]), QFormat(8, -2)),
                                  [8.0, 8.0, 508.0, -512.0])


# --- the rule: unsigned formats ----------------------------------------------------------------------------

def test_unsigned_qmn_golden_values():
    # all bits hold magnitude: m + n = bits, codes 0 .. 2^bits - 1
    assert qmn_format(3.2, 8, signed=False) == QFormat(8, 6, False)  # Q2.6: 255/64 = 3.98 >= 3.2 > 255/128
    assert qmn_format(3.2, 8, signed=False).as_list() == [2, 6, False]
    assert qmn_format(255 / 64, 8, signed=False) == QFormat(8, 6, False)  # the largest value Q2.6 holds
    assert qmn_format(4.0, 8, signed=False) == QFormat(8, 5, False)  # 4.0 > 255/64: Q3.5
    assert qmn_format(1.0, 4, signed=False) == QFormat(4, 3, False)  # Q1.3: 15/8 >= 1 > 15/16
    assert qmn_format(0.01, 8, signed=False).as_list() == [-6, 14, False]  # 255/2^14 >= 0.01 > 255/2^15
    assert qmn_format(300.0, 8, signed=False).as_list() == [9, -1, False]  # scale 2: 510 >= 300 > 255
    assert qmn_format(0.0, 8, signed=False) == QFormat(8, 8, False)  # an all-zero tensor: Q0.8
    assert qmn_format(1.0, 1, signed=False) == QFormat(1, 0, False)  # one magnitude bit: codes 0..1
    with pytest.raises(ValueError, match="unsigned fixed-point format needs at least 1 bits, got 0"):
        qmn_format(1.0, 0, signed=False)
    assert [QFormat(b, 0, False).code_range for b in (1, 4, 8)] == [(0, 1), (0, 15), (0, 255)]
    # at these ranges the sign bit an unsigned format saves is one more fractional bit
    for max_abs in (0.01, 0.7, 3.2, 300.0):
        assert qmn_format(max_abs, 8, signed=False).n == qmn_format(max_abs, 8).n + 1


def test_unsigned_rounding_clamps_at_zero_and_top_code():
    fmt = QFormat(8, 6, False)
    x = np.array([3.2, -0.5, -1e-3, 4.0, 0.05, 1.5 / 64, 0.5 / 64, 255 / 64, 1e6])
    expected = np.array([205, 0, 0, 255, 3, 2, 0, 255, 255]) / 64  # ties to even, clamped to [0, 255]/64
    np.testing.assert_array_equal(fixed_point_round(x, fmt), expected)
    np.testing.assert_array_equal(fixed_point_round(np.array([-2.0, 0.3, 5.0]), QFormat(4, 2, False)),
                                  [0.0, 0.25, 3.75])  # Q2.2 unsigned: 0 .. 15/4


def test_tensor_format_is_unsigned_exactly_when_never_negative():
    assert tensor_format(0.0, 3.2, 8) == QFormat(8, 6, False)  # a ReLU output: min exactly 0
    assert tensor_format(0.5, 3.2, 8) == QFormat(8, 6, False)
    assert tensor_format(-1e-6, 3.2, 8) == QFormat(8, 5, True)  # one negative value: signed
    assert tensor_format(-5.0, 1.0, 8) == QFormat(8, 4, True)  # the range is the larger magnitude
    assert tensor_format(-5.0, 1.0, 8).m == 3
    assert tensor_format(0.0, 0.0, 4) == QFormat(4, 4, False)
    assert tensor_format(-1.0, 0.0, 4) == QFormat(4, 2, True)


# --- each framework's fake quantizer is the rule -----------------------------------------------------------

@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_fake_fixed_point_golden_values(fw):
    x = np.array([3.2, -5.0, 4.0, 0.05, 1.5 / 32, 0.5 / 32, 2.5 / 32, -1.5 / 32, -4.0])
    np.testing.assert_array_equal(fw.fake(x, QFormat(8, 5, True)),
                                  np.array([102, -128, 127, 2, 2, 0, 2, -2, -128]) / 32)
    x = np.array([3.2, -0.5, -1e-3, 4.0, 0.05, 1.5 / 64, 0.5 / 64, 255 / 64, 1e6])
    np.testing.assert_array_equal(fw.fake(x, QFormat(8, 6, False)),
                                  np.array([205, 0, 0, 255, 3, 2, 0, 255, 255]) / 64)


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_fake_fixed_point_matches_numpy_rule(fw, signed):
    x = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 3  # negatives clamp to 0 unsigned
    for bits in (4, 6, 8):
        fmt = qmn_format(float(np.abs(x).max()), bits, signed=signed)
        formats = [fmt, QFormat(bits, fmt.n + 3, signed), QFormat(bits, -1, signed), QFormat(bits, bits + 2, signed)]
        for f in formats:  # the calibrated one, then saturating, coarse and tiny scales
            got = fw.fake(x, f)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, fixed_point_round(x, f).astype(np.float32))
        if not signed:
            assert fw.fake(x, fmt).min() == 0.0


# --- fixed point on real smoke baselines -------------------------------------------------------------------

@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_fixed_point_rows(request, row, fw):
    ctx = request.getfixturevalue(fw.ctx_fixture)
    r8, r4 = row(fw, "vgg16", 8), row(fw, "vgg16", 4)
    for r, bits in ((r8, 8), (r4, 4)):
        assert ROW_KEYS | {"fp32_test_acc", "qmn_formats"} <= r.keys()
        assert r["simulated"] is True and r["bits"] == bits and "quantized_weights" not in r
        assert r["calibration_images"] == max(ctx.preset.protocol.calibration_sizes) == 64
        assert json.loads(json.dumps(r, allow_nan=False)) == r
    assert abs(r8["test_acc"] - r8["fp32_test_acc"]) <= 0.05
    plan = specs.plan("vgg16", width=0.0625)
    weights = sum(c.cout * c.cin * c.kernel**2 for c in specs.convs_of(plan))
    weights += sum(fc.cin * fc.cout for fc in specs.linears_of(plan))
    assert (r8["fixed_point_weight_bytes"], r4["fixed_point_weight_bytes"]) == (weights, weights // 2)
    assert r8["params_total"] == r4["params_total"] == specs.count_params(plan)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_fixed_point_row_activations_are_unsigned_after_relu(row, fw, arch):
    # Every conv/linear input is a ReLU output (through pooling, padding, flatten, residual add + ReLU, and
    # the shortcut convs' block input) except the first conv's: normalised images, negative values.
    bits = {"vgg16": 8, "resnet18": 4}[arch]
    formats = row(fw, arch, bits)["qmn_formats"]
    names = layer_names(arch)
    assert list(formats) == ["weights", "activations"]
    assert set(formats["weights"]) == set(formats["activations"]) == set(names)
    assert len(names) == {"vgg16": 15, "resnet18": 21}[arch]
    first = {"vgg16": "features.0.conv", "resnet18": "stem.conv"}[arch]
    assert {name: fmt[2] for name, fmt in formats["activations"].items()} == {name: name == first for name in names}
    for name in names:
        m, n, signed = formats["activations"][name]
        assert m + n + (1 if signed else 0) == bits
        m, n, signed = formats["weights"][name]
        assert signed is True and m + n + 1 == bits  # weights are signed


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_fixed_point_weights_and_inputs_lie_on_their_grid(request, row, fw, arch):
    backend, ctx = request.getfixturevalue(fw.backend_fixture), request.getfixturevalue(fw.ctx_fixture)
    base = load_baseline(backend, ctx, Cell(fw.name, arch, "fixed_point", 0))
    quantized = backend.fixed_point(base, 4, calibration_batches(ctx.dataset.val, 64, ctx.preset.recipe.eval_batch_size))
    model, formats = quantized.model, quantized.facts["qmn_formats"]
    assert formats == row(fw, arch, 4)["qmn_formats"]  # the model its row measured
    assert not fw.has_batchnorm(model)  # folded
    names = layer_names(arch)
    assert set(formats["weights"]) == set(names)
    total = 0
    for name in names:
        m, n, signed = formats["weights"][name]
        codes = fw.kernel(model, name) * 2.0**n
        assert signed and m + n + 1 == 4 and np.array_equal(codes, codes.round())
        assert -8 <= codes.min() and codes.max() <= 7
        assert max(-codes.min(), codes.max()) >= 4  # the format is the tightest: the top bit is used
        total += codes.size
        m, n, signed = formats["activations"][name]
        assert fw.input_format(model, name) == QFormat(4, n, signed)
    assert quantized.facts["quantized_weights"] == total


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_batchnorm_folding_keeps_the_function(request, fw, arch):
    backend, ctx = request.getfixturevalue(fw.backend_fixture), request.getfixturevalue(fw.ctx_fixture)
    base = load_baseline(backend, ctx, Cell(fw.name, arch, "fixed_point", 0))
    folded = fw.fold(base)
    assert not fw.has_batchnorm(folded) and fw.has_batchnorm(base)
    x = next(calibration_batches(ctx.dataset.val, 64, 64))
    np.testing.assert_allclose(fw.logits(folded, x), fw.logits(base, x), rtol=1e-3, atol=1e-3)


# --- calibration images ------------------------------------------------------------------------------------

def test_calibration_batches_are_the_first_images_normalised():
    rng = np.random.default_rng(0)
    split = data_mod.Split(rng.integers(0, 256, (70, 32, 32, 3), dtype=np.uint8), np.zeros(70, np.int64))
    batches = list(calibration_batches(split, 70, 32))
    assert [len(b) for b in batches] == [32, 32, 6] and all(b.dtype == np.float32 for b in batches)
    mean, std = np.float32(255) * np.asarray(data_mod.MEAN, np.float32), np.float32(255) * np.asarray(data_mod.STD, np.float32)
    np.testing.assert_allclose(np.concatenate(batches), (split.x.astype(np.float32) - mean) / std, rtol=1e-6)
    assert [len(b) for b in calibration_batches(split, 40, 32)] == [32, 8]


def test_calibration_refuses_more_images_than_the_split_has():
    split = data_mod.Split(np.zeros((70, 32, 32, 3), np.uint8), np.zeros(70, np.int64))
    with pytest.raises(ValueError, match="calibration needs 71 images, the split has 70"):
        next(calibration_batches(split, 71, 32))
