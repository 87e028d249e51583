"""PyTorch artifacts (``shared.artifacts``): every measured model as a ``torch.save``d state_dict, reloaded
with ``weights_only=True`` (no pickle of code) into the network rebuilt from the sidecar's width spec.

Forms: ``fp32`` (a ``models.build`` network), ``int8_static`` (FX x86 int8 from PTQ or QAT: the same
converted graph, rebuilt by converting a fresh network and loading the saved scales and int8 weights over
it), ``int8_dynamic`` (``quantize_dynamic`` of Linear layers), ``bf16_autocast`` (the fp32 state, run under
CPU bf16 autocast) and ``simulated`` (BN-folded Qm.n fake quantization: float arithmetic, not timed).
Every fp32 network is also exported to ONNX (``onnx_export``) for the shared ONNX Runtime runtime.
"""
from __future__ import annotations

from pathlib import Path

import torch

from shared import onnx_runtime, specs
from shared.artifacts import write_atomic
from shared.backend import Quantized
from . import models, onnx_export, quantization as Q

RUNTIME = "pytorch-eager"
PRECISION = {"fp32": "fp32", "int8_static": "int8", "int8_dynamic": "int8 (Linear only)",
             "bf16_autocast": "bf16", "simulated": "fixed point (simulated)"}


def save(artifact, stem: Path) -> dict[str, dict]:
    form, model = (artifact.form, artifact.model) if isinstance(artifact, Quantized) else ("fp32", artifact)
    if form not in PRECISION:
        raise ValueError(f"unknown PyTorch artifact form {form!r}: one of {', '.join(PRECISION)}")
    if form == "bf16_autocast":
        model = model.model  # the wrapped fp32 network: autocast casts its weights per call
    path = stem.with_name(stem.name + ".pt")
    write_atomic(path, lambda tmp: torch.save(model.state_dict(), tmp))
    entry = {"file": path.name, "form": form, "precision": PRECISION[form]}
    if form == "simulated":
        return {"none": {**entry, "reason": "simulated fixed point: fake quantization in float32, no runtime "
                                            "executes Qm.n arithmetic, so its latency would mean nothing"}}
    runtimes = {RUNTIME: entry}
    if form == "fp32":  # every float network also runs on ONNX Runtime (the runtime both frameworks share)
        onnx_path = stem.with_name(stem.name + ".onnx")
        runtimes[onnx_runtime.RUNTIME] = onnx_runtime.exported(lambda: onnx_export.export(model, onnx_path))
    return runtimes


def load(sidecar: dict, artifacts_dir: Path) -> torch.nn.Module:
    """The eval-mode module of a sidecar's ``pytorch-eager`` artifact."""
    entry = sidecar["runtimes"][RUNTIME]
    state = torch.load(Path(artifacts_dir) / entry["file"], weights_only=True, map_location="cpu")
    head = sidecar.get("head")  # sidecars before transfer learning carry neither: 10 classes, no head
    fresh = models.build(sidecar["arch"], num_classes=sidecar.get("num_classes", 10), widths=sidecar["widths"],
                         head=specs.Head(**head) if head else None).eval()
    form = entry["form"]
    if form == "int8_static":
        # the calibration of this throw-away conversion is overwritten: scales, zero points and int8 weights
        # all come from the saved state (strict load: a graph of another shape fails here)
        module = Q.quantize_static(fresh, "minmax", [torch.zeros(1, *Q.example_inputs()[0].shape[1:])])
    elif form == "int8_dynamic":
        module = Q.quantize_dynamic_linear(fresh)
    else:
        module = fresh
    module.load_state_dict(state, strict=True)
    module = Q.Autocast(module) if form == "bf16_autocast" else module
    return module.to(memory_format=torch.channels_last).eval()
