"""Training precision: one rule for both suites.

``Recipe.precision`` is ``fp32``, ``bf16`` or ``auto``. ``bf16`` trains with bf16 compute and fp32 master
weights (PyTorch autocast; Keras ``mixed_bfloat16``); evaluation, calibration and every reported accuracy stay
fp32. ``auto`` is bf16 where the hardware runs bf16 natively (a GPU, or a CPU with AVX512_BF16 or AMX) and
fp32 elsewhere: emulated bf16 on an AVX2-only CPU is slower than fp32. A row records the precision that ran.
"""
from __future__ import annotations

import functools
from pathlib import Path

PRECISIONS = ("fp32", "bf16", "auto")
# /proc/cpuinfo's names for the instructions that make bf16 matmuls native (oneDNN uses either)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# QAT simulates int8 arithmetic with fake quantization: bf16 rounding on top would move the activation ranges
# it learns away from the ones the int8 model runs with, so its fine-tuning stays fp32 in both suites.
QAT_PRECISION = "fp32"


@functools.lru_cache(maxsize=1)
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    try:
        text = Path(cpuinfo).read_text()
    except OSError:  # not Linux: no flags known, so auto stays fp32
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_CPU_FLAGS)


def resolve(precision: str, *, gpu: bool, flags: frozenset[str] | None = None) -> str:
    """The precision a training runs in: ``fp32`` or ``bf16``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: give one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "bf16" if gpu or cpu_has_native_bf16(flags) else "fp32"
