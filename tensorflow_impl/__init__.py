"""TensorFlow/Keras suite of the compression study.

tensorflow-model-optimization supports Keras 2 only, so this package runs on ``tf_keras``. TensorFlow picks
the Keras behind ``tf.keras`` from ``TF_USE_LEGACY_KERAS`` when ``tf.keras`` is first touched, so the variable
is set here, before any module of the package imports TensorFlow. Modules import ``tf_keras as keras`` and
call ``require_tf_keras()`` to fail loudly if ``tf.keras`` nevertheless resolved to Keras 3.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tfmot needs Keras 2 (tf_keras) behind tf.keras
# TensorFlow's C++ logs off unless asked for (--verbose sets 0 before TensorFlow loads): on a CPU machine they
# are notices such as "failed call to cuInit"; real failures raise Python exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_LEGACY_KERAS_HINT = "import tensorflow_impl before tensorflow, or set TF_USE_LEGACY_KERAS=1"


def require_tf_keras():
    """Return ``tf_keras`` after checking that ``tf.keras`` is the same Keras 2 (what tfmot patches/wraps)."""
    import tensorflow as tf
    import tf_keras

    try:
        same = tf.keras.layers.Layer is tf_keras.layers.Layer
    except Exception as exc:  # a broken lazy loader is as fatal as the wrong Keras
        raise ImportError(f"tf.keras could not be loaded ({exc}); {_LEGACY_KERAS_HINT}") from exc
    if not same:
        raise ImportError(
            f"tf.keras is {getattr(tf.keras, '__name__', tf.keras)!r}, not tf_keras (Keras 2), so "
            f"tensorflow-model-optimization cannot wrap these models: {_LEGACY_KERAS_HINT}"
        )
    return tf_keras
