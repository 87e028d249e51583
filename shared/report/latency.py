"""Latency in the report: only the timing pass's figures (``shared.timing``), runtime for runtime.

Every speedup is a model's fp32 baseline over the model, both timed in the same interleaved rounds on the
same runtime; a row's own in-training latency keys (older rows) are dropped, never used. Each framework's
tables use one runtime, named beside them: PyTorch eager for PyTorch, LiteRT for Keras (every Keras row has
a flatbuffer; its float rows are also timed on TensorFlow, listed in the latency-by-runtime table).
"""
from __future__ import annotations

import math

from ..measure import TIMING_COLUMNS

PRIMARY_RUNTIME = {"pytorch": "pytorch-eager", "keras": "litert"}
RUNTIME_NAMES = {"pytorch-eager": "PyTorch eager (CPU)", "tensorflow": "TensorFlow (tf.function)",
                 "litert": "LiteRT (XNNPACK)", "onnxruntime": "ONNX Runtime (CPU EP)"}
BATCH_SIZES = (1, 64)
NO_CHANGE = "no measurable change"


def noise_halfwidth(aa: dict) -> float:
    """How far from 1 the A/A pair (the baseline against a second copy of itself) reached: the spread that
    identical models show in this group, the floor below which no speedup counts as measured."""
    lo, hi = aa["ci95"]
    return float(max(abs(aa["speedup"] - 1), abs(lo - 1), abs(hi - 1)))


def timing_columns(entry: dict) -> dict:
    out = {}
    for b in BATCH_SIZES:
        if f"latency_b{b}_ms_median" not in entry:
            continue
        lo, hi = entry[f"speedup_b{b}_ci95"]
        out.update({f"latency_b{b}_ms_median": entry[f"latency_b{b}_ms_median"],
                    f"latency_b{b}_ms_p90": entry[f"latency_b{b}_ms_p90"], f"speedup_b{b}": entry[f"speedup_b{b}"],
                    f"speedup_b{b}_lo": lo, f"speedup_b{b}_hi": hi,
                    f"noise_b{b}": noise_halfwidth(entry["noise"][f"b{b}"])})
    return out


def attach_timings(rows: list[dict], timings: dict[str, dict]) -> list[dict]:
    """Copies of ``rows`` with the primary runtime's timing columns (none when untimed or contended) and every
    runtime's entry under ``timings``."""
    out = []
    for row in rows:
        r = {k: v for k, v in row.items() if k not in TIMING_COLUMNS and not k.startswith("fp32_tflite_")}
        record = (timings.get(row.get("cell_id")) or {}).get("runtimes") or {}
        r["timings"] = record
        # the framework's own runtime only: a row timed elsewhere (ORT's int8) shows its latency in the
        # runtime tables, never in a table whose latencies are another runtime's
        runtime = PRIMARY_RUNTIME.get(row.get("framework"))
        entry = record.get(runtime)
        r["runtime"] = runtime if entry else None
        r["timing_contended"] = bool(entry and entry.get("contended"))
        if entry and not entry.get("contended"):  # a latency measured under contention is never shown
            r.update(timing_columns(entry))
        out.append(r)
    return out


def verdict(speedup, lo, hi, noise) -> str | None:
    """"faster", "slower" or "no measurable change" (the CI contains 1, or the change is within the A/A
    noise of its group); None when untimed."""
    if any(v is None or not math.isfinite(v) for v in (speedup, lo, hi)):
        return None
    noise = noise if noise is not None and math.isfinite(noise) else 0.0
    if lo <= 1 <= hi or abs(speedup - 1) <= noise:
        return NO_CHANGE
    return "faster" if lo > 1 else "slower"


def point_verdict(p, batch_size: int) -> str | None:
    b = batch_size
    return verdict(p.get(f"speedup_b{b}"), p.get(f"speedup_b{b}_lo"), p.get(f"speedup_b{b}_hi"), p.get(f"noise_b{b}"))


def speedup_cell(p, batch_size: int) -> str:
    """'1.85× [1.80–1.91]', '0.99× [0.97–1.02] ≈' (no measurable change), '1.00× (ref.)' or '—'."""
    b = batch_size
    s, lo, hi = p.get(f"speedup_b{b}"), p.get(f"speedup_b{b}_lo"), p.get(f"speedup_b{b}_hi")
    if s is None or not math.isfinite(s):
        return "—"
    if p.get("technique") == "baseline":
        return "1.00× (ref.)"
    v = point_verdict(p, b)
    return f"{s:.2f}× [{lo:.2f}–{hi:.2f}]" + (" ≈" if v == NO_CHANGE else "")


SPEEDUP_NOTE = (
    "**Speedups** are the same framework's fp32 baseline latency over the model's, both timed by the timing "
    "pass (`python -m shared time`) on the same runtime, interleaved in rounds on a quiet machine; the bracket is "
    "a paired bootstrap 95% CI over rounds. **≈** marks no measurable change: the CI contains 1, or the change is "
    "within the A/A noise of its group (the baseline timed against a second copy of itself in the same rounds). "
    "Every model is loaded twice and timed as two copies in those rounds; the speedup is the two copies' mean and "
    "its CI spans both, so a verdict holds for either load.")
