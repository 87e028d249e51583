"""The small interface each suite implements with its own framework; every technique driver calls only this.

The drivers (``shared.drivers``) hold the protocols: which weights to prune, which budget, which calibration
images, what a row records. A backend holds primitives: build a network from a width spec, move weights
through the neutral state, train with the shared recipe, hold masks, remove filters, quantize with its
toolchain and measure. A difference between two rows can then only come from those primitives, that is,
from the framework.

Models are the framework's own objects and carry ``.arch``, ``.widths`` and ``.plan`` (``shared.specs``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import numpy as np


@dataclass
class Quantized:
    """A model from a backend's quantizer or reduced-precision path, ready to be measured.

    ``model`` is what runs (a converted framework module, a flatbuffer, a wrapped float model); ``facts``
    are what the toolchain did (int8 layer count, runtime, activation bits, notes), copied into the row.
    """

    model: object
    facts: dict = field(default_factory=dict)
    form: str = ""  # how the backend saves and reloads it as an artifact (its ``save_artifacts``)


class Masker(Protocol):
    """Holds unstructured keep-masks (neutral layout) on a model's prunable weights."""

    def set(self, masks: dict[str, np.ndarray]) -> None: ...  # new masks, applied at once

    def apply(self) -> None: ...  # zero the masked weights again (after every optimizer step)


StepHook = Callable[[int, int], None]  # (0-based step, total steps), called after every optimizer step


class Backend(Protocol):
    name: str  # "pytorch" or "keras": the row's framework and the checkpoints' prefix

    # networks and weights
    def build(self, arch: str, *, width: float | None = None, widths=None, seed: int | None = None,
              num_classes: int = 10, head=None): ...  # head: a ``specs.Head`` replacing a ResNet's FC
    def export_state(self, model) -> dict[str, np.ndarray]: ...
    # optional ``read_torch_file(path) -> {name: array}``: a torch state_dict file read without unpickling
    # code (the PyTorch suite; ``--pretrained`` .pth files)
    def end_cell(self) -> None: ...  # release what a finished cell built (Keras: its global graph state)
    # optional ``restart_above_mib``: between cells, a process above this resident size restarts itself
    # (``runner.RestartForMemory``); absent or None: never
    def import_state(self, model, state: dict): ...

    # training and evaluation (the shared recipe; ``steps`` overrides epochs x steps per epoch; with
    # ``checkpoints`` (``shared.resume``) a training longer than one epoch keeps every epoch and resumes)
    def train(self, model, dataset, recipe, seed: int, *, label: str, steps: int | None = None,
              on_step: StepHook | None = None, teacher=None, temperature: float | None = None,
              alpha: float | None = None, checkpoints=None, frozen_backbone: bool = False) -> dict: ...
    # frozen_backbone: only ``specs.head_modules`` train; the backbone's BN layers run in inference mode
    def evaluate(self, model, split, batch_size: int) -> tuple[float, float]: ...
    def recalibrate_bn(self, model, x_uint8: np.ndarray, batch_size: int) -> None: ...
    def measure(self, model, dataset, protocol, eval_batch_size: int) -> dict: ...

    # pruning
    def masker(self, model) -> Masker: ...
    def sparse_sizes(self, model, gzip_level: int) -> dict[str, int]: ...
    def prune_filters(self, model, ratios_per_layer) -> tuple[object, dict[str, list[int]]]: ...

    # quantization and reduced precision (calibration: normalised NHWC float32 batches from the val split)
    def quantize_dynamic(self, model) -> Quantized: ...
    def quantize_static(self, model, observer: str, calibration: Iterable[np.ndarray]) -> Quantized: ...
    def prepare_qat(self, model, calibration: Iterable[np.ndarray]): ...  # ranges calibrated on the images
    def qat_activation_ranges(self, prepared) -> dict[str, tuple[float, float]]: ...  # at the shared points
    def convert_qat(self, prepared) -> Quantized: ...
    def reduced_precision(self, model) -> Quantized: ...
    def fixed_point(self, model, bits: int, calibration: Iterable[np.ndarray]) -> Quantized: ...
    def measure_quantized(self, quantized: Quantized, reference, ctx, cell) -> dict: ...

    # ONNX: a float network exported to ``path`` and checked against this framework (shared.onnx_runtime.entry)
    def export_onnx(self, model, path) -> dict: ...
    onnx_toolchain: object  # shared.onnx_runtime (quantize_static, accuracy): ORT's, whichever framework

    # artifacts: a model or Quantized saved as ``stem.<ext>`` files, {runtime: {"file", "form", "precision"}}
    def save_artifacts(self, artifact, stem) -> dict[str, dict]: ...
