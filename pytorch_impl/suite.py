"""Entry point of the PyTorch suite as an importable function."""
from __future__ import annotations

import torch

from shared import provenance
from shared.runner import run_suite
from .backend import TorchBackend
from .train import pick_device

FRAMEWORK = TorchBackend.name


def environment(threads: int) -> dict:
    device = pick_device()
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    return provenance.environment(FRAMEWORK, name, threads)


def timing_backend(threads: int):
    from .timing import TorchTiming

    return TorchTiming(threads)


def backend(preset) -> TorchBackend:
    return TorchBackend()


def run(preset, out_dir, threads: int | None = None, **kwargs) -> list[dict]:
    """``threads``: torch's intra-op threads for training (an executor's cell on N CPUs); default torch's own."""
    if threads:
        torch.set_num_threads(threads)
    return run_suite(backend(preset), preset, out_dir,
                     environment=lambda: environment(threads or preset.measure.threads), **kwargs)
