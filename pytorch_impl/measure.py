"""The shared measurement protocol (shared.measure) implemented with PyTorch."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from shared import specs
from shared.measure import MeasureProtocol, file_sizes, latency_stats, model_row
from . import models
from .train import evaluate


def cpu_latency(model: torch.nn.Module, protocol: MeasureProtocol) -> dict[str, float]:
    """Eval-mode CPU latency at the protocol's batch sizes with the thread count pinned."""
    model = model.to("cpu").eval()
    before = torch.get_num_threads()
    torch.set_num_threads(protocol.threads)
    out = {}
    try:
        with torch.inference_mode():
            for bs in protocol.latency_batch_sizes:
                x = torch.randn(bs, 3, specs.INPUT_HW, specs.INPUT_HW).contiguous(memory_format=torch.channels_last)
                for _ in range(protocol.warmup):
                    model(x)
                times = []
                for _ in range(protocol.repeats):
                    t0 = time.perf_counter()
                    model(x)
                    times.append(time.perf_counter() - t0)
                out.update(latency_stats(times, bs))
    finally:
        torch.set_num_threads(before)
    return out


def artifact_sizes(model: torch.nn.Module, protocol: MeasureProtocol) -> dict[str, int]:
    """Size of PyTorch's standard artifact: the state_dict written by torch.save."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        torch.save(model.state_dict(), path)
        return file_sizes(path, protocol.gzip_level)


def measure(model: torch.nn.Module, dataset, protocol: MeasureProtocol, eval_batch_size: int = 500) -> dict:
    return model_row(test_acc=evaluate(model, dataset.test, eval_batch_size)[1], plan=model.plan,
                     params_total=models.count_params(model), params_nonzero=models.count_nonzero(model),
                     sizes=artifact_sizes(model, protocol), latency=cpu_latency(model, protocol))
