"""PyTorch artifacts (``shared.artifacts``): every measured model as ``torch.save``d tensors, reloaded with
``weights_only=True`` (no pickle of code) into the network rebuilt from the sidecar's width spec.

Forms: ``fp32`` (a ``models.build`` network), ``int8_pt2e`` (torchao PT2E int8 from PTQ or QAT: the file is
the prepared program's state, float weights plus the calibrated observers or trained fake quantizers, from
which the same quantize and convert steps rebuild the identical int8 program on a fresh network; an exported
``.pt2`` would need ``torch.export.load``, which falls back to unpickling), ``int8_dynamic``
(``quantize_dynamic`` of Linear layers), ``bf16_autocast`` (the fp32 state, run under CPU bf16 autocast)
and ``simulated`` (BN-folded Qm.n fake quantization: float arithmetic, not timed).

Runtimes: ``pytorch-eager`` for fp32, bf16 and dynamic int8; ``pytorch-inductor`` (``compiled``) for fp32,
bf16 and PT2E int8 (the only runtime of int8 rows: their uncompiled program simulates int8 in float); every
fp32 network is also exported to ONNX (``onnx_export``) for the shared ONNX Runtime runtime.

``pytorch-inductor`` is PyTorch's deployment runtime, the one its report tables use (as LiteRT is Keras's);
``int8_dynamic`` exists in eager PyTorch only, so its rows are timed there, against the eager fp32 baseline.
"""
from __future__ import annotations

from pathlib import Path

import torch

from shared import onnx_runtime
from shared.artifacts import write_atomic
from shared.backend import Quantized
from . import compiled, models, onnx_export, quantization as Q

RUNTIME = "pytorch-eager"
PRECISION = {"fp32": "fp32", "int8_pt2e": "int8", "int8_dynamic": "int8 (Linear only)",
             "bf16_autocast": "bf16", "simulated": "fixed point (simulated)"}
RUNTIMES_OF = {"fp32": (RUNTIME, compiled.RUNTIME), "bf16_autocast": (RUNTIME, compiled.RUNTIME),
               "int8_pt2e": (compiled.RUNTIME,), "int8_dynamic": (RUNTIME,)}


def save(artifact, stem: Path) -> dict[str, dict]:
    form, model = (artifact.form, artifact.model) if isinstance(artifact, Quantized) else ("fp32", artifact)
    if form not in PRECISION:
        raise ValueError(f"unknown PyTorch artifact form {form!r}: one of {', '.join(PRECISION)}")
    extra = {}
    if form == "bf16_autocast":
        state = model.model.state_dict()  # the wrapped fp32 network: autocast casts its weights per call
    elif form == "int8_pt2e":
        state, extra = model.pt2e_state, dict(model.pt2e_recipe)
    else:
        state = model.state_dict()
    path = stem.with_name(stem.name + ".pt")
    write_atomic(path, lambda tmp: torch.save(state, tmp))
    entry = {"file": path.name, "form": form, "precision": PRECISION[form], **extra}
    if form == "simulated":
        return {"none": {**entry, "reason": "simulated fixed point: fake quantization in float32, no runtime "
                                            "executes Qm.n arithmetic, so its latency would mean nothing"}}
    runtimes = {runtime: entry for runtime in RUNTIMES_OF[form]}
    if form == "fp32":  # every float network also runs on ONNX Runtime (the runtime both frameworks share)
        onnx_path = stem.with_name(stem.name + ".onnx")
        runtimes[onnx_runtime.RUNTIME] = onnx_runtime.exported(lambda: onnx_export.export(model, onnx_path))
    return runtimes


def load(sidecar: dict, artifacts_dir: Path, runtime: str = RUNTIME) -> torch.nn.Module:
    """The eval-mode module of a sidecar's PyTorch artifact on ``runtime`` (compiled on pytorch-inductor)."""
    entry = sidecar["runtimes"][runtime]
    state = torch.load(Path(artifacts_dir) / entry["file"], weights_only=True, map_location="cpu")
    fresh = models.build(sidecar["arch"], widths=sidecar["widths"]).eval()
    form = entry["form"]
    if form == "int8_pt2e":
        if entry["flow"] == "qat":
            module = Q.rebuild_qat(fresh, state)
        else:
            module = Q.rebuild_static(fresh, entry["observer"], state)
    else:
        module = Q.quantize_dynamic_linear(fresh) if form == "int8_dynamic" else fresh
        module.load_state_dict(state, strict=True)
        module = module.to(memory_format=torch.channels_last).eval()
        module = Q.Autocast(module) if form == "bf16_autocast" else module
    if runtime == compiled.RUNTIME:
        return compiled.Compiled(module).warm_up(Q.example_inputs(1)[0])
    return module.eval()
