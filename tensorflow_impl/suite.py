"""Entry point of the Keras suite as an importable function."""
from __future__ import annotations

import tensorflow as tf

from shared import provenance
from shared.runner import run_suite
from .backend import KerasBackend

FRAMEWORK = KerasBackend.name


def configure_threads(threads: int) -> None:
    """TensorFlow fixes its pools at first use: intra-op to the protocol's count, inter-op to 1 (its default
    can oversubscribe 2 cores), before any op runs."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised (e.g. inside a test session): keep what is there
        pass


def environment(threads: int) -> dict:
    gpus = tf.config.list_physical_devices("GPU")
    device = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "gpu") if gpus else "cpu"
    env = provenance.environment(FRAMEWORK, device, threads)
    env["intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
    env["inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    return env


def timing_backend(threads: int):
    from .timing import KerasTiming

    return KerasTiming(threads)


def backend(preset, threads: int | None = None) -> KerasBackend:
    configure_threads(threads or preset.measure.threads)
    return KerasBackend(preset.recipe.weight_decay)


def run(preset, out_dir, threads: int | None = None, **kwargs) -> list[dict]:
    """``threads``: TensorFlow's intra-op threads (an executor's cell on N CPUs); default the protocol's."""
    return run_suite(backend(preset, threads), preset, out_dir,
                     environment=lambda: environment(threads or preset.measure.threads), **kwargs)
