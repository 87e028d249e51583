"""The Keras side of the timing pass (``shared.timing``): ``.keras`` on TensorFlow, ``.tflite`` on LiteRT.

TensorFlow's intra-op pool = the protocol's threads and its inter-op pool 1 (its default inter-op pool
can oversubscribe 2 cores), both fixed before any op runs; LiteRT runs XNNPACK with the same thread count.
"""
from __future__ import annotations

import tensorflow as tf

from shared import provenance
from . import artifacts


class KerasTiming:
    name = "keras"

    def __init__(self, threads: int):
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already initialised (inside a test session): recorded as it is
            pass
        self._threads = threads

    def runner(self, sidecar, runtime, artifacts_dir, threads):
        return artifacts.runner(sidecar, runtime, artifacts_dir, threads)

    def threads(self) -> dict:
        return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                "litert_threads": self._threads, "layout": "NHWC"}

    def environment(self) -> dict:
        return provenance.environment(self.name, "cpu", self._threads)
