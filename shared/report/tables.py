"""Sections 1 and 3: the headline tables and the framework side-by-side comparison."""
from __future__ import annotations

import pandas as pd

from .. import tolerances as tol
from . import fmt
from .cells import ARCH_NAMES, CHOSEN_RULE, FRAMEWORK_NAMES, FRAMEWORKS, speedup
from .doc import Heading, Para, Table

HEADLINE_COLUMNS = ["Technique", "Setting", "Test acc %", "Δ acc (pts)", "Params", "Nonzero", "MACs",
                    "Size MB", "Gzip MB", "Latency b1 ms", "Latency b64 ms", "Speedup b1", "Speedup b64",
                    "MAC reduction"]


def headline_row(p, base) -> list[str]:
    b = base if base is not None else {}
    return [p["technique"], p["label"], fmt.acc_cell(p["test_acc"], p["acc_std"], p["n"]),
            fmt.delta_pts(p["test_acc"], b.get("test_acc")), fmt.integer(p["params_total"]),
            fmt.integer(p["params_nonzero"]), fmt.integer(p["macs"]), fmt.mb(p["size_bytes"]),
            fmt.mb(p["size_gzip_bytes"]), fmt.ms(p["latency_b1_ms_median"]), fmt.ms(p["latency_b64_ms_median"]),
            fmt.times(speedup(b.get("latency_b1_ms_median"), p["latency_b1_ms_median"])),
            fmt.times(speedup(b.get("latency_b64_ms_median"), p["latency_b64_ms_median"])),
            fmt.times(speedup(b.get("macs"), p["macs"]))]


def headline_section(chosen: pd.DataFrame, base: dict, cells: pd.DataFrame) -> list:
    blocks = [Heading("1. Headline: baseline and chosen operating points"), Para(CHOSEN_RULE),
              Para("Δ is in percentage points against the baseline; speedup = baseline latency / latency "
                   "(measured) beside MAC reduction = baseline MACs / MACs (arithmetic). Sizes are the saved "
                   "model file, raw and gzip -9, in MB (10^6 bytes). Controlled-mode cells are only in section 3.")]
    if chosen.empty:
        return blocks + [Para("No successful cell with a test accuracy: nothing to tabulate.")]
    for fw in FRAMEWORKS:
        for arch in ARCH_NAMES:
            sub = chosen[(chosen.framework == fw) & (chosen.arch == arch)]
            if sub.empty:
                continue
            b = base.get((fw, arch))
            blocks += [Heading(f"{FRAMEWORK_NAMES[fw]} · {ARCH_NAMES[arch]}", 3),
                       Table(HEADLINE_COLUMNS, [headline_row(p, b) for _, p in sub.iterrows()])]
            no_acc = sorted(set(cells[(cells.framework == fw) & (cells.arch == arch) & (cells.status == "ok")
                                      & cells.test_acc.isna()].technique))
            if no_acc:
                blocks.append(Para(f"No test metrics in these rows (sensitivity is a validation-split analysis: "
                                   f"see the figures): {', '.join(no_acc)}."))
    return blocks


def framework_pairs(points: pd.DataFrame) -> pd.DataFrame:
    """Cells present in both frameworks: independent pairs, and controlled cells against the other suite."""
    cols = ["arch", "technique", "label", "arch_i", "order", "level", "controlled", "pytorch", "keras", "diff",
            "tolerance", "within"]
    indep = points[~points.controlled.astype(bool)]
    key = ["arch", "technique", "settings_key"]
    recs = []
    for _, c in points[points.controlled.astype(bool)].iterrows():
        other = [f for f in FRAMEWORKS if f != c["framework"]][0]
        match = indep[(indep.framework == other) & (indep[key] == c[key]).all(axis=1)]
        if not match.empty:
            accs = {c["framework"]: c["test_acc"], other: match.iloc[0]["test_acc"]}
            recs.append(_pair(c, accs, True))
    for _, grp in indep.groupby(key, sort=False):
        by_fw = {r["framework"]: r["test_acc"] for _, r in grp.iterrows()}
        if all(f in by_fw for f in FRAMEWORKS):
            recs.append(_pair(grp.iloc[0], by_fw, False))
    df = pd.DataFrame(recs, columns=cols)
    return df.sort_values(["controlled", "arch_i", "order", "level", "label"], kind="stable", ignore_index=True)


def _pair(p, accs: dict, controlled: bool) -> dict:
    limit = tol.ACCURACY_TOLERANCE_CONTROLLED if controlled else tol.ACCURACY_TOLERANCE_INDEPENDENT
    diff = accs["keras"] - accs["pytorch"]
    return {"arch": p["arch"], "technique": p["technique"], "label": p["label"], "arch_i": p["arch_i"],
            "order": p["order"],
            "level": p["level"], "controlled": controlled, "pytorch": accs["pytorch"], "keras": accs["keras"],
            "diff": diff, "tolerance": limit, "within": abs(diff) <= limit + 1e-9}


def _pair_table(pairs: pd.DataFrame) -> Table:
    rows = [[ARCH_NAMES.get(r.arch, r.arch), r.technique, r.label, fmt.pct(r.pytorch), fmt.pct(r.keras),
             fmt.delta_pts(r.keras, r.pytorch), f"±{r.tolerance * 100:g}", "yes" if r.within else "**NO**"]
            for r in pairs.itertuples()]
    return Table(["Arch", "Technique", "Setting", "PyTorch acc %", "Keras acc %", "Keras − PyTorch (pts)",
                  "Tolerance (pts)", "Within"], rows)


def side_by_side_section(pairs: pd.DataFrame) -> list:
    blocks = [Heading("3. Frameworks side by side"),
              Para(f"Every (architecture, technique, setting) cell with results in both frameworks, mean test "
                   f"accuracy over seeds. Tolerances (shared/tolerances.py): independently trained "
                   f"±{tol.ACCURACY_TOLERANCE_INDEPENDENT * 100:g} points; controlled mode (Keras started from "
                   f"the PyTorch fp32 weights) ±{tol.ACCURACY_TOLERANCE_CONTROLLED * 100:g} point."),
              Heading("Independently trained", 3)]
    indep, ctrl = pairs[~pairs.controlled], pairs[pairs.controlled]
    blocks.append(_pair_table(indep) if len(indep) else Para("No cell has results in both frameworks."))
    blocks.append(Heading("Controlled mode (same fp32 weights)", 3))
    blocks.append(_pair_table(ctrl) if len(ctrl) else Para("No controlled-mode rows in this directory."))
    return blocks
