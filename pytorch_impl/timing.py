"""The PyTorch side of the timing pass (``shared.timing``): artifacts reloaded and called eagerly on the CPU.

Model and input are both channels_last NCHW (the faster layout for fbgemm's int8 convs and oneDNN's fp32
ones, ``benchmarks/pt_quant_latency.py``); intra-op threads = the protocol's, inter-op 1, pinned before
anything runs.
"""
from __future__ import annotations

import numpy as np
import torch

from shared import onnx_runtime, provenance
from . import artifacts

RUNTIMES = (artifacts.RUNTIME, onnx_runtime.RUNTIME)


class EagerRunner:
    def __init__(self, module: torch.nn.Module):
        self.module = module

    def make_input(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous(
            memory_format=torch.channels_last)

    def __call__(self, x: torch.Tensor):
        with torch.inference_mode():
            return self.module(x)


class TorchTiming:
    name = "pytorch"

    def __init__(self, threads: int):
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already started (inside a test session): record what it is
            pass
        self._threads = threads

    def runner(self, sidecar, runtime, artifacts_dir, threads):
        if runtime not in RUNTIMES:
            raise ValueError(f"the PyTorch suite has no runtime {runtime!r}")
        if runtime == onnx_runtime.RUNTIME:
            return onnx_runtime.runner(sidecar, artifacts_dir, threads)
        return EagerRunner(artifacts.load(sidecar, artifacts_dir))

    def threads(self) -> dict:
        return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads(),
                "layout": "channels_last (model and input)"}

    def environment(self) -> dict:
        return provenance.environment(self.name, "cpu", self._threads)
