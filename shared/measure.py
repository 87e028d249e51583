"""The measurement protocol every reported model goes through, in both frameworks.

Each suite implements the timing and serialisation with its own tools; the settings, the statistics and
the gzip rule are defined here once.
"""
from __future__ import annotations

import gzip
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import register


@register
@dataclass(frozen=True)
class MeasureProtocol:
    threads: int = 2  # fixed intra-op threads for CPU latency, recorded with every row
    latency_batch_sizes: tuple[int, ...] = (1, 64)
    warmup: int = 10  # untimed calls per batch size (allocator, oneDNN/XNNPACK kernel selection)
    repeats: int = 30  # timed rounds per batch size (each round calls every model of a group once)
    gzip_level: int = 9
    # The timing pass refuses to start (and marks a group contended) when other processes take more than
    # this share of the machine's CPU time: on 2 cores, two processes' threads slow PyTorch 10-30x.
    max_other_cpu: float = 0.10


# What a measured model's row holds (``model_row``), in every suite and runtime alike
MODEL_COLUMNS = ("test_acc", "val_acc", "params_total", "params_nonzero", "macs", "size_bytes", "size_gzip_bytes")
# What the timing pass adds (``shared.timing``): latency on the row's runtime, and speedups over the same
# framework's fp32 baseline on that runtime with their 95% CI (lo, hi) and the A/A noise of their group
TIMING_COLUMNS = tuple(
    f"latency_b{b}_ms_{s}" for b in (1, 64) for s in ("median", "p90")
) + tuple(f"{k}_b{b}{s}" for b in (1, 64) for k, s in (("speedup", ""), ("speedup", "_lo"), ("speedup", "_hi"),
                                                       ("noise", "")))
METRIC_COLUMNS = (*MODEL_COLUMNS, *TIMING_COLUMNS, "train_time_s", "train_images_per_s")


# What a combined pipeline records of the model leaving each of its stages (both suites, one list)
STAGE_KEYS = ("test_acc", "val_acc", "params_total", "params_nonzero", "macs", "size_bytes", "size_gzip_bytes")


def model_row(*, test_acc: float, val_acc: float | None, params_total: int, params_nonzero: int, plan,
              sizes: dict, widths=None) -> dict:
    """The protocol's figures of one measured model, in the row's keys (every suite and runtime alike).

    No latency: a training cell may run beside other work, so its model is saved as an artifact and timed
    later by the timing pass (``shared.timing``) on a quiet machine, interleaved with its reference."""
    from .specs import count_macs

    row = {"test_acc": test_acc, "val_acc": val_acc, "params_total": params_total,
           "params_nonzero": params_nonzero, "macs": count_macs(plan), **sizes}
    if widths is not None:
        row["widths"] = list(widths)
    return row


def stage_summary(name: str, row: dict) -> dict:
    return {"stage": name, **{k: row[k] for k in STAGE_KEYS}}


def latency_stats(seconds, batch_size: int) -> dict[str, float]:
    """Median and p90 in ms: per image at batch 1, per batch otherwise (the protocol's units)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {
        f"latency_b{batch_size}_ms_median": float(np.median(ms)),
        f"latency_b{batch_size}_ms_p90": float(np.percentile(ms, 90)),
    }


def interleaved_latency(calls: dict, batch_size: int, warmup: int, repeats: int) -> dict[str, dict]:
    """``latency_stats`` of zero-argument calls timed in rounds, one call of each per round, so that load
    from other processes on a shared machine hits every variant alike (the benchmarks' comparisons)."""
    times = {name: [] for name in calls}
    for round_ in range(warmup + repeats):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: latency_stats(t, batch_size) for name, t in times.items()}


def file_sizes(path, level: int = 9) -> dict[str, int]:
    data = Path(path).read_bytes()
    # mtime=0 so the gzip size is a property of the model, not of when it was measured
    return {"size_bytes": len(data), "size_gzip_bytes": len(gzip.compress(data, compresslevel=level, mtime=0))}


def accuracy(correct: int, total: int) -> float:
    if total <= 0:
        raise ValueError("accuracy over an empty set")
    return correct / total
