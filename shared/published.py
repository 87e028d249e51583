"""Published ImageNet weights into the neutral state: torchvision state_dicts and keras.applications' VGG16.

Framework-free: the file readers hand over ``{name: numpy array}`` (torchvision files: the safe, tensors-only
loader in ``pytorch_impl.published``; Keras: the HDF5 file read here with h5py, never unpickled), and this
module renames and re-lays them out for the spec of ``shared.specs``.

Layout compatibility, checked against each library's own model:
  torchvision resnet50 (v1.5)   -> resnet50          exact (names only)
  torchvision vgg16             -> vgg16_imagenet    exact (names only)
  keras.applications VGG16      -> vgg16_imagenet    kernels HWIO -> OIHW, fc1's rows (H, W, C) -> (C, H, W),
                                                     and conv1's input channels BGR -> RGB (see PREPROCESSING)
  refused, with the reason: torchvision vgg16_bn and resnet18/34 (other layouts: BN in VGG, basic blocks on
  an ImageNet stem; this project's resnet18 is the CIFAR variant), keras.applications ResNet50 (ResNet v1:
  the stride on the first 1x1 and biases on every conv), any file whose tensors do not fill the spec.

Every imported model takes RGB input normalised as ``(x - mean) / std`` on the 0..255 scale, with the
``PREPROCESSING`` of the weights' source: torchvision's ImageNet mean/std (its ``transforms.Normalize`` after
``ToTensor``), and keras.applications' "caffe" mode (BGR, mean subtracted, no scaling), which with conv1's
input channels flipped at import is RGB minus the same means, std 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import specs
from .state import flatten_dense_to_neutral, validate


@dataclass(frozen=True)
class Preprocessing:
    mean: tuple[float, float, float]  # RGB, on the 0..255 scale
    std: tuple[float, float, float]
    source: str

    def apply(self, images_uint8_nhwc) -> np.ndarray:
        x = np.asarray(images_uint8_nhwc, dtype=np.float32)
        return (x - np.float32(self.mean)) / np.float32(self.std)


PREPROCESSING = {
    "torchvision": Preprocessing((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255),
                                 "torchvision.transforms: ToTensor, Normalize(ImageNet mean, std)"),
    "keras_caffe": Preprocessing((123.68, 116.779, 103.939), (1.0, 1.0, 1.0),
                                 "keras.applications.vgg16.preprocess_input ('caffe': BGR, minus the means)"),
}

# torchvision's vgg16 Sequential: conv at these indices of ``features`` (ReLU and pools between), FCs at
# classifier.0/3/6
_TV_VGG_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_TV_VGG_FC_INDICES = (0, 3, 6)


class IncompatibleWeights(ValueError):
    """A weight file whose layout this project's spec does not build."""


def num_classes_of(arch: str, tensors: dict) -> int:
    key = {"resnet50": "fc.weight", "vgg16_imagenet": "classifier.6.weight"}[arch]
    if key not in tensors:
        raise IncompatibleWeights(f"no {key} among the file's tensors: not a torchvision {arch} state_dict")
    return int(np.shape(tensors[key])[0])


def from_torchvision(arch: str, tensors: dict) -> dict[str, np.ndarray]:
    """A torchvision ``resnet50`` / ``vgg16`` state_dict (numpy arrays) -> the neutral state of ``arch``."""
    renames = {"resnet50": _torchvision_resnet_name, "vgg16_imagenet": _torchvision_vgg_name}
    if arch not in renames:
        raise IncompatibleWeights(f"torchvision weights import into resnet50 or vgg16_imagenet, not {arch!r}")
    _refuse_known_torchvision_variants(tensors)
    rename = renames[arch]
    out = {}
    for key, value in tensors.items():
        if key.endswith("num_batches_tracked"):
            continue
        out[rename(key)] = np.asarray(value, dtype=np.float32)
    _validate(out, arch, num_classes_of(arch, tensors), "torchvision")
    return out


def _torchvision_resnet_name(key: str) -> str:
    if key.startswith("conv1."):
        return "stem.conv." + key[len("conv1."):]
    if key.startswith("bn1."):
        return "stem.bn." + key[len("bn1."):]
    return key.replace(".downsample.0.", ".shortcut.conv.").replace(".downsample.1.", ".shortcut.bn.")


def _torchvision_vgg_name(key: str) -> str:
    parts = key.split(".", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return key  # left as is: the spec check below names it as unexpected
    part, idx, suffix = parts
    if part == "features" and int(idx) in _TV_VGG_CONV_INDICES:
        return f"features.{_TV_VGG_CONV_INDICES.index(int(idx))}.conv.{suffix}"
    if part == "classifier" and int(idx) in _TV_VGG_FC_INDICES:
        return f"fc{_TV_VGG_FC_INDICES.index(int(idx)) + 1}.{suffix}"
    return key  # left as is: the spec check below names it as unexpected


def _refuse_known_torchvision_variants(tensors: dict) -> None:
    if any(k.endswith("running_mean") and k.startswith("features.") for k in tensors):
        raise IncompatibleWeights("this is torchvision's vgg16_bn (BN after every conv): the spec's "
                                  "vgg16_imagenet is torchvision's vgg16 without BN")
    if "layer1.0.conv1.weight" in tensors and "layer1.0.conv3.weight" not in tensors:
        raise IncompatibleWeights("these are torchvision basic-block ResNet weights (resnet18/34 on the ImageNet "
                                  "stem): the spec builds torchvision's resnet50, and this project's resnet18 "
                                  "is the CIFAR variant (3x3 stride-1 stem, no max-pool)")


def from_keras_applications_vgg16(layers: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """keras.applications ``VGG16(include_top=True)`` weights (``{layer name: [kernel, bias]}``) -> the
    neutral state of ``vgg16_imagenet``, taking RGB input (conv1's input channels flipped from BGR)."""
    if any(name.startswith(("conv2_block", "conv1_conv")) for name in layers):
        raise IncompatibleWeights("keras.applications ResNet50 is ResNet v1 (stride on the first 1x1, biases on "
                                  "every conv): not the spec's resnet50 (torchvision v1.5); import torchvision's "
                                  "resnet50 weights instead")
    convs = [f"block{b}_conv{k}" for b, n in enumerate((2, 2, 3, 3, 3), start=1) for k in range(1, n + 1)]
    missing = [n for n in (*convs, "fc1", "fc2", "predictions") if n not in layers]
    if missing:
        raise IncompatibleWeights(f"not a keras.applications VGG16 with its top: no layer {', '.join(missing)}")
    n_classes = int(np.shape(layers["predictions"][0])[1])
    plan = specs.plan("vgg16_imagenet", num_classes=n_classes)
    out = {}
    for i, name in enumerate(convs):
        kernel, bias = layers[name]
        w = np.asarray(kernel, np.float32).transpose(3, 2, 0, 1)  # HWIO -> OIHW
        if i == 0:
            w = w[:, ::-1]  # BGR -> RGB: the model then takes RGB input (PREPROCESSING["keras_caffe"])
        out[f"features.{i}.conv.weight"], out[f"features.{i}.conv.bias"] = np.ascontiguousarray(w), bias
    for lin, name in zip(specs.linears_of(plan), ("fc1", "fc2", "predictions")):
        kernel, bias = layers[name]
        out[f"{lin.name}.weight"] = flatten_dense_to_neutral(np.asarray(kernel, np.float32), lin)
        out[f"{lin.name}.bias"] = np.asarray(bias, np.float32)
    _validate(out, "vgg16_imagenet", n_classes, "keras.applications VGG16")
    return out


def read_keras_weight_file(path) -> dict[str, list[np.ndarray]]:
    """``{layer name: [weights in the layer's order]}`` from a Keras weight file, read with h5py (no pickle):
    the Keras 2 HDF5 layout (``save_weights('x.h5')``, keras.applications' downloads) or the Keras 3
    ``.weights.h5`` layout (``layers/<name>/vars/<i>``)."""
    import h5py

    out: dict[str, list[np.ndarray]] = {}
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 weight file ({exc}); pass a Keras .h5 / .weights.h5 file")
    with f:
        group = f["model_weights"] if "model_weights" in f else f  # a whole-model .h5 keeps them one level down
        if "layer_names" in group.attrs:
            for name in (n.decode() if isinstance(n, bytes) else n for n in group.attrs["layer_names"]):
                g = group[name]
                names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs.get("weight_names", [])]
                if names:
                    out[name] = [np.asarray(g[n]) for n in names]
        elif "layers" in group:
            for name, g in group["layers"].items():
                if "vars" in g and len(g["vars"]):
                    out[name] = [np.asarray(g["vars"][str(i)]) for i in range(len(g["vars"]))]
        else:
            raise ValueError(f"{path}: an HDF5 file without Keras weights (no layer_names, no layers/)")
    return out


def _validate(state: dict, arch: str, n_classes: int, source: str) -> None:
    try:
        validate(state, specs.plan(arch, num_classes=n_classes))
    except ValueError as exc:
        raise IncompatibleWeights(f"{source} weights do not fill the spec's {arch}: {exc}") from None



# ----------------------------------------------------------------------------- --pretrained PATH, any kind

TORCH_SUFFIXES = (".pth", ".pt")
KERAS_SUFFIXES = (".h5", ".hdf5")  # ".weights.h5" ends in ".h5" too


def read_pretrained(path, arch: str, torch_reader=None) -> dict[str, np.ndarray]:
    """A ``--pretrained`` file as a neutral state of ``arch``: one of this project's safetensors checkpoints,
    a torchvision state_dict (read by ``torch_reader``, the PyTorch suite's safe loader; the Keras suite has
    none and says how to convert the file once), or a keras.applications VGG16 weight file."""
    from pathlib import Path

    from . import state as neutral

    path = Path(path)
    name = path.name.lower()
    if not path.is_file():
        raise FileNotFoundError(f"--pretrained {path}: no such file")
    if name.endswith(".safetensors"):
        return neutral.load(path)
    if name.endswith(KERAS_SUFFIXES):
        if arch != "vgg16_imagenet":
            raise IncompatibleWeights(f"{path}: keras.applications weight files import into vgg16_imagenet only "
                                      f"(its ResNet50 is ResNet v1, another layout), not {arch}")
        return from_keras_applications_vgg16(read_keras_weight_file(path))
    if name.endswith(TORCH_SUFFIXES):
        if torch_reader is None:
            raise IncompatibleWeights(
                f"{path}: a torch file is read by the PyTorch suite; convert it once with python -m pytorch_impl "
                f"import-weights --arch {arch} {path} {path.with_suffix('.safetensors')} and pass that file")
        return from_torchvision(arch, torch_reader(path))
    raise ValueError(f"--pretrained {path}: unknown kind of file; pass a .safetensors checkpoint of this project, "
                     f"a torchvision .pth/.pt state_dict or a keras.applications .h5 weight file")
