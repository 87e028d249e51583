"""PyTorch models to ONNX (``shared.onnx_runtime``): torch's exporter (the torch.export-based one, the
default since 2.9), opset 17, a dynamic batch dimension, one file, checked against eager PyTorch."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch

from shared import onnx_runtime
from shared.artifacts import write_atomic

EXPORTER = f"torch.onnx.export (dynamo), torch {torch.__version__}"


def export(model: torch.nn.Module, path: Path) -> dict:
    """Write ``model`` (float) as ``path``; return its sidecar entry (layout NCHW)."""
    model = model.to("cpu").eval()
    hw = model.plan.input_hw
    example = torch.zeros(2, 3, hw, hw)  # a batch of 2: a batch of 1 would be specialised into the graph
    batch = torch.export.Dim("batch", min=1, max=1024)
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates its steps
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=onnx_runtime.OPSET,
                                    input_names=["x"], output_names=["logits"],
                                    dynamic_shapes={"x": {0: batch}}, verbose=False)
    write_atomic(path, lambda tmp: program.save(tmp, external_data=False))
    probe = onnx_runtime.probe_batch(hw=hw)
    with torch.no_grad():
        source = model(torch.from_numpy(probe).permute(0, 3, 1, 2).contiguous()).numpy()
    return onnx_runtime.entry(path, "onnx_fp32", "fp32", "NCHW", EXPORTER,
                              onnx_runtime.parity(path, "NCHW", source, probe))
