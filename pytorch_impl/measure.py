"""The shared measurement protocol (shared.measure) implemented with PyTorch."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from shared.measure import MeasureProtocol, file_sizes, model_row
from . import models
from .train import evaluate


def artifact_sizes(model: torch.nn.Module, protocol: MeasureProtocol) -> dict[str, int]:
    """Size of PyTorch's standard artifact: the state_dict written by torch.save."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        torch.save(model.state_dict(), path)
        return file_sizes(path, protocol.gzip_level)


def split_accuracy(model: torch.nn.Module, split, batch_size: int, device=None) -> float | None:
    return evaluate(model, split, batch_size, device=device)[1] if len(split) else None


def measure(model: torch.nn.Module, dataset, protocol: MeasureProtocol, eval_batch_size: int = 500) -> dict:
    return model_row(test_acc=split_accuracy(model, dataset.test, eval_batch_size),
                     val_acc=split_accuracy(model, dataset.val, eval_batch_size), plan=model.plan,
                     params_total=models.count_params(model), params_nonzero=models.count_nonzero(model),
                     sizes=artifact_sizes(model, protocol))
