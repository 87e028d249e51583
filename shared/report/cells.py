"""Rows as tidy tables: one line per cell, and one line per operating point (seeds aggregated)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..measure import METRIC_COLUMNS
from ..techniques import TECHNIQUES
from ..tolerances import CHOSEN_MAX_ACCURACY_DROP
from . import stats

FRAMEWORKS = ("pytorch", "keras")
FRAMEWORK_NAMES = {"pytorch": "PyTorch", "keras": "Keras"}
ARCH_NAMES = {"vgg16": "VGG-16", "resnet18": "ResNet-18", "cnn": "CNN", "cnn_dropout": "CNN + dropout",
              "resnet50": "ResNet-50", "vgg16_imagenet": "VGG-16 (ImageNet)"}
POINT_KEYS = ["framework", "arch", "technique", "settings_key", "controlled"]
PRUNE_UNSTRUCTURED = ("prune_global", "prune_gradual", "prune_gradual_layerwise", "prune_layerwise", "prune_random")


def is_controlled(row: dict) -> bool:
    """Keras rows started from PyTorch weights carry ``controlled: true`` in settings (or config)."""
    return bool((row.get("settings") or {}).get("controlled") or (row.get("config") or {}).get("controlled"))


def plain_settings(settings: dict | None) -> dict:
    return {k: v for k, v in (settings or {}).items() if k != "controlled"}


def settings_key(settings: dict | None) -> str:
    # the controlled flag is left out so a controlled Keras cell pairs with the PyTorch cell it mirrors
    return json.dumps(plain_settings(settings), sort_keys=True)


def settings_label(settings: dict | None) -> str:
    def short(v):
        if isinstance(v, (list, tuple)):
            return "/".join(short(x) for x in v)
        return f"{v:g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k}={short(v)}" for k, v in sorted(plain_settings(settings).items())) or "—"


def compression_level(settings: dict) -> float:
    """How hard a setting compresses, for ranking the points of one sweep (higher: more compressed)."""
    if "sparsity" in settings:
        return float(settings["sparsity"])
    if "ratio" in settings:
        return float(settings["ratio"])
    if "bits" in settings:
        return -float(settings["bits"])
    return 0.0  # observers, calibration sizes: equal compression, ranked by accuracy instead


def cell_frame(rows: list[dict]) -> pd.DataFrame:
    """One line per row, metrics numeric (NaN where a row has none), the row itself under ``row``."""
    order = {t: i for i, t in enumerate(TECHNIQUES)}
    recs = []
    for r in rows:
        s = r.get("settings") or {}
        rec = {k: r.get(k) for k in ("cell_id", "framework", "arch", "technique", "seed", "preset", "status",
                                     "runtime")}
        rec.update(settings=s, settings_key=settings_key(s), label=settings_label(s), controlled=is_controlled(r),
                   level=compression_level(plain_settings(s)), order=order.get(r.get("technique"), len(order)),
                   fw_i=_index(FRAMEWORKS, r.get("framework")), arch_i=_index(tuple(ARCH_NAMES), r.get("arch")), row=r)
        rec.update({m: r.get(m) for m in (*METRIC_COLUMNS, "wall_time_s")})
        recs.append(rec)
    df = pd.DataFrame(recs, columns=[*POINT_KEYS[:3], "cell_id", "seed", "preset", "status", "runtime", "settings",
                                     "settings_key", "label", "controlled", "level", "order", "fw_i", "arch_i", "row",
                                     *METRIC_COLUMNS, "wall_time_s"])
    for m in (*METRIC_COLUMNS, "wall_time_s"):
        df[m] = pd.to_numeric(df[m], errors="coerce")  # a malformed value shows as missing, not a crash
    # the study's order (PyTorch before Keras, VGG-16 before ResNet-18, TECHNIQUES order), not alphabetical
    return df.sort_values(["fw_i", "arch_i", "order", "level", "settings_key", "controlled", "seed"], kind="stable",
                          ignore_index=True)


def _index(seq, value) -> int:
    return seq.index(value) if value in seq else len(seq)


def point_frame(cells: pd.DataFrame) -> pd.DataFrame:
    """Successful cells with a test accuracy, over seeds: accuracy mean, sample std, n and 95% CI half-width;
    other metrics' means; a speedup's CI spans its seeds' CIs (lowest lo, highest hi) and its noise is the
    largest A/A spread among them."""
    ok = cells[(cells.status == "ok") & cells.test_acc.notna()]
    metrics = list(METRIC_COLUMNS)
    if ok.empty:
        return pd.DataFrame(columns=[*POINT_KEYS, "label", "settings", "level", "order", "fw_i", "arch_i", "runtime",
                                     "n", "acc_std", "acc_ci95", "val_std", "rows", *metrics])
    g = ok.groupby(POINT_KEYS, sort=False, dropna=False)
    out = g[metrics].mean()
    for b in (1, 64):
        out[f"speedup_b{b}_lo"] = g[f"speedup_b{b}_lo"].min()
        out[f"speedup_b{b}_hi"] = g[f"speedup_b{b}_hi"].max()
        out[f"noise_b{b}"] = g[f"noise_b{b}"].max()
    out["acc_std"] = g.test_acc.std(ddof=1)  # NaN for one seed: shown as no spread, not as zero spread
    out["val_std"] = g.val_acc.std(ddof=1)
    out["n"] = g.size()
    out["acc_ci95"] = [stats.ci_halfwidth(s, n) for s, n in zip(out.acc_std, out.n)]
    for col in ("label", "settings", "level", "order", "fw_i", "arch_i", "runtime"):
        out[col] = g[col].first()
    out["rows"] = g.row.agg(list)
    return out.reset_index()


def baselines(points: pd.DataFrame) -> dict[tuple[str, str], pd.Series]:
    base = points[(points.technique == "baseline") & ~points.controlled.astype(bool)]
    return {(r["framework"], r["arch"]): r for _, r in base.iterrows()}


def stand_in(point) -> bool:
    """A point whose setting its framework ran as another one (the row says so in ``observer_note``)."""
    return any(r.get("observer_note") for r in point["rows"])


def _ranked(grp: pd.DataFrame, most_compressed: bool) -> pd.DataFrame:
    keyed = grp.assign(_stand_in=[stand_in(p) for _, p in grp.iterrows()])
    return keyed.sort_values(["level", "val_acc", "_stand_in"], ascending=[not most_compressed, False, True],
                             kind="stable").drop(columns="_stand_in")


def chosen(points: pd.DataFrame, base: dict) -> pd.DataFrame:
    """Per (framework, arch, technique): the chosen operating point (rule in CHOSEN_RULE). Validation
    accuracy only: the test set is reported, never used to choose."""
    picks = []
    independent = points[~points.controlled.astype(bool)]
    for (fw, arch, _tech), grp in independent.groupby(["framework", "arch", "technique"], sort=False):
        b = base.get((fw, arch))
        has_val = grp[grp.val_acc.notna()]
        if has_val.empty:  # nothing to choose on: the mildest setting, whatever its test accuracy
            picks.append(grp.sort_values(["level", "settings_key"]).iloc[0])
            continue
        if b is None or not np.isfinite(b["val_acc"]):
            within = has_val
        else:
            within = has_val[b["val_acc"] - has_val.val_acc <= CHOSEN_MAX_ACCURACY_DROP + 1e-9]
        # a tie in accuracy goes to a setting that ran as named over one the framework ran as another
        # (Keras' "histogram" observer is TFLite's min-max calibration: the same model, the same accuracy)
        if len(within):  # most compressed within budget; equal compression: the more accurate on val
            pick = _ranked(within, most_compressed=True).iloc[0]
        else:  # nothing within budget: the mildest setting
            pick = _ranked(has_val, most_compressed=False).iloc[0]
        picks.append(pick)
    if not picks:
        return points.iloc[0:0]
    return pd.DataFrame(picks).sort_values(["fw_i", "arch_i", "order"], kind="stable", ignore_index=True)


CHOSEN_RULE = (
    "**Chosen operating point.** Chosen on the validation split, never on the test set: for a technique with "
    "several settings (a sweep), the most compressed setting (highest sparsity or filter ratio, fewest bits) whose "
    f"mean validation accuracy is within {CHOSEN_MAX_ACCURACY_DROP * 100:g} point of the same framework's baseline "
    "on the same architecture; if no setting is, the mildest one (without a baseline: the most compressed). "
    "Settings that compress equally (observers, calibration sizes) are ranked by validation accuracy; on a tie, "
    "a setting the framework ran as named beats one it ran as another (Keras' histogram observer is TFLite's "
    "min-max calibration). Test "
    "accuracy is then only reported: the mean over seeds (± sample std, n and the 95% CI half-width when there "
    "are several; one seed has no spread)."
)


def speedup(base_value, value) -> float:
    """Baseline / value (MAC reduction; latency speedups come from the timing pass, ``latency``); NaN when
    either is missing or zero."""
    if base_value is None or value is None or not np.isfinite(base_value) or not np.isfinite(value) or value <= 0:
        return float("nan")
    return float(base_value) / float(value)
