"""The shared measurement protocol (shared.measure) implemented with Keras."""
from __future__ import annotations

import tempfile
from pathlib import Path

import tf_keras as keras

from shared.measure import MeasureProtocol, file_sizes, model_row
from . import models
from .train import evaluate


def artifact_sizes(model, protocol: MeasureProtocol) -> dict[str, int]:
    """Size of Keras' standard artifact: the native .keras file written by model.save."""
    # An uncompiled clone: the artifact holds architecture and weights, not optimizer slots, like the
    # state_dict PyTorch's size is measured on.
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        clone.save(path)
        return file_sizes(path, protocol.gzip_level)


def split_accuracy(model, split, batch_size: int) -> float | None:
    return evaluate(model, split, batch_size)[1] if len(split) else None


def measure(model, dataset, protocol: MeasureProtocol, eval_batch_size: int = 500) -> dict:
    return model_row(test_acc=split_accuracy(model, dataset.test, eval_batch_size),
                     val_acc=split_accuracy(model, dataset.val, eval_batch_size), plan=model.plan,
                     params_total=models.count_params(model), params_nonzero=models.count_nonzero(model),
                     sizes=artifact_sizes(model, protocol))
