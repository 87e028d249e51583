"""bf16 training compute for an fp32 Keras model, switched on for ``fit`` and off again.

Keras' ``mixed_bfloat16`` policy is fixed when a layer is built: its variables become ``AutoCastVariable``s
and every call casts. The suites build every model in fp32 (evaluation, conversion, saving and the masks all
see plain fp32 variables), so for training the policy is applied to the built model instead: each layer
computes in bf16 and reads its kernel and bias through an ``AutoCastVariable`` that wraps the same fp32
variable (master weights stay fp32; the optimizer, the L2 regulariser and the pruning masks keep working on
the variables they already hold). The layers that produce a model's outputs stay fp32, so logits and loss
are fp32 as in PyTorch, where the loss is computed on ``logits.float()``. BatchNormalization computes its
statistics in fp32 under a mixed policy (Keras casts its bf16 input up), as PyTorch's autocast does.
"""
from __future__ import annotations

import contextlib

from tf_keras import mixed_precision
from tf_keras.src.mixed_precision import autocast_variable

MIXED = "mixed_bfloat16"
_WRAPPED_ATTRS = ("kernel", "bias", "depthwise_kernel")


def _output_layers(model) -> set[int]:
    """ids of the layers whose outputs are the outputs of ``model`` or of a model nested in it."""
    out = set()
    for m in [model, *(layer for layer in model._flatten_layers(include_self=False) if hasattr(layer, "outputs"))]:
        for t in getattr(m, "outputs", None) or ():
            history = getattr(t, "_keras_history", None)
            if history is not None:
                out.add(id(history.layer))
    return out


@contextlib.contextmanager
def bf16_compute(model, enabled: bool = True):
    """Inside: ``model`` (and any model nested in it, a distiller's student and teacher) computes in bf16
    with fp32 variables. ``model.compile`` must run inside, so ``fit`` traces the bf16 graph; any function
    traced outside (evaluation) stays fp32."""
    if not enabled:
        yield
        return
    keep_fp32 = _output_layers(model)
    policy = mixed_precision.Policy(MIXED)
    saved: list = []
    try:
        for layer in model._flatten_layers(include_self=False):
            if id(layer) in keep_fp32 or not layer.dtype_policy.compute_dtype == "float32" or hasattr(layer, "layers"):
                continue  # outputs stay fp32; nested models are walked through their own layers
            attrs = {a: getattr(layer, a) for a in _WRAPPED_ATTRS if getattr(layer, a, None) is not None}
            saved.append((layer, layer._dtype_policy, attrs))
            layer._set_dtype_policy(policy)
            for a, variable in attrs.items():
                # object.__setattr__: Keras' own __setattr__ would track the wrapper as a new weight
                object.__setattr__(layer, a, autocast_variable.create_autocast_variable(variable))
        yield
    finally:
        for layer, old_policy, attrs in reversed(saved):
            layer._set_dtype_policy(old_policy)
            for a, variable in attrs.items():
                object.__setattr__(layer, a, variable)


@contextlib.contextmanager
def fp32_compute(model):
    """Inside ``bf16_compute``: fp32 again for a while (the per-epoch validation)."""
    layers = [(layer, layer._dtype_policy) for layer in model._flatten_layers(include_self=False)
              if layer.dtype_policy.name == MIXED]
    attrs = [(layer, a, getattr(layer, a)) for layer, _ in layers for a in _WRAPPED_ATTRS
             if isinstance(getattr(layer, a, None), autocast_variable.AutoCastVariable)]
    try:
        for layer, _ in layers:
            layer._set_dtype_policy("float32")
        for layer, a, wrapper in attrs:
            object.__setattr__(layer, a, wrapper._variable)
        yield
    finally:
        for layer, policy in layers:
            layer._set_dtype_policy(policy)
        for layer, a, wrapper in attrs:
            object.__setattr__(layer, a, wrapper)
