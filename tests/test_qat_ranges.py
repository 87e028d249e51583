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
    points = {"input"} | {c.name for c in specs.convs_of(plan)} | {b.name for b in getattr(plan, "blocks", ())}
    assert set(pt) == set(tf) == points  # every conv output, block output and the input, in both
    for name in points:
        np.testing.assert_allclose(pt[name], tf[name], atol=1e-3, err_msg=name)
    # calibrated, not tfmot's initial +-6: the input's range is the images' own
    x = np.concatenate(list(calibration_batches(images, 96, 32)))
    np.testing.assert_allclose(tf["input"], (x.min(), x.max()), rtol=1e-6)
    # post-ReLU points start at 0; ResNet's conv2 and shortcut outputs (before the add) go negative
    blocks = getattr(plan, "blocks", ())
    pre_add = {b.conv2.name for b in blocks} | {b.shortcut.name for b in blocks if b.shortcut}
    assert all(pt[name][0] == 0.0 for name in points - pre_add - {"input"})
    assert all(pt[name][0] < 0.0 for name in pre_add)
