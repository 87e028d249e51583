"""Holding unstructured masks on a Keras model, and the sparse (CSR) artifact's size.

Which weights are masked is decided in ``shared.masks`` (neutral layout); here the masks are transposed to
Keras' kernel layout and multiplied into the kernels after every optimizer step. tfmot's pruning wrappers
are not used: they recompute masks from the raw kernels, so pruned weights could grow back, and offer
polynomial decay per layer only; holding the shared masks makes both suites prune the same weights.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from shared import pruning_rules as rules
from shared.measure import file_sizes
from .weights import export_state


def to_keras_layout(mask: np.ndarray) -> np.ndarray:
    """Neutral OIHW / (out, in) -> Keras HWIO / (in, out) (see tensorflow_impl.weights)."""
    return mask.transpose(2, 3, 1, 0) if mask.ndim == 4 else mask.T


class Masker:
    """Keep-masks on the prunable kernels of a model, applied in one traced call."""

    def __init__(self, model):
        self.kernels = {name: model.get_layer(name).kernel for name in rules.prunable_layer_names(model.arch)}
        self.masks: dict[str, tf.Variable] = {}
        self._apply = None

    def set(self, masks) -> None:
        for name, keep in masks.items():
            value = to_keras_layout(keep).astype(np.float32)
            if name in self.masks:
                self.masks[name].assign(value)
            else:
                self.masks[name] = tf.Variable(value, trainable=False)
        self.apply()

    def apply(self) -> None:
        if self._apply is None:  # traced once: masks are variables, so new masks need no retrace
            pairs = [(self.kernels[name], mask) for name, mask in self.masks.items()]

            @tf.function
            def apply_all():
                for kernel, mask in pairs:
                    kernel.assign(kernel * mask)

            self._apply = apply_all
        self._apply()


def sparse_state(model) -> dict[str, np.ndarray]:
    """The neutral state with every prunable weight as 2-D (out, -1) CSR parts: float32 values, int32 indices.

    The same matrices and index width as PyTorch's sparse artifact (int32, as scipy and cuSPARSE use);
    ``<key>.shape`` keeps the dense shape so the weight can be rebuilt.
    """
    state = export_state(model)
    out = {}
    for key, value in state.items():
        if key not in rules.prunable_weight_keys(model.arch):
            out[key] = value
            continue
        rows = value.reshape(value.shape[0], -1)
        nz_rows, cols = np.nonzero(rows)  # row-major order: CSR order
        out[f"{key}.values"] = rows[nz_rows, cols].astype(np.float32)
        out[f"{key}.col_indices"] = cols.astype(np.int32)
        per_row = np.bincount(nz_rows, minlength=rows.shape[0])
        out[f"{key}.crow_indices"] = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int32)
        out[f"{key}.shape"] = np.asarray(value.shape, dtype=np.int32)
    return out


def dense_from_sparse(sparse: dict, key: str) -> np.ndarray:
    """Rebuild one dense neutral weight from its CSR parts."""
    shape = tuple(int(d) for d in sparse[f"{key}.shape"])
    crow, cols, values = sparse[f"{key}.crow_indices"], sparse[f"{key}.col_indices"], sparse[f"{key}.values"]
    rows = np.zeros((shape[0], int(np.prod(shape[1:]))), dtype=np.float32)
    rows[np.repeat(np.arange(shape[0]), np.diff(crow)), cols] = values
    return rows.reshape(shape)


def sparse_sizes(model, gzip_level: int) -> dict[str, int]:
    """Size of the sparse artifact: the CSR parts in a safetensors file (no pickle), and its gzip size."""
    from safetensors.numpy import save_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file(sparse_state(model), str(path))
        sizes = file_sizes(path, gzip_level)
    return {"size_sparse_bytes": sizes["size_bytes"], "size_sparse_gzip_bytes": sizes["size_gzip_bytes"]}
