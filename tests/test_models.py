"""Architecture figures pinned in the spec and in both frameworks' built models."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tensorflow_impl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import torch
from torch.utils.flop_counter import FlopCounterMode

from pytorch_impl import models as tm
from shared import specs
from shared.conventions import keras_l2_factor
from tensorflow_impl import models as km

FULL = {
    # arch: (params, MACs) at width 1, 32x32 input, 10 classes
    "vgg16": (14_991_946, 313_463_808),
    "resnet18": (11_173_962, 555_422_720),
    # the custom CNNs: every conv and the hidden FC count their BN; the FC flattens an 8x8 map
    "cnn": (2_123_402, 7_705_600),
    "cnn_dropout": (2_169_770, 26_579_968),
}
# Li et al. 2017, VGG-16-pruned-A: conv1 and conv8-conv13 at 50%, the FC layer untouched.
VGG16_PRUNED_A = (32, 64, 128, 128, 256, 256, 256, 256, 256, 256, 256, 256, 256, 512)
VGG16_PRUNED_A_FIGURES = (5_399_690, 206_279_680)


def torch_macs(model: torch.nn.Module) -> int:
    """MACs from PyTorch's own FLOP counter (it counts 2 FLOPs per multiply-accumulate)."""
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, specs.INPUT_CHANNELS, specs.INPUT_HW, specs.INPUT_HW))
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


def keras_param_count_by_weights(model) -> int:
    """The brief's definition: all weights except BN moving statistics."""
    moving = {
        id(v) for l in model.layers if hasattr(l, "moving_mean") for v in (l.moving_mean, l.moving_variance)
    }
    return sum(int(np.prod(v.shape)) for v in model.weights if id(v) not in moving)


@pytest.fixture(scope="module", params=sorted(FULL))
def full(request):
    arch = request.param
    return arch, tm.build(arch), km.build(arch)


def test_spec_figures():
    for arch, (params, macs) in FULL.items():
        p = specs.plan(arch)
        assert specs.count_params(p) == params
        assert specs.count_macs(p) == macs


def test_full_width_figures_both_frameworks(full):
    arch, tmodel, kmodel = full
    params, macs = FULL[arch]
    assert tm.count_params(tmodel) == params
    assert km.count_params(kmodel) == params
    assert keras_param_count_by_weights(kmodel) == params
    assert km.count_macs(kmodel) == macs
    assert torch_macs(tmodel) == macs


def test_nonzero_counts(full):
    arch, tmodel, kmodel = full
    # Fresh models: Keras zero-initialises biases and beta (PyTorch: beta and, for BN, no bias), so nonzero < total.
    assert 0 < km.count_nonzero(kmodel) <= km.count_params(kmodel)
    assert 0 < tm.count_nonzero(tmodel) <= tm.count_params(tmodel)
    kernels = [l.kernel for l in kmodel.layers if hasattr(l, "kernel")]
    kernels[0].assign(np.zeros(kernels[0].shape, np.float32))
    before = km.count_nonzero(kmodel)
    kernels[0].assign(np.ones(kernels[0].shape, np.float32))
    assert km.count_nonzero(kmodel) == before + int(np.prod(kernels[0].shape))


def test_vgg16_pruned_a_li_et_al():
    params, macs = VGG16_PRUNED_A_FIGURES
    p = specs.plan("vgg16", widths=VGG16_PRUNED_A)
    assert (specs.count_params(p), specs.count_macs(p)) == (params, macs)
    tmodel, kmodel = tm.build("vgg16", widths=VGG16_PRUNED_A), km.build("vgg16", widths=VGG16_PRUNED_A)
    assert tm.count_params(tmodel) == km.count_params(kmodel) == params
    assert torch_macs(tmodel) == km.count_macs(kmodel) == macs
    assert tuple(tmodel.widths) == tuple(kmodel.widths) == VGG16_PRUNED_A


@pytest.mark.parametrize("arch", sorted(FULL))
def test_width_multiplier_builds_equal(arch):
    tmodel, kmodel = tm.build(arch, width=0.25), km.build(arch, width=0.25)
    p = specs.plan(arch, width=0.25)
    assert tm.count_params(tmodel) == km.count_params(kmodel) == specs.count_params(p)
    assert torch_macs(tmodel) == km.count_macs(kmodel) == specs.count_macs(p)
    assert tmodel.widths == kmodel.widths == specs.default_widths(arch, 0.25)
    assert kmodel.arch == arch and kmodel.plan == p


NON_UNIFORM = {
    "vgg16": (16, 24, 40, 32, 64, 48, 56, 96, 80, 72, 64, 40, 88, 100),
    # stem and layer1's block outputs are coupled (identity shortcuts), as are each stage's block outputs;
    # conv1 of every block is free.
    "resnet18": (24, 10, 24, 17, 24, 40, 36, 9, 36, 70, 80, 33, 80, 100, 120, 51, 120),
}


@pytest.mark.parametrize("arch", sorted(NON_UNIFORM))
def test_non_uniform_widths_build_equal(arch):
    widths = NON_UNIFORM[arch]
    tmodel, kmodel = tm.build(arch, widths=widths), km.build(arch, widths=widths)
    p = specs.plan(arch, widths=widths)
    assert tm.count_params(tmodel) == km.count_params(kmodel) == specs.count_params(p)
    assert torch_macs(tmodel) == km.count_macs(kmodel) == specs.count_macs(p)
    # each prunable layer really has the requested output width in both frameworks
    tshapes = dict(tmodel.state_dict())
    for name, w in zip(specs.layer_names(arch), widths):
        conv = f"{name}.conv" if name.startswith(("features.", "stem")) else name
        assert tshapes[f"{conv}.weight"].shape[0] == w
        assert kmodel.get_layer(conv).kernel.shape[-1] == w


@pytest.mark.parametrize("build", [tm.build, km.build], ids=["torch", "keras"])
def test_bad_widths_raise(build):
    with pytest.raises(ValueError, match=r"vgg16 takes 14 widths .*got 13"):
        build("vgg16", widths=VGG16_PRUNED_A[:-1])
    with pytest.raises(ValueError, match=r"resnet18 takes 17 widths"):
        build("resnet18", widths=VGG16_PRUNED_A)
    with pytest.raises(ValueError, match=r"every width must be >= 1"):
        build("vgg16", widths=(0,) + VGG16_PRUNED_A[1:])
    with pytest.raises(ValueError, match=r"width must be > 0"):
        build("vgg16", width=0)
    with pytest.raises(ValueError, match=r"unknown architecture 'resnet34': choose one of vgg16, resnet18, cnn, "):
        build("resnet34")
    # Breaking the residual coupling: layer1.0.conv2 (identity shortcut) narrower than the stem.
    bad = list(specs.default_widths("resnet18"))
    bad[2] = 32
    with pytest.raises(ValueError, match=r"layer1\.0: identity shortcut needs conv2 width 32 == block input width 64"):
        build("resnet18", widths=bad)
    # ... and inside a later stage: layer3.1's input is layer3.0.conv2's width.
    bad = list(specs.default_widths("resnet18"))
    bad[specs.layer_names("resnet18").index("layer3.0.conv2")] = 200
    with pytest.raises(ValueError, match=r"layer3\.1: identity shortcut needs conv2 width 256 == block input width 200"):
        build("resnet18", widths=bad)


@pytest.mark.parametrize("arch", sorted(FULL))
def test_logits_shape(arch):
    n = 3
    tmodel, kmodel = tm.build(arch, width=0.25).eval(), km.build(arch, width=0.25)
    with torch.no_grad():
        assert tuple(tmodel(torch.randn(n, 3, 32, 32)).shape) == (n, 10)
    assert tuple(kmodel(np.random.randn(n, 32, 32, 3).astype(np.float32), training=False).shape) == (n, 10)
    assert kmodel.input_shape == (None, 32, 32, 3) and kmodel.output_shape == (None, 10)
    assert tuple(km.build(arch, num_classes=7, width=0.25).output_shape) == (None, 7)


def test_keras_weight_decay_hooks():
    wd = 5e-4
    model = km.build("resnet18", width=0.25, weight_decay=wd)
    kernels = [l.kernel for l in model.layers if hasattr(l, "kernel")]
    n_kernels = len(specs.convs_of(model.plan)) + len(specs.linears_of(model.plan))
    assert len(kernels) == n_kernels == len(model.losses)  # conv/dense kernels only, never biases or BN
    expected = keras_l2_factor(wd) * sum(float(np.sum(np.square(k.numpy()))) for k in kernels)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    assert not km.build("resnet18", width=0.25).losses
    with pytest.raises(ValueError, match="weight_decay"):
        km.build("vgg16", width=0.25, weight_decay=-1.0)


def test_keras_layer_names_are_canonical():
    model = km.build("resnet18", width=0.25)
    names = {l.name for l in model.layers}
    for c in specs.convs_of(model.plan):
        assert {c.name, c.bn_name} <= names
    assert "fc" in names
    bn = model.get_layer("stem.bn")
    assert bn.momentum == pytest.approx(0.9) and bn.epsilon == pytest.approx(1e-5)
    # explicit symmetric padding, then a "valid" conv (Keras "same" is asymmetric at stride 2)
    conv = model.get_layer("layer2.0.conv1")
    assert conv.padding == "valid" and conv.strides == (2, 2)
    assert model.get_layer("layer2.0.conv1_pad").padding == ((1, 1), (1, 1))


def test_keras3_behind_tf_keras_is_refused():
    """If TensorFlow resolved tf.keras to Keras 3 before our package loaded, importing the models fails loudly."""
    code = textwrap.dedent(
        """
        import os
        os.environ["TF_USE_LEGACY_KERAS"] = "0"
        import tensorflow as tf
        tf.keras.layers  # resolves tf.keras to Keras 3
        try:
            import tensorflow_impl.models
        except ImportError as exc:
            print("REFUSED:", exc)
        """
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert "REFUSED:" in out.stdout, out.stdout + out.stderr
    assert "import tensorflow_impl before tensorflow, or set TF_USE_LEGACY_KERAS=1" in out.stdout


def test_a_narrow_strided_shortcut_subsamples_then_convolves_the_same_function():
    """The smoke-width ResNet-18's shortcuts (4 -> 8 channels) work around oneDNN's AVX2 crash
    (models.SUBSAMPLE_BELOW_CIN): same parameters, same outputs as a strided 1x1 conv, and a channels_last
    training step completes."""
    import torch
    import torch.nn.functional as F

    from pytorch_impl import models

    torch.manual_seed(0)
    net = models.build("resnet18", width=0.0625)
    short = net.layer2[0].shortcut
    assert short.subsample == 2 and short.conv.stride == (1, 1) and short.conv.in_channels == 4
    assert net.layer3[0].shortcut.subsample == 1 and net.layer3[0].shortcut.conv.stride == (2, 2)  # 8 channels
    x = torch.randn(2, 4, 32, 32)
    torch.testing.assert_close(short.conv(x[:, :, ::2, ::2]), F.conv2d(x, short.conv.weight, stride=2))
    net = net.to(memory_format=torch.channels_last)
    xb = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    for _ in range(2):
        net(xb).sum().backward()
    assert net.layer2[0].shortcut.conv.weight.grad.abs().sum() > 0
