"""Sections 1 and 3: the headline tables and the framework side-by-side comparison."""
from __future__ import annotations

import pandas as pd

from .. import tolerances as tol
from . import fmt
from .cells import ARCH_NAMES, CHOSEN_RULE, FRAMEWORK_NAMES, FRAMEWORKS, speedup
from .doc import Heading, Para, Table
from .latency import PRIMARY_RUNTIME, RUNTIME_NAMES, SPEEDUP_NOTE, speedup_cell
from .stats import SIGNIFICANCE, welch_p

HEADLINE_COLUMNS = ["Technique", "Setting", "Val acc %", "Test acc %", "Δ test (pts)", "Params", "Nonzero", "MACs",
                    "Size MB", "Gzip MB", "Latency b1 ms", "Latency b64 ms", "Speedup b1", "Speedup b64",
                    "MAC reduction"]


def headline_row(p, base) -> list[str]:
    b = base if base is not None else {}
    return [p["technique"], p["label"], fmt.pct(p["val_acc"]), fmt.acc_cell(p["test_acc"], p["acc_std"], p["n"], p["acc_ci95"]),
            fmt.delta_pts(p["test_acc"], b.get("test_acc")), fmt.integer(p["params_total"]),
            fmt.integer(p["params_nonzero"]), fmt.integer(p["macs"]), fmt.mb(p["size_bytes"]),
            fmt.mb(p["size_gzip_bytes"]), fmt.ms(p["latency_b1_ms_median"]), fmt.ms(p["latency_b64_ms_median"]),
            speedup_cell(p, 1), speedup_cell(p, 64), fmt.times(speedup(b.get("macs"), p["macs"]))]


def headline_section(chosen: pd.DataFrame, base: dict, cells: pd.DataFrame) -> list:
    blocks = [Heading("1. Headline: baseline and chosen operating points"), Para(CHOSEN_RULE),
              Para("Δ is in percentage points against the baseline; MAC reduction = baseline MACs / MACs "
                   "(arithmetic) beside the measured speedups. Sizes are the saved model file, raw and gzip -9, in "
                   "MB (10^6 bytes). Controlled-mode cells are only in section 3."), Para(SPEEDUP_NOTE)]
    if chosen.empty:
        return blocks + [Para("No successful cell with a test accuracy: nothing to tabulate.")]
    for fw in FRAMEWORKS:
        for arch in ARCH_NAMES:
            sub = chosen[(chosen.framework == fw) & (chosen.arch == arch)]
            if sub.empty:
                continue
            b = base.get((fw, arch))
            runtime = RUNTIME_NAMES.get(PRIMARY_RUNTIME.get(fw), "?")
            blocks += [Heading(f"{FRAMEWORK_NAMES[fw]} · {ARCH_NAMES[arch]} (latency on {runtime})", 3),
                       Table(HEADLINE_COLUMNS, [headline_row(p, b) for _, p in sub.iterrows()])]
            no_acc = sorted(set(cells[(cells.framework == fw) & (cells.arch == arch) & (cells.status == "ok")
                                      & cells.test_acc.isna()].technique))
            if no_acc:
                blocks.append(Para(f"No test metrics in these rows (sensitivity is a validation-split analysis: "
                                   f"see the figures): {', '.join(no_acc)}."))
    return blocks


def framework_pairs(points: pd.DataFrame, verdicts: bool = True) -> pd.DataFrame:
    """Cells present in both frameworks: independent pairs, and controlled cells against the other suite.
    ``verdicts=False`` (synthetic data): the gaps are shown, never judged."""
    cols = ["arch", "technique", "label", "arch_i", "order", "level", "controlled", "pytorch", "keras", "diff",
            "tolerance", "n_pytorch", "n_keras", "p_value", "within", "verdict"]
    indep = points[~points.controlled.astype(bool)]
    key = ["arch", "technique", "settings_key"]
    recs = []
    for _, c in points[points.controlled.astype(bool)].iterrows():
        other = [f for f in FRAMEWORKS if f != c["framework"]][0]
        match = indep[(indep.framework == other) & (indep[key] == c[key]).all(axis=1)]
        if not match.empty:
            recs.append(_pair(c, {c["framework"]: _seed_accs(c), other: _seed_accs(match.iloc[0])}, True))
    for _, grp in indep.groupby(key, sort=False):
        by_fw = {r["framework"]: _seed_accs(r) for _, r in grp.iterrows()}
        if all(f in by_fw for f in FRAMEWORKS):
            recs.append(_pair(grp.iloc[0], by_fw, False))
    df = pd.DataFrame(recs, columns=cols)
    if not verdicts and len(df):
        df["within"], df["verdict"] = True, "— (synthetic data)"
    return df.sort_values(["controlled", "arch_i", "order", "level", "label"], kind="stable", ignore_index=True)


def _seed_accs(p) -> list[float]:
    return [r["test_acc"] for r in p["rows"] if r.get("test_acc") is not None]


def _pair(p, accs: dict[str, list[float]], controlled: bool) -> dict:
    """One framework comparison: the mean gap against the tolerance, and (with >= 2 seeds each) Welch's
    t-test, so a gap beyond the tolerance counts as a framework effect only when it is outside the seeds'
    noise too."""
    limit = tol.ACCURACY_TOLERANCE_CONTROLLED if controlled else tol.ACCURACY_TOLERANCE_INDEPENDENT
    pt, ks = (sum(accs[f]) / len(accs[f]) for f in ("pytorch", "keras"))
    diff = ks - pt
    p_value = welch_p(accs["pytorch"], accs["keras"])
    beyond = abs(diff) > limit + 1e-9
    if not beyond:
        verdict = "yes"
    elif p_value != p_value:  # NaN: fewer than two seeds on a side
        verdict = "**NO** (one seed: no spread)"
    elif p_value < SIGNIFICANCE:
        verdict = f"**NO** (p={p_value:.3f})"
    else:
        verdict = f"within noise (p={p_value:.2f})"
    return {"arch": p["arch"], "technique": p["technique"], "label": p["label"], "arch_i": p["arch_i"],
            "order": p["order"], "level": p["level"], "controlled": controlled, "pytorch": pt, "keras": ks,
            "diff": diff, "tolerance": limit, "n_pytorch": len(accs["pytorch"]), "n_keras": len(accs["keras"]),
            "p_value": p_value, "within": not beyond or (p_value == p_value and p_value >= SIGNIFICANCE),
            "verdict": verdict}


def _pair_table(pairs: pd.DataFrame) -> Table:
    rows = [[ARCH_NAMES.get(r.arch, r.arch), r.technique, r.label, fmt.pct(r.pytorch), fmt.pct(r.keras),
             fmt.delta_pts(r.keras, r.pytorch), f"{r.n_pytorch}/{r.n_keras}",
             fmt.DASH if r.p_value != r.p_value else f"{r.p_value:.3f}", f"±{r.tolerance * 100:g}", r.verdict]
            for r in pairs.itertuples()]
    return Table(["Arch", "Technique", "Setting", "PyTorch acc %", "Keras acc %", "Keras − PyTorch (pts)",
                  "Seeds (PT/K)", "Welch p", "Tolerance (pts)", "Within"], rows)


def side_by_side_section(pairs: pd.DataFrame) -> list:
    blocks = [Heading("3. Frameworks side by side"),
              Para(f"Every (architecture, technique, setting) cell with results in both frameworks, mean test "
                   f"accuracy over seeds. Tolerances (shared/tolerances.py): independently trained "
                   f"±{tol.ACCURACY_TOLERANCE_INDEPENDENT * 100:g} points; controlled mode (Keras started from "
                   f"the PyTorch fp32 weights) ±{tol.ACCURACY_TOLERANCE_CONTROLLED * 100:g} point. With two or more "
                   f"seeds per framework a gap beyond the tolerance is a framework effect only if Welch's t-test "
                   f"puts it outside the seeds' noise (p < {SIGNIFICANCE:g}); with one seed no spread is available "
                   f"and the tolerance alone decides."),
              Heading("Independently trained", 3)]
    indep, ctrl = pairs[~pairs.controlled], pairs[pairs.controlled]
    blocks.append(_pair_table(indep) if len(indep) else Para("No cell has results in both frameworks."))
    blocks.append(Heading("Controlled mode (same fp32 weights)", 3))
    blocks.append(_pair_table(ctrl) if len(ctrl) else Para("No controlled-mode rows in this directory."))
    return blocks
