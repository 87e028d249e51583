"""ImageNet architectures from the shared spec and published weight files: torchvision's resnet50 / vgg16 and
keras.applications' VGG16, each saved with its library's own call (weights=None: these machines cannot
download the real ones) and imported through the neutral state into the other framework's build."""
import h5py
import numpy as np
import pytest

import tensorflow_impl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from pytorch_impl import models as tm
from pytorch_impl import published as pt_published
from pytorch_impl import weights as tw
from shared import published, specs
from tensorflow_impl import models as km
from tensorflow_impl import require_tf_keras
from tensorflow_impl import weights as kw

keras = require_tf_keras()

# torchvision's own counts (sum of parameters(), 1000 classes) and MACs of one 224x224 image
IMAGENET = {"resnet50": (25_557_032, 4_089_184_256), "vgg16_imagenet": (138_357_544, 15_470_264_320)}
TORCHVISION = {"resnet50": torchvision.models.resnet50, "vgg16_imagenet": torchvision.models.vgg16}
TOL = 1e-4  # on logits of scale 1; fp32 rounding grows with the logits, so larger ones are compared relatively


def assert_logits_close(got, want):
    assert np.abs(want).max() > 1e-3  # logits that carry information, not a dead network
    assert np.abs(got - want).max() <= TOL * max(1.0, float(np.abs(want).max()))


def images(n=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def randomise_bn_statistics(model, seed=0):
    """Eval-mode logits then depend on every BN tensor, so a misnamed or mis-laid one shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g), m.bias.normal_(0, 0.1, generator=g)
                m.running_mean.normal_(0, 0.1, generator=g), m.running_var.uniform_(0.5, 1.5, generator=g)
    return model.eval()


@pytest.mark.parametrize("arch", sorted(IMAGENET))
def test_imagenet_figures_both_frameworks_equal_torchvision(arch):
    params, macs = IMAGENET[arch]
    plan = specs.plan(arch, num_classes=1000)
    assert specs.count_params(plan) == params == sum(p.numel() for p in TORCHVISION[arch](weights=None).parameters())
    assert specs.count_macs(plan) == macs
    tmodel = tm.build(arch, num_classes=1000)
    assert tm.count_params(tmodel) == params
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        tmodel.eval()(torch.zeros(1, 3, 224, 224))
    assert counter.get_total_flops() == 2 * macs
    kmodel = km.build(arch, num_classes=1000)
    assert km.count_params(kmodel) == params and km.count_macs(kmodel) == macs
    assert kmodel.input_shape == (None, 224, 224, 3)


@pytest.mark.parametrize("arch", sorted(IMAGENET))
def test_narrow_imagenet_logits_agree_through_the_neutral_state(arch):
    tmodel = randomise_bn_statistics(tm.build(arch, num_classes=10, width=0.125))
    kmodel = kw.import_state(km.build(arch, num_classes=10, width=0.125), tw.export_state(tmodel))
    x = published.PREPROCESSING["torchvision"].apply(images())
    with torch.no_grad():
        want = tmodel(nchw(x)).numpy()
    assert_logits_close(kmodel(x, training=False).numpy(), want)


@pytest.mark.parametrize("arch", sorted(IMAGENET))
def test_torchvision_weight_file_into_keras_gives_torchvision_logits(arch, tmp_path):
    torch.manual_seed(0)
    reference = randomise_bn_statistics(TORCHVISION[arch](weights=None, num_classes=10))
    path = tmp_path / f"{arch}.pth"
    torch.save(reference.state_dict(), path)  # the library's own call; a download is the same format
    state = published.from_torchvision(arch, pt_published.read_torchvision_file(path))
    kmodel = kw.import_state(km.build(arch, num_classes=10), state)
    x = published.PREPROCESSING["torchvision"].apply(images())
    with torch.no_grad():
        want = reference(nchw(x)).numpy()
    assert_logits_close(kmodel(x, training=False).numpy(), want)
    # and into this suite's own build, by the one-call loader
    with torch.no_grad():
        assert_logits_close(pt_published.load_torchvision(arch, path)(nchw(x)).numpy(), want)


def test_keras_applications_vgg16_weight_file_into_pytorch_gives_keras_logits(tmp_path):
    tf_reference = keras.applications.VGG16(weights=None, classes=10, classifier_activation=None)
    rng = np.random.default_rng(1)
    for v in tf_reference.trainable_variables:  # biases start at zero: give them values that must move over
        if "bias" in v.name:
            v.assign(rng.normal(0, 0.05, v.shape).astype(np.float32))
    path = tmp_path / "vgg16.h5"
    tf_reference.save_weights(str(path))  # the legacy HDF5 layout of keras.applications' downloads
    state = published.from_keras_applications_vgg16(published.read_keras_weight_file(path))
    tmodel = tw.import_state(tm.build("vgg16_imagenet", num_classes=10), state).eval()
    x = images()
    want = tf_reference(keras.applications.vgg16.preprocess_input(x.astype(np.float32)), training=False).numpy()
    with torch.no_grad():  # RGB in, the caffe means subtracted: conv1's input channels were flipped at import
        got = tmodel(nchw(published.PREPROCESSING["keras_caffe"].apply(x))).numpy()
    assert_logits_close(got, want)


def test_keras_weights_h5_layout_is_read(tmp_path):
    """Keras 3's ``.weights.h5`` keeps ``layers/<name>/vars/<i>``; the reader returns the same dict."""
    kernel, bias = np.ones((3, 3, 3, 4), np.float32), np.arange(4, dtype=np.float32)
    path = tmp_path / "model.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("layers/block1_conv1/vars/0", data=kernel)
        f.create_dataset("layers/block1_conv1/vars/1", data=bias)
        f.create_group("layers/flatten/vars")
    out = published.read_keras_weight_file(path)
    assert list(out) == ["block1_conv1"]
    np.testing.assert_array_equal(out["block1_conv1"][1], bias)


def test_torchvision_normalize_is_the_stated_preprocessing():
    from torchvision.transforms import functional as TF

    x = images(1)[0]
    want = TF.normalize(TF.to_tensor(x), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).numpy()
    got = published.PREPROCESSING["torchvision"].apply(x[None])[0].transpose(2, 0, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_incompatible_layouts_are_refused_with_the_reason(tmp_path):
    bn_vgg = {k: v.numpy() for k, v in torchvision.models.vgg16_bn(weights=None).state_dict().items()}
    with pytest.raises(published.IncompatibleWeights, match="vgg16_bn"):
        published.from_torchvision("vgg16_imagenet", bn_vgg)
    r18 = {k: v.numpy() for k, v in torchvision.models.resnet18(weights=None).state_dict().items()}
    with pytest.raises(published.IncompatibleWeights, match="CIFAR variant"):
        published.from_torchvision("resnet50", r18)
    with pytest.raises(published.IncompatibleWeights, match="resnet50 or vgg16_imagenet, not 'resnet18'"):
        published.from_torchvision("resnet18", r18)
    r50 = {k: v.numpy() for k, v in torchvision.models.resnet50(weights=None).state_dict().items()}
    with pytest.raises(published.IncompatibleWeights, match="not a torchvision vgg16_imagenet"):
        published.from_torchvision("vgg16_imagenet", r50)
    del r50["layer4.2.bn3.running_var"]
    with pytest.raises(published.IncompatibleWeights, match=r"missing layer4\.2\.bn3\.running_var"):
        published.from_torchvision("resnet50", r50)
    keras_r50 = tmp_path / "r50.h5"
    keras.applications.ResNet50(weights=None).save_weights(str(keras_r50))
    with pytest.raises(published.IncompatibleWeights, match="ResNet v1"):
        published.from_keras_applications_vgg16(published.read_keras_weight_file(keras_r50))


def test_bad_weight_files_are_named(tmp_path):
    truncated = tmp_path / "truncated.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated.pth: not a readable torch state_dict file"):
        pt_published.read_torchvision_file(truncated)
    whole_model = tmp_path / "tensor.pth"
    torch.save([torch.zeros(2)], whole_model)
    with pytest.raises(ValueError, match="tensor.pth: holds a list, not a state_dict"):
        pt_published.read_torchvision_file(whole_model)
    with pytest.raises(FileNotFoundError, match="no weight file"):
        pt_published.read_torchvision_file(tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="garbage.h5: not a readable HDF5 weight file"):
        published.read_keras_weight_file(garbage)


@pytest.mark.parametrize("arch", sorted(IMAGENET))
def test_filter_prune_of_imagenet_archs_matches_across_frameworks(arch):
    """ResNet-50's bottleneck outputs couple through the identity shortcuts, VGG's fc1 reads a 7x7 map (a
    pruned channel takes its 49 columns): Torch-Pruning, the shared rule and the Keras prune agree."""
    import copy

    from pytorch_impl import structured as pt_structured
    from shared import filter_rule
    from tensorflow_impl import structured as tf_structured

    tmodel = randomise_bn_statistics(tm.build(arch, num_classes=10, width=0.125))
    state = tw.export_state(tmodel)
    ratios = filter_rule.uniform_layer_ratios(arch, 0.4)
    pruned, kept = pt_structured.prune_filters(copy.deepcopy(tmodel), ratios)
    assert (pruned.widths, kept) == filter_rule.prune_plan(state, arch, tmodel.widths, ratios)
    sliced = filter_rule.prune_state(state, arch, kept)
    for name, value in tw.export_state(pruned).items():
        np.testing.assert_array_equal(value, sliced[name], err_msg=name)
    kpruned, kkept = tf_structured.prune_filters(kw.import_state(km.build(arch, num_classes=10, width=0.125), state),
                                                 ratios)
    assert kkept == kept and kpruned.widths == pruned.widths
    x = published.PREPROCESSING["torchvision"].apply(images(1))
    with torch.no_grad():
        want = pruned.eval()(nchw(x)).numpy()
    assert_logits_close(kpruned(x, training=False).numpy(), want)
