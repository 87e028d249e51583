"""Keras <-> framework-neutral state (shared.state).

Layer names already are the canonical names; only layouts and BN variable names differ:
  conv kernel   Keras HWIO     <-> neutral OIHW        (conventions.NEUTRAL_CONV_LAYOUT)
  dense kernel  Keras (in, out) <-> neutral (out, in)  (conventions.NEUTRAL_LINEAR_LAYOUT)
  BN            gamma, beta, moving_mean, moving_variance <-> weight, bias, running_mean, running_var
  flatten FC    Keras rows in (H, W, C) order <-> neutral columns in (C, H, W) order (``Linear.spatial``)
"""
from __future__ import annotations

import numpy as np

from shared import specs
from shared import state as neutral

from . import require_tf_keras

keras = require_tf_keras()

# Keras BN attribute -> neutral suffix, in shared.state.BN_SUFFIXES order.
_BN_VARS = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"), ("moving_variance", "running_var"))
_OIHW_TO_HWIO = (2, 3, 1, 0)
_HWIO_TO_OIHW = (3, 2, 0, 1)


def _pairs(model):
    """Yield (neutral key, keras variable, keras->neutral transform, neutral->keras transform)."""
    plan = model.plan
    ident = lambda a: a  # noqa: E731

    def bn(name):
        layer = model.get_layer(name)
        for attr, suffix in _BN_VARS:
            yield f"{name}.{suffix}", getattr(layer, attr), ident, ident

    for c in specs.convs_of(plan):
        layer = model.get_layer(c.name)
        yield f"{c.name}.weight", layer.kernel, lambda a: a.transpose(_HWIO_TO_OIHW), lambda a: a.transpose(_OIHW_TO_HWIO)
        if c.bias:
            yield f"{c.name}.bias", layer.bias, ident, ident
        if c.bn_name:
            yield from bn(c.bn_name)
    for lin in specs.linears_of(plan):
        layer = model.get_layer(lin.name)
        if lin.spatial > 1:
            yield f"{lin.name}.weight", layer.kernel, *_flatten_dense_transforms(lin)
        else:
            yield f"{lin.name}.weight", layer.kernel, np.transpose, np.transpose
        yield f"{lin.name}.bias", layer.bias, ident, ident
        if lin.bn_name:
            yield from bn(lin.bn_name)


def _flatten_dense_transforms(lin):
    """(keras -> neutral, neutral -> keras) for a Dense that reads a flattened HxWxC map."""
    return (lambda k: neutral.flatten_dense_to_neutral(k, lin)), (lambda w: neutral.flatten_dense_to_nhwc(w, lin))


def export_state(model) -> dict[str, np.ndarray]:
    """Keras model -> neutral state (float32, PyTorch layouts, canonical names in PyTorch state_dict order)."""
    return {
        key: np.ascontiguousarray(to_neutral(var.numpy()), dtype=np.float32)
        for key, var, to_neutral, _ in _pairs(model)
    }


def import_state(model, state: dict):
    """Load a neutral state into ``model`` (built for the same spec); validates names and shapes first."""
    neutral.validate(state, model.plan)
    updates = []
    for key, var, _, to_keras in _pairs(model):
        value = np.ascontiguousarray(to_keras(np.asarray(state[key], dtype=np.float32)))
        if tuple(value.shape) != tuple(var.shape):  # the spec and the built model disagree: a bug, not bad input
            raise ValueError(f"{key}: keras variable {var.name} has shape {tuple(var.shape)}, got {value.shape}")
        updates.append((var, value))
    keras.backend.batch_set_value(updates)
    return model
