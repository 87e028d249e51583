"""Number formats of the report's tables (results.csv keeps the full-precision values)."""
from __future__ import annotations

import math

DASH = "—"


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def pct(acc, digits: int = 2) -> str:
    return DASH if _missing(acc) else f"{acc * 100:.{digits}f}"


def acc_cell(mean, std=None, n: int = 1, ci95=None) -> str:
    """'93.12' for one seed, '93.12 ± 0.10 (n=3, CI ±0.25)' for several (sample std, 95% CI half-width)."""
    if _missing(mean):
        return DASH
    if n and n > 1 and not _missing(std):
        ci = "" if _missing(ci95) else f", CI ±{ci95 * 100:.2f}"
        return f"{mean * 100:.2f} ± {std * 100:.2f} (n={n}{ci})"
    return pct(mean)


def delta_pts(acc, base) -> str:
    return DASH if _missing(acc) or _missing(base) else f"{(acc - base) * 100:+.2f}"


def integer(v) -> str:
    return DASH if _missing(v) else f"{int(round(v)):,}"


def sci(v) -> str:
    return DASH if _missing(v) else f"{v:.2E}"


def mb(nbytes) -> str:
    return DASH if _missing(nbytes) else f"{nbytes / 1e6:.3f}"


def ms(v) -> str:
    return DASH if _missing(v) else f"{v:.2f}"


def times(v) -> str:
    return DASH if _missing(v) else f"{v:.2f}×"


def percent_of(part, whole) -> str:
    return DASH if _missing(part) or _missing(whole) or not whole else f"{part / whole * 100:.1f}%"
