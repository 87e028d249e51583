"""The Keras backend: the primitives the shared drivers call (``shared.backend.Backend``), and nothing else.

Training is ``fit`` on a tf.data pipeline (``train``); quantization and reduced precision go through the
TFLite converter and run on LiteRT (``quantization``, ``tflite``), QAT through tfmot; filter pruning is the
shared rule applied to the neutral state (``structured``; tfmot prunes weights, not filters).
"""
from __future__ import annotations

import numpy as np

from . import require_tf_keras

keras = require_tf_keras()

from shared import onnx_runtime  # noqa: E402
from shared.backend import Quantized  # noqa: E402
from . import artifacts, distill, models, quantization as Q, sparsity, structured, tflite, train as T  # noqa: E402
from .measure import measure  # noqa: E402
from .weights import export_state, import_state  # noqa: E402


class KerasBackend:
    name = "keras"

    def __init__(self, weight_decay: float = 0.0):
        # Keras carries weight decay in the model (an L2 regulariser per kernel, shared.conventions), so
        # every network that may be trained is built with the recipe's.
        self.weight_decay = weight_decay

    # networks and weights
    def build(self, arch, *, width=None, widths=None, seed=None, num_classes=10, head=None):
        if seed is not None:
            keras.utils.set_random_seed(seed)  # the initial weights are part of the seed
        return models.build(arch, num_classes, width=1.0 if width is None else width, widths=widths,
                            weight_decay=self.weight_decay, head=head)

    export_state = staticmethod(export_state)
    import_state = staticmethod(import_state)

    # clear_session (below) slows the growth but does not stop it: 1.8 GiB after the first quick cell, 4.4 GiB
    # after the 95th (5ebe611's quick rows, process_rss_mib). Past this bound the suite restarts its process
    # between cells; ~1 GiB above the first cell's footprint keeps the restarts to a few per quick suite.
    restart_above_mib = 3072

    def end_cell(self) -> None:
        # Keras keeps every layer ever built in its global graph state and name counters; without this a
        # suite's memory grew with each cell (restart_above_mib bounds the rest).
        import gc

        keras.backend.clear_session()
        gc.collect()

    # training and evaluation
    def train(self, model, dataset, recipe, seed, *, label, steps=None, on_step=None, teacher=None,
              temperature=None, alpha=None, checkpoints=None, frozen_backbone=False):
        if teacher is not None:
            teacher.trainable = False  # only ever called in inference mode
            model = distill.Distiller(model, teacher, temperature, alpha, recipe.label_smoothing)
        with T.backbone_frozen(model, frozen_backbone):
            return T.train(model, dataset, recipe, seed, label=label, on_step=on_step, steps=steps,
                           checkpoints=checkpoints)

    evaluate = staticmethod(T.evaluate)
    recalibrate_bn = staticmethod(T.recalibrate_bn)

    measure = staticmethod(measure)

    # pruning
    masker = staticmethod(sparsity.Masker)
    sparse_sizes = staticmethod(sparsity.sparse_sizes)

    def prune_filters(self, model, ratios_per_layer):
        return structured.prune_filters(model, ratios_per_layer, weight_decay=self.weight_decay)

    # quantization and reduced precision: flatbuffers on LiteRT, except the simulated fixed point
    def quantize_dynamic(self, model):
        return Quantized(*Q.dynamic_int8(model), form="tflite_dynamic")

    def quantize_static(self, model, observer, calibration):
        return Quantized(*Q.static_int8(model, observer, list(calibration)), form="tflite_int8")

    def prepare_qat(self, model, calibration):
        return Q.prepare_qat(model, list(calibration))

    qat_activation_ranges = staticmethod(Q.qat_activation_ranges)

    def convert_qat(self, prepared):
        return Quantized(*Q.convert_qat(prepared), form="tflite_int8")

    def reduced_precision(self, model):
        return Quantized(*Q.float16(model), form="tflite_fp16")

    def fixed_point(self, model, bits, calibration):
        fixed, formats = Q.fixed_point_model(model, bits, list(calibration))
        kernels = [fixed.get_layer(name).kernel.numpy() for name in formats["weights"]]
        nonzero = sum(int(np.count_nonzero(k)) for k in kernels) + tflite.non_weight_nonzero(model)
        return Quantized(fixed, {"qmn_formats": formats, "quantized_weights": sum(k.size for k in kernels),
                                 "params_nonzero": nonzero}, form="simulated")

    def measure_quantized(self, quantized, reference, ctx, cell):
        facts = dict(quantized.facts)
        if isinstance(quantized.model, bytes):  # a flatbuffer: measured on LiteRT
            return tflite.measure(quantized.model, reference, ctx, **facts)
        return Q.keras_metrics(quantized.model, reference, ctx, **facts)

    onnx_toolchain = onnx_runtime  # ORT's quantizer and evaluation, the same for both suites

    def export_onnx(self, model, path):
        from .onnx_export import export

        return export(model, path)

    # artifacts
    def save_artifacts(self, artifact, stem):
        return artifacts.save(artifact, stem)
