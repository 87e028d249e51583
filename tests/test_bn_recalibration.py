"""One BN re-estimation rule in both suites: the plain average of per-batch mean and unbiased variance."""
import numpy as np
import pytest
import torch

import tensorflow_impl  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from shared import data, specs


@pytest.mark.parametrize("arch", specs.ARCHS)
def test_recalibrated_statistics_agree_across_suites_and_follow_the_rule(arch, pt_backend, tf_backend):
    x = data.synthetic(n_train=96, n_val=0, n_test=8, seed=1).train.x
    torch.manual_seed(0)
    model = pt_backend.build(arch, width=0.0625)
    keras_model = tf_backend.import_state(tf_backend.build(arch, width=0.0625), pt_backend.export_state(model))
    pt_backend.recalibrate_bn(model, x, 32)
    tf_backend.recalibrate_bn(keras_model, x, 32)
    pt, tf = pt_backend.export_state(model), tf_backend.export_state(keras_model)
    stats = [k for k in pt if k.endswith(("running_mean", "running_var"))]
    assert len(stats) == 2 * len([k for k in pt if k.endswith("running_mean")]) > 0
    for key in stats:
        np.testing.assert_allclose(tf[key], pt[key], rtol=1e-4, atol=1e-5, err_msg=key)

    # the rule itself, on the first BN (its input is the normalised image through the first conv)
    conv = specs.convs_of(specs.plan(arch, width=0.0625))[0]
    first = model.get_submodule(conv.name).to("cpu")
    from pytorch_impl.train import _norm_constants, to_model_input
    mean, std = _norm_constants(torch.device("cpu"))
    means, variances = [], []
    with torch.no_grad():
        for i in range(0, 96, 32):
            y = first(to_model_input(torch.from_numpy(x[i : i + 32]), mean, std)).double()
            means.append(y.mean(dim=(0, 2, 3)))
            variances.append(y.var(dim=(0, 2, 3), unbiased=True))
    np.testing.assert_allclose(pt[f"{conv.bn_name}.running_mean"], torch.stack(means).mean(0).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pt[f"{conv.bn_name}.running_var"], torch.stack(variances).mean(0).numpy(), rtol=1e-4, atol=1e-6)
