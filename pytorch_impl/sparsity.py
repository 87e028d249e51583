"""Holding unstructured masks on a PyTorch model, and the sparse (CSR) artifact's size.

Which weights are masked is decided in ``shared.masks``; here masks only become tensors multiplied into
the weights after every optimizer step.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch

from shared import pruning_rules as rules
from shared.measure import file_sizes


class Masker:
    """Keep-masks (neutral layout: OIHW / (out, in), PyTorch's own) on the prunable weights of a model."""

    def __init__(self, model):
        self.weights = {name: model.get_submodule(name).weight for name in rules.prunable_layer_names(model.arch)}
        self.masks: dict[str, torch.Tensor] = {}

    def set(self, masks) -> None:
        self.masks = {name: torch.from_numpy(keep).to(self.weights[name].device, self.weights[name].dtype)
                      for name, keep in masks.items()}
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for name, keep in self.masks.items():
            weight = self.weights[name]
            if keep.device != weight.device:  # train() moved the model after the masks were set
                keep = self.masks[name] = keep.to(weight.device)
            weight.mul_(keep)


def sparse_state_dict(model) -> dict:
    """The state_dict with every prunable weight as a 2-D (out, -1) CSR tensor with int32 indices.

    int32 is what scipy and cuSPARSE use; torch's default int64 indices would make CSR larger than dense
    below ~67% sparsity and hide what a sparse format buys.
    """
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        # PyTorch flags all CSR use as beta; these tensors are only serialised to measure the format's size
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        for key in rules.prunable_weight_keys(model.arch):
            csr = sd[key].reshape(sd[key].shape[0], -1).to_sparse_csr()
            sd[key] = torch.sparse_csr_tensor(csr.crow_indices().to(torch.int32), csr.col_indices().to(torch.int32),
                                              csr.values(), csr.shape, check_invariants=True)
    return sd


def sparse_sizes(model, gzip_level: int) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"  # the dense artifact's name: torch.save prefixes every record with it
        torch.save(sparse_state_dict(model), path)
        sizes = file_sizes(path, gzip_level)
    return {"size_sparse_bytes": sizes["size_bytes"], "size_sparse_gzip_bytes": sizes["size_gzip_bytes"]}
