"""Cross-framework parity: weights moved through the neutral state give the same eval-mode logits.

PyTorch -> Keras and Keras -> PyTorch, for both architectures, at full width, at a width multiplier and at
a non-uniform ``widths``, with random weights and randomised BN statistics; max |logit difference| <= 1e-4.
"""
from __future__ import annotations

import numpy as np
import pytest

import tensorflow_impl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import torch

from pytorch_impl import models as tm
from pytorch_impl import weights as tw
from shared import specs
from shared import state as neutral
from tensorflow_impl import models as km
from tensorflow_impl import weights as kw

TOL = 1e-4
N = 4

CASES = {
    "vgg16-w0.5": ("vgg16", dict(width=0.5)),
    "vgg16-nonuniform": ("vgg16", dict(widths=(16, 24, 40, 32, 64, 48, 56, 96, 80, 72, 64, 40, 88, 100))),
    "resnet18-nonuniform": (
        "resnet18",
        dict(widths=(24, 10, 24, 17, 24, 40, 36, 9, 36, 70, 80, 33, 80, 100, 120, 51, 120)),
    ),
    "vgg16-full": ("vgg16", dict()),
    "resnet18-full": ("resnet18", dict()),
}


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def _kernel_std(fan_in: int, classifier: bool) -> float:
    """He-normal for layers followed by ReLU; 1/sqrt(fan_in) for the classifier, so logits are O(1-10)."""
    return float(np.sqrt((1.0 if classifier else 2.0) / fan_in))


def randomise_torch(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights and non-trivial BN affine parameters and running statistics, in place."""
    torch.manual_seed(seed)
    classifier = specs.linears_of(model.plan)[-1].name
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, _kernel_std(fan_in, name == classifier))
                if m.bias is not None:
                    m.bias.uniform_(-0.2, 0.2)
            elif isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)  # strictly positive
    return model.eval()


def randomise_keras(model, seed: int):
    """Random kernels/biases and BN gamma/beta/moving statistics, written with set_weights."""
    rng = np.random.default_rng(seed)
    classifier = specs.linears_of(model.plan)[-1].name
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if hasattr(layer, "moving_variance"):  # BN: [gamma, beta, moving_mean, moving_variance]
            c = weights[0].shape
            new = [rng.uniform(0.5, 1.5, c), rng.normal(0.0, 0.2, c), rng.normal(0.0, 0.2, c), rng.uniform(0.5, 2.0, c)]
        else:  # Conv2D / Dense: [kernel, (bias)]
            kernel = weights[0]
            fan_in = int(np.prod(kernel.shape[:-1]))
            new = [rng.normal(0.0, _kernel_std(fan_in, layer.name == classifier), kernel.shape)]
            new += [rng.uniform(-0.2, 0.2, w.shape) for w in weights[1:]]
        layer.set_weights([w.astype(np.float32) for w in new])
    return model


def torch_logits(model, x_nchw: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x_nchw)).numpy()


def keras_logits(model, x_nchw: np.ndarray) -> np.ndarray:
    return model(np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1)), training=False).numpy()


def inputs(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(N, 3, 32, 32)).astype(np.float32)


def assert_same_state(a: dict, b: dict):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype == np.float32, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_to_keras(case):
    arch, kwargs = CASES[case]
    tmodel = randomise_torch(tm.build(arch, **kwargs), seed=1)
    state = tw.export_state(tmodel)
    kmodel = kw.import_state(km.build(arch, **kwargs), state)
    x = inputs(2)
    t, k = torch_logits(tmodel, x), keras_logits(kmodel, x)
    assert t.shape == k.shape == (N, 10)
    assert np.std(t) > 1e-2, "degenerate logits would make the comparison vacuous"
    diff = float(np.max(np.abs(t - k)))
    print(f"{case} torch->keras max|dlogit| = {diff:.2e} (max|logit| {np.max(np.abs(t)):.3g})")
    assert diff <= TOL
    # the state survives the trip exactly (names, order, layouts, float32)
    assert_same_state(kw.export_state(kmodel), state)


@pytest.mark.parametrize("case", sorted(CASES))
def test_keras_to_torch(case):
    arch, kwargs = CASES[case]
    kmodel = randomise_keras(km.build(arch, **kwargs), seed=3)
    state = kw.export_state(kmodel)
    tmodel = tw.import_state(tm.build(arch, **kwargs), state).eval()
    x = inputs(4)
    t, k = torch_logits(tmodel, x), keras_logits(kmodel, x)
    assert np.std(k) > 1e-2, "degenerate logits would make the comparison vacuous"
    diff = float(np.max(np.abs(t - k)))
    print(f"{case} keras->torch max|dlogit| = {diff:.2e} (max|logit| {np.max(np.abs(k)):.3g})")
    assert diff <= TOL
    assert_same_state(tw.export_state(tmodel), state)


@pytest.mark.parametrize("arch", specs.ARCHS)
def test_keras_round_trip_exact(arch):
    rng = np.random.default_rng(5)
    model = km.build(arch, width=0.25)
    shapes = neutral.expected_shapes(model.plan)
    state = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    for k in state:
        if k.endswith("running_var"):
            state[k] = np.abs(state[k]) + 0.1
    out = kw.export_state(kw.import_state(model, state))
    assert list(out) == list(shapes)
    assert_same_state(out, state)
    # and the neutral key order is PyTorch's state_dict order
    assert list(out) == list(tw.export_state(tm.build(arch, width=0.25)))


def test_keras_layouts():
    """Conv kernels OIHW <-> HWIO and dense (out, in) <-> (in, out), checked element by element."""
    model = km.build("resnet18", width=0.25)
    state = kw.export_state(model)
    w = state["layer2.0.conv1.weight"]  # (out, in, kh, kw)
    w[:] = np.arange(w.size, dtype=np.float32).reshape(w.shape)
    fc = state["fc.weight"]  # (out, in)
    fc[:] = np.arange(fc.size, dtype=np.float32).reshape(fc.shape)
    kw.import_state(model, state)
    kernel = model.get_layer("layer2.0.conv1").kernel.numpy()  # (kh, kw, in, out)
    assert kernel[2, 1, 5, 7] == w[7, 5, 2, 1]
    assert model.get_layer("fc").kernel.numpy()[3, 9] == fc[9, 3]


@pytest.mark.parametrize("importer", ["keras", "torch"])
def test_bad_state_raises_naming_the_key(importer):
    arch, kwargs = "resnet18", dict(width=0.25)
    model = km.build(arch, **kwargs) if importer == "keras" else tm.build(arch, **kwargs)
    load = kw.import_state if importer == "keras" else tw.import_state
    good = kw.export_state(km.build(arch, **kwargs))

    missing = dict(good)
    del missing["layer3.0.shortcut.bn.running_var"]
    with pytest.raises(ValueError, match=r"missing layer3\.0\.shortcut\.bn\.running_var"):
        load(model, missing)

    wrong = dict(good)
    wrong["layer2.1.conv2.weight"] = np.zeros((32, 32, 3, 1), np.float32)
    with pytest.raises(ValueError, match=r"layer2\.1\.conv2\.weight: shape \(32, 32, 3, 1\) != expected \(32, 32, 3, 3\)"):
        load(model, wrong)

    extra = dict(good)
    extra["stem.conv.bias"] = np.zeros(16, np.float32)
    with pytest.raises(ValueError, match=r"unexpected stem\.conv\.bias"):
        load(model, extra)

    # a state of another width is rejected as a whole, before anything is written
    before = kw.export_state(model) if importer == "keras" else tw.export_state(model)
    with pytest.raises(ValueError, match="does not match the architecture spec"):
        load(model, kw.export_state(km.build(arch, width=0.5)))
    after = kw.export_state(model) if importer == "keras" else tw.export_state(model)
    assert_same_state(after, before)
