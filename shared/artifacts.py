"""Every cell's measured model, saved under ``OUT/artifacts/`` by cell id, with a JSON sidecar.

The model a driver measured last (``RunContext.measured_model``) goes to the backend's
``save_artifacts`` (the framework-native file, and for Keras also a ``.tflite``) and writes the sidecar,
which says everything needed to load and feed the model without knowing the preset: architecture, width
spec, technique and settings, which file runs on which runtime in which form, and the input convention.
The timing pass (``shared.timing``) reads only these files.

Runtimes (the names rows and reports use):
- ``pytorch-eager``: a PyTorch module called eagerly on the CPU (fp32, x86 int8 modules, bf16 autocast).
- ``tensorflow``: a Keras model called through a traced ``tf.function`` (Keras' serving path).
- ``litert``: a TFLite flatbuffer on the LiteRT interpreter (XNNPACK).
- ``onnxruntime``: an ONNX export on ONNX Runtime's CPU provider, the same runtime for both frameworks
  (``shared.onnx_runtime``): every float network, and TFLite's int8 flatbuffers.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from . import data as data_mod, specs

ARTIFACTS_DIR = "artifacts"

# What every artifact expects as input (both frameworks are fed the same numbers; the layout is each
# runtime's own and is stated per file).
INPUT_CONVENTION = {
    "images": f"RGB, input_hw x input_hw (the sidecar's; {specs.INPUT_HW} for the CIFAR networks, "
              f"{specs.IMAGENET_HW} for the ImageNet ones), uint8 0..255 scaled to float32 as (x - mean) / std",
    "mean": [m * 255 for m in data_mod.MEAN],
    "std": [s * 255 for s in data_mod.STD],
    "layout": {"pytorch-eager": "NCHW tensor in channels_last memory format (model converted to channels_last)",
               "tensorflow": "NHWC float32", "litert": "NHWC float32 (int8 models quantize it inside the call)",
               "onnxruntime": "float32, the exporter's layout (the entry's 'layout': NCHW from PyTorch, NHWC "
                              "from Keras)"},
    "output": "float32 logits, num_classes of them (the sidecar's)",
}


def artifact_dir(out_dir) -> Path:
    return Path(out_dir) / ARTIFACTS_DIR


def sidecar_path(out_dir, cid: str) -> Path:
    return artifact_dir(out_dir) / f"{cid}.json"


def write_atomic(path: Path, write) -> None:
    """``write(tmp_path)`` then rename into place: a killed run leaves the old file or the new one. The temp
    name is unique per process and ends with the real name (Keras checks a ``.keras``/``.weights.h5`` end)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def reference_id(cell) -> str:
    """The cell whose fp32 model every speedup of ``cell`` is taken against: the same framework's baseline
    of the same architecture, seed and configuration (controlled cells: the controlled baseline)."""
    from .results import cell_id

    mode = {"controlled": True} if cell.settings.get("controlled") else {}
    return cell_id(cell.framework, cell.arch, "baseline", mode, cell.seed, cell.fingerprint)


def save(backend, artifact, out_dir, cell, preset_name: str, widths, network: dict | None = None) -> dict:
    """Save ``artifact`` (a model or ``shared.backend.Quantized``) and its sidecar; return the sidecar.
    ``network``: what the model was built with besides its widths (``RunContext.network``)."""
    network = network or {"num_classes": 10, "head": None}
    stem = artifact_dir(out_dir) / cell.id
    stem.parent.mkdir(parents=True, exist_ok=True)
    if getattr(artifact, "form", None) == "onnx_int8":  # ORT's quantizer (drivers.quantization.int8_ort)
        runtimes = _save_onnx(artifact, stem)
    else:
        runtimes = backend.save_artifacts(artifact, stem)  # {runtime: {"file", "form", "precision"}}
    sidecar = {
        "cell_id": cell.id, "framework": cell.framework, "arch": cell.arch, "technique": cell.technique,
        "settings": cell.settings, "seed": cell.seed, "preset": preset_name, "fingerprint": cell.fingerprint,
        "widths": list(widths) if widths is not None else None,
        "num_classes": int(network["num_classes"]),
        "input_hw": specs.input_hw(cell.arch),
        "head": None if network["head"] is None else dataclasses.asdict(network["head"]),
        "controlled": bool(cell.settings.get("controlled")),
        "reference": reference_id(cell),
        "runtimes": runtimes,
        "input": INPUT_CONVENTION,
    }
    write_atomic(sidecar_path(out_dir, cell.id),
                 lambda tmp: tmp.write_text(json.dumps(sidecar, indent=1, sort_keys=True)))
    return sidecar


def _save_onnx(artifact, stem: Path) -> dict:
    from .onnx_runtime import RUNTIME

    path = stem.with_name(stem.name + ".onnx")
    write_atomic(path, lambda tmp: tmp.write_bytes(artifact.model))
    return {RUNTIME: {"file": path.name, "form": "onnx_int8", "precision": "int8 (QDQ, S8S8, per-channel)",
                      "layout": artifact.facts["layout"], "exporter": artifact.facts["exporter"]}}


def read_sidecars(out_dir) -> list[dict]:
    """Every sidecar of ``out_dir`` (unreadable ones are skipped with their path in the returned list's
    ``"error"`` entries, so one bad file never stops a timing pass)."""
    out = []
    for path in sorted(artifact_dir(out_dir).glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            out.append({"error": f"{path}: {exc}"})
    return out
