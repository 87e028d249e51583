"""The "Same runtime" tables: both frameworks' models on ONNX Runtime, and three int8 toolchains side by side.

ONNX Runtime runs the exports of both frameworks, so on it a difference between a PyTorch and a Keras model
is the exported graph's (and, unless controlled, the weights'), never the runtime's. The int8 table puts
torchao's PT2E int8 (on Inductor), TFLite's int8 (on LiteRT, and converted to ONNX on ORT) and ORT's own
static quantizer (on either framework's fp32 export) next to each other; every speedup is against the same
framework's fp32 baseline on the same runtime, as everywhere in the report.
"""
from __future__ import annotations

import pandas as pd

from . import fmt
from .cells import ARCH_NAMES, FRAMEWORK_NAMES
from .doc import Heading, Para, Table
from .latency import RUNTIME_NAMES, speedup_cell
from .runtimes import runtime_means

ORT = "onnxruntime"
# (label, framework, technique, runtime): the int8 toolchains, each on the runtimes it runs on
INT8_TOOLCHAINS = (("torchao PT2E int8", "pytorch", "int8_static", "pytorch-inductor"),
                   ("ORT int8 of the PyTorch export", "pytorch", "int8_ort", ORT),
                   ("TFLite int8", "keras", "int8_static", "litert"),
                   ("TFLite int8, converted to ONNX", "keras", "int8_static", ORT),
                   ("ORT int8 of the Keras export", "keras", "int8_ort", ORT))


def _timing(p, runtime: str) -> dict:
    return runtime_means(p["rows"]).get(runtime, {}) if p is not None else {}


def _lat(q: dict, b: int) -> str:
    ms = q.get(f"latency_b{b}_ms_median")
    return f"{fmt.ms(ms)} ({speedup_cell(q, b)})" if ms is not None else fmt.DASH


def _find(points: pd.DataFrame, fw: str, arch: str, tech: str, skey: str, controlled: bool):
    hit = points[(points.framework == fw) & (points.arch == arch) & (points.technique == tech)
                 & (points.settings_key == skey) & (points.controlled.astype(bool) == controlled)]
    return hit.iloc[0] if len(hit) else None


def exporters_table(points: pd.DataFrame, chosen: pd.DataFrame) -> list:
    """Per chosen PyTorch point that the Keras suite also ran at the same setting: both exports on ORT."""
    rows = []
    for _, pt in chosen[chosen.framework == "pytorch"].iterrows():
        ks = _find(points, "keras", pt["arch"], pt["technique"], pt["settings_key"], False)
        a, b = _timing(pt, ORT), _timing(ks, ORT)
        if not a or not b:
            continue
        q = {"technique": pt["technique"]}
        rows.append([ARCH_NAMES.get(pt["arch"], pt["arch"]), pt["technique"], pt["label"], fmt.pct(pt["test_acc"]),
                     fmt.pct(ks["test_acc"]), _lat(q | a, 1), _lat(q | b, 1), _lat(q | a, 64), _lat(q | b, 64)])
    if not rows:
        return []
    return [Heading("Same runtime: both frameworks' exports on ONNX Runtime", 3),
            Para("The PyTorch-exported (`torch.onnx.export`, NCHW) and the Keras-exported (tf2onnx, NHWC) model of "
                 "each chosen PyTorch point and the Keras cell at the same setting, on ORT's CPU provider with the "
                 "protocol's threads; × fp32 is against that framework's own fp32 baseline export on ORT. Accuracy "
                 "is each framework's row (a float export matches its source's logits within 1e-4, checked when "
                 "it is saved; TFLite int8 rows: LiteRT's accuracy). ms: per image at b1, per batch at b64."),
            Table(["Arch", "Technique", "Setting", "PyTorch acc %", "Keras acc %", "PyTorch export b1 ms",
                   "Keras export b1 ms", "PyTorch export b64 ms", "Keras export b64 ms"], rows)]


def int8_table(points: pd.DataFrame) -> list:
    """Per architecture: every int8 toolchain at ORT int8's setting, controlled Keras cells where present."""
    rows, weights = [], set()
    for arch in ARCH_NAMES:
        ort_pt = points[(points.framework == "pytorch") & (points.arch == arch) & (points.technique == "int8_ort")
                        & ~points.controlled.astype(bool)]
        if ort_pt.empty:
            continue
        skey = ort_pt.iloc[0]["settings_key"]  # the same observer and calibration size for every toolchain
        controlled = _find(points, "keras", arch, "int8_static", skey, True) is not None
        weights.add(controlled)
        for label, fw, tech, runtime in INT8_TOOLCHAINS:
            p = _find(points, fw, arch, tech, skey, controlled and fw == "keras")
            q = {"technique": tech, **_timing(p, runtime)}
            if p is None:
                continue
            rows.append([ARCH_NAMES[arch], label, FRAMEWORK_NAMES[fw], p["label"], fmt.pct(p["test_acc"]),
                         RUNTIME_NAMES.get(runtime, runtime), _lat(q, 1), _lat(q, 64)])
    if not rows:
        return []
    source = ("identical fp32 weights: the Keras cells are controlled (started from the PyTorch baseline)"
              if weights == {True} else
              "independently trained weights per framework (no controlled-mode int8 cells in these results: "
              "`--controlled` puts every toolchain on the same weights)" if weights == {False} else
              "controlled Keras cells where present, else independently trained ones")
    return [Heading("Three int8 toolchains", 3),
            Para(f"torchao's PT2E int8 compiled by Inductor, TFLite's int8 on LiteRT and converted to ONNX, and ORT's "
                 f"static quantizer (QDQ, S8S8, per-channel) on each framework's fp32 export, all at the same "
                 f"observer and calibration images; {source}. Accuracy: PT2E and TFLite int8 as each row measured "
                 f"it (TFLite's on LiteRT, also for its ONNX conversion), ORT int8 on ORT. × fp32: against the same "
                 f"framework's fp32 baseline on the same runtime."),
            Table(["Arch", "Toolchain", "Framework", "Setting", "Acc %", "Runtime", "b1 ms (× fp32)",
                   "b64 ms (× fp32)"], rows)]


def same_runtime_blocks(points: pd.DataFrame, chosen: pd.DataFrame) -> list:
    return [*exporters_table(points, chosen), *int8_table(points)]
