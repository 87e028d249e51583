"""Keras (tf_keras) networks built from the shared spec; layer names are the spec's canonical names.

Mirrors ``pytorch_impl.models``: the Conv2D / Dense / BatchNormalization layers carry exactly the canonical
names of ``shared.specs`` (tf_keras accepts dots in layer names, so no mapping is needed); helper layers
without weights (padding, ReLU, pooling, add) get derived names with a ``_`` suffix, which never collide with
a canonical name. Models take NHWC float32 input (32, 32, 3; ImageNet architectures 224, 224, 3) and output
logits (no softmax).
"""
from __future__ import annotations

import numpy as np

from shared import specs
from shared.conventions import BN_EPS, BN_MOMENTUM_KERAS, keras_l2_factor

from . import require_tf_keras

keras = require_tf_keras()
layers = keras.layers


def _regularizer(weight_decay: float):
    # Coupled L2 matching torch SGD(weight_decay=wd): see conventions.keras_l2_factor. Kernels only.
    return keras.regularizers.L2(keras_l2_factor(weight_decay)) if weight_decay > 0 else None


def _conv_bn(x, c: specs.Conv, weight_decay: float):
    """Conv with PyTorch's padding=k//2, followed by its BN (see conventions.CONV_PADDING).

    At stride 1 Keras "same" is exactly that symmetric padding; at stride 2 it is not (0 before, 1 after),
    so strided convs get an explicit ZeroPadding2D and "valid". Padding only where needed matters: a pad
    layer before every conv costs a full copy forward and a slice backward, ~1/3 of ResNet-18's CPU
    training time at full width.
    """
    explicit = c.padding and c.stride != 1
    if explicit:
        x = layers.ZeroPadding2D(c.padding, name=f"{c.name}_pad")(x)
    x = layers.Conv2D(
        c.cout,
        c.kernel,
        strides=c.stride,
        padding="valid" if explicit or not c.padding else "same",
        use_bias=c.bias,
        kernel_regularizer=_regularizer(weight_decay),
        name=c.name,
    )(x)
    return _bn(x, c.bn_name) if c.bn_name else x


def _bn(x, name: str):
    return layers.BatchNormalization(momentum=BN_MOMENTUM_KERAS, epsilon=BN_EPS, name=name)(x)


def _dense(x, lin: specs.Linear, weight_decay: float):
    return layers.Dense(lin.cout, kernel_regularizer=_regularizer(weight_decay), name=lin.name)(x)


def _vgg(inputs, plan: specs.VGGPlan, weight_decay: float):
    x = inputs
    for i, c in enumerate(plan.convs):
        x = _conv_bn(x, c, weight_decay)
        x = layers.ReLU(name=f"{c.name}_relu")(x)
        if i in plan.pool_after:
            x = layers.MaxPool2D(2, name=f"features.{i}_pool")(x)
            if plan.pool_dropout:
                x = layers.Dropout(plan.pool_dropout, name=f"features.{i}_drop")(x)
    # (H, W, C) order; tensorflow_impl.weights permutes fc1's kernel to the neutral (C, H, W) order
    x = layers.Flatten(name="flatten")(x)
    for lin in plan.hidden:
        x = _dense(x, lin, weight_decay)
        if lin.bn_name:
            x = _bn(x, lin.bn_name)
        x = layers.ReLU(name=f"{lin.name}_relu")(x)
        if plan.fc_dropout:
            x = layers.Dropout(plan.fc_dropout, name=f"{lin.name}_drop")(x)
    return _dense(x, plan.classifier, weight_decay)


def _basic_block(x, blk: specs.Block, weight_decay: float):
    out = _conv_bn(x, blk.conv1, weight_decay)
    out = layers.ReLU(name=f"{blk.conv1.name}_relu")(out)
    out = _conv_bn(out, blk.conv2, weight_decay)
    shortcut = _conv_bn(x, blk.shortcut, weight_decay) if blk.shortcut else x
    out = layers.Add(name=f"{blk.name}_add")([out, shortcut])
    return layers.ReLU(name=f"{blk.name}_relu")(out)


def _bottleneck(x, blk: specs.Block, weight_decay: float):
    out = x
    for c in blk.convs:
        out = _conv_bn(out, c, weight_decay)
        if c is not blk.conv3:
            out = layers.ReLU(name=f"{c.name}_relu")(out)
    shortcut = _conv_bn(x, blk.shortcut, weight_decay) if blk.shortcut else x
    out = layers.Add(name=f"{blk.name}_add")([out, shortcut])
    return layers.ReLU(name=f"{blk.name}_relu")(out)


def _resnet(inputs, plan: specs.ResNetPlan, weight_decay: float):
    x = _conv_bn(inputs, plan.stem, weight_decay)
    x = layers.ReLU(name=f"{plan.stem.name}_relu")(x)
    if plan.stem_pool:
        # PyTorch pads its max-pool with -inf; after a ReLU every value is >= 0, so zeros pick the same maxima
        x = layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = layers.MaxPool2D(3, 2, name="stem_pool")(x)
    for blk in plan.blocks:
        x = (_bottleneck if blk.conv3 else _basic_block)(x, blk, weight_decay)
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    if plan.head_fc is not None:  # a transfer-learning head: FC, ReLU, dropout
        x = layers.ReLU(name="head_fc_relu")(_dense(x, plan.head_fc, weight_decay))
        if plan.head_dropout:
            x = layers.Dropout(plan.head_dropout, name="head_fc_drop")(x)
    return _dense(x, plan.fc, weight_decay)


def build(arch: str, num_classes: int = 10, width: float = 1.0, widths=None, weight_decay: float = 0.0,
          head: specs.Head | None = None):
    """Build ``arch`` from the shared spec; ``widths`` (e.g. from a structured prune) overrides ``width``.

    ``weight_decay`` > 0 puts ``L2(keras_l2_factor(weight_decay))`` on every conv and dense kernel (never on
    biases or BN), the Keras equivalent of ``torch.optim.SGD(weight_decay=...)``.
    """
    resolved = specs.resolve_widths(arch, width, widths)
    plan = specs.plan(arch, num_classes, widths=resolved, head=head)
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    inputs = keras.Input((plan.input_hw, plan.input_hw, specs.INPUT_CHANNELS), dtype="float32", name="input")
    logits = (_vgg if isinstance(plan, specs.VGGPlan) else _resnet)(inputs, plan, weight_decay)
    model = keras.Model(inputs, logits, name=arch)
    model.arch, model.widths, model.plan = arch, resolved, plan
    return model


def parameter_variables(model) -> list:
    """The variables PyTorch calls parameters: kernels, biases, BN gamma/beta; not BN moving statistics.

    Found by attribute on every (nested) layer, so a frozen layer's weights still count and variables that
    wrappers add (e.g. tfmot pruning masks and thresholds) do not.
    """
    seen, out = set(), []
    for layer in [model, *model.submodules]:
        for attr in ("kernel", "bias", "gamma", "beta"):
            v = getattr(layer, attr, None)
            if v is not None and hasattr(v, "shape") and hasattr(v, "numpy") and id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out


def count_params(model) -> int:
    """Same definition as ``pytorch_impl.models.count_params`` (= ``shared.specs.count_params``)."""
    return sum(int(np.prod(v.shape)) for v in parameter_variables(model))


def count_nonzero(model) -> int:
    return sum(int(np.count_nonzero(v.numpy())) for v in parameter_variables(model))


def count_macs(model) -> int:
    """Conv and dense multiply-accumulates for one image, from the built layers (``shared.specs.count_macs``)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output_shape
            total += int(kh * kw * cin * cout * h * w)
        elif isinstance(layer, layers.Dense):
            cin, cout = layer.kernel.shape
            total += int(cin * cout)
    return total
