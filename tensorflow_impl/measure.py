"""The shared measurement protocol (shared.measure) implemented with Keras."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from shared import specs
from shared.measure import MeasureProtocol, file_sizes, latency_stats, model_row
from . import models
from .train import evaluate


def cpu_latency(model, protocol: MeasureProtocol) -> dict[str, float]:
    """Inference latency through a traced tf.function (Keras' serving path), on the CPU.

    The intra-op thread count is fixed once per process (TensorFlow cannot change it after start-up):
    ``tensorflow_impl.configure_threads`` sets it to the protocol's value before the suite runs.
    """
    infer = tf.function(lambda x: model(x, training=False))
    out = {}
    with tf.device("/CPU:0"):
        for bs in protocol.latency_batch_sizes:
            x = tf.constant(np.random.default_rng(0).standard_normal((bs, specs.INPUT_HW, specs.INPUT_HW, 3), np.float32))
            for _ in range(protocol.warmup):
                infer(x).numpy()
            times = []
            for _ in range(protocol.repeats):
                t0 = time.perf_counter()
                infer(x).numpy()  # .numpy() waits for the result
                times.append(time.perf_counter() - t0)
            out.update(latency_stats(times, bs))
    return out


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


def measure(model, dataset, protocol: MeasureProtocol, eval_batch_size: int = 500) -> dict:
    return model_row(test_acc=evaluate(model, dataset.test, eval_batch_size)[1], plan=model.plan,
                     params_total=models.count_params(model), params_nonzero=models.count_nonzero(model),
                     sizes=artifact_sizes(model, protocol), latency=cpu_latency(model, protocol))
