"""Power-of-two fixed point (Qm.n): the format rule both suites' simulated fixed-point sweep uses."""
from __future__ import annotations

import numpy as np


def qmn_format(max_abs: float, bits: int) -> tuple[int, int]:
    """(m, n) of the signed Qm.n format (m + n + 1 = bits, scale 2^-n) that fits ``max_abs``.

    The most fractional bits n such that the largest code, (2^(bits-1) - 1) 2^-n, still reaches max_abs.
    n may exceed bits - 1 (tiny tensors: m < 0) or be negative (huge ones): a power-of-two scale either way.
    """
    if bits < 2:
        raise ValueError(f"a signed fixed-point format needs at least 2 bits, got {bits}")
    top = 2 ** (bits - 1) - 1
    if not max_abs > 0:
        return 0, bits - 1
    n = int(np.floor(np.log2(top / max_abs)))
    while top * 2.0**-n < max_abs:  # guard against log2 rounding at exact powers of two
        n -= 1
    while top * 2.0 ** -(n + 1) >= max_abs:
        n += 1
    return bits - 1 - n, n


def fixed_point_round(x: np.ndarray, n: int, bits: int) -> np.ndarray:
    """Round to the nearest multiple of 2^-n (ties to even, as torch.round) and clamp to the codes."""
    codes = np.clip(np.round(np.asarray(x, dtype=np.float64) * 2.0**n), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return codes * 2.0**-n
