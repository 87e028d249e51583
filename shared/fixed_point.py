"""Power-of-two fixed point (Qm.n): the format rule both suites' simulated fixed-point sweep uses.

A tensor that is never negative (a post-ReLU activation, over the calibration images) gets an unsigned
format: all ``bits`` bits hold magnitude, m + n = bits, codes 0 .. 2^bits - 1. Anything else is signed:
one sign bit, m + n + 1 = bits, codes -2^(bits-1) .. 2^(bits-1) - 1. A signed format on a ReLU output would
waste its sign bit ("4 bits" would be 3-bit activations).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QFormat:
    bits: int
    n: int  # fractional bits: the scale is 2^-n
    signed: bool = True

    @property
    def m(self) -> int:
        return self.bits - self.n - (1 if self.signed else 0)

    @property
    def code_range(self) -> tuple[int, int]:
        if self.signed:
            return -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        return 0, 2**self.bits - 1

    def as_list(self) -> list:
        """[m, n, signed], how a row records it."""
        return [self.m, self.n, self.signed]


def qmn_format(max_abs: float, bits: int, signed: bool = True) -> QFormat:
    """The format with the most fractional bits n whose largest code, top * 2^-n, still reaches ``max_abs``.

    n may exceed the format's width (tiny tensors: m < 0) or be negative (huge ones): a power-of-two scale
    either way.
    """
    if bits < (2 if signed else 1):
        raise ValueError(f"a {'signed' if signed else 'unsigned'} fixed-point format needs at least "
                         f"{2 if signed else 1} bits, got {bits}")
    top = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    if not max_abs > 0:
        return QFormat(bits, bits - (1 if signed else 0), signed)
    n = int(np.floor(np.log2(top / max_abs)))
    while top * 2.0**-n < max_abs:  # guard against log2 rounding at exact powers of two
        n -= 1
    while top * 2.0 ** -(n + 1) >= max_abs:
        n += 1
    return QFormat(bits, n, signed)


def tensor_format(min_value: float, max_value: float, bits: int) -> QFormat:
    """Unsigned Qm.n for a tensor that never went below zero on the calibration images, signed otherwise."""
    if min_value >= 0:
        return qmn_format(max_value, bits, signed=False)
    return qmn_format(max(abs(min_value), abs(max_value)), bits, signed=True)


def fixed_point_round(x: np.ndarray, fmt: QFormat) -> np.ndarray:
    """Round to the nearest multiple of 2^-n (ties to even, as torch.round and tf.round) and clamp to the codes."""
    lo, hi = fmt.code_range
    codes = np.clip(np.round(np.asarray(x, dtype=np.float64) * 2.0**fmt.n), lo, hi)
    return codes * 2.0**-fmt.n
