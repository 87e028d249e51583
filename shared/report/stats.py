"""Statistics over seeds: confidence intervals of a mean and Welch's t-test between two frameworks."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as st

SIGNIFICANCE = 0.05  # a framework gap counts as real (outside the seeds' noise) at p < 0.05


def ci_halfwidth(std, n) -> float:
    """Half-width of the t-based 95% CI of a mean of ``n`` seeds with sample std ``std``; NaN for n < 2."""
    if n is None or n < 2 or std is None or not math.isfinite(std):
        return float("nan")
    return float(st.t.ppf(0.975, n - 1) * std / math.sqrt(n))


def welch_p(a, b) -> float:
    """Two-sided Welch's t-test p-value of two samples (unequal variances); NaN when either has < 2 values.
    Two samples without any spread: 0 when their means differ, 1 when they are equal."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    if a.std(ddof=1) == 0 and b.std(ddof=1) == 0:
        return 0.0 if a.mean() != b.mean() else 1.0
    return float(st.ttest_ind(a, b, equal_var=False).pvalue)
