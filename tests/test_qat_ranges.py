"""QAT starts from the same activation ranges in both suites: calibrated on the protocol's images first."""
import numpy as np
import pytest
import torch

import tensorflow_impl  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from shared import data, specs
from shared.drivers.common import calibration_batches


@pytest.fixture(scope="module")
def images():
    return data.synthetic(n_train=64, n_val=96, n_test=8, seed=0).val


@pytest.mark.parametrize("arch", specs.ARCHS)
def test_initial_qat_ranges_agree_across_suites(arch, pt_backend, tf_backend, images):
    torch.manual_seed(0)
    model = pt_backend.build(arch, width=0.0625)
    with torch.no_grad():  # non-trivial BN running statistics, so eval-mode calibration is not an identity
        model.train()(torch.randn(32, 3, 32, 32) * 2)
    state = pt_backend.export_state(model.eval())
    keras_model = tf_backend.import_state(tf_backend.build(arch, width=0.0625), state)
    pt = pt_backend.qat_activation_ranges(pt_backend.prepare_qat(model, calibration_batches(images, 96, 32)))
    tf = tf_backend.qat_activation_ranges(tf_backend.prepare_qat(keras_model, calibration_batches(images, 96, 32)))

    plan = specs.plan(arch, width=0.0625)
    blocks = getattr(plan, "blocks", ())
    points = {"input"} | {c.name for c in specs.convs_of(plan)} | {b.name for b in blocks}
    # x86's int8 conv takes BN, the residual add and the ReLU as post-ops, so PT2E never quantizes a ResNet
    # block's conv2 output on its own (TFLite does, then adds in int8), and the last block's output only
    # after the average pool: exactly those points are Keras-only
    fused = {b.conv2.name for b in blocks}
    keras_only = fused | ({blocks[-1].name} if blocks else set())
    assert set(tf) == points  # every conv output, block output and the input
    assert set(pt) == points - keras_only
    assert len(keras_only) == {"vgg16": 0, "resnet18": 9}[arch]
    for name in points - keras_only:
        np.testing.assert_allclose(pt[name], tf[name], atol=1e-3, err_msg=name)
    # calibrated, not tfmot's initial +-6: the input's range is the images' own
    x = np.concatenate(list(calibration_batches(images, 96, 32)))
    np.testing.assert_allclose(tf["input"], (x.min(), x.max()), rtol=1e-6)
    np.testing.assert_allclose(pt["input"], (x.min(), x.max()), rtol=1e-6)
    # post-ReLU points start at 0; ResNet's conv2 and shortcut outputs (before the add) go negative
    pre_add = fused | {b.shortcut.name for b in blocks if b.shortcut}
    for ranges in (pt, tf):
        assert all(ranges[name][0] == 0.0 for name in set(ranges) - pre_add - {"input"})
        assert all(ranges[name][0] < 0.0 for name in pre_add & set(ranges))
