"""Section 5: findings and warnings read off the data (no-ops, latency vs MACs, missing/failed cells,
framework gaps). Every threshold comes from shared.tolerances."""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pandas as pd

from .. import tolerances as tol
from ..config import from_jsonable
from ..runner import plan_cells
from . import fmt
from .cells import ARCH_NAMES, FRAMEWORKS, PRUNE_UNSTRUCTURED, is_controlled, settings_label, speedup
from .doc import Bullets, Heading, Para
from .paper import extra_mean


def _who(p) -> str:
    return f"{p['framework']}/{p['arch']}/{p['technique']}" + ("" if p["label"] == "—" else f" ({p['label']})")


def no_effect(points: pd.DataFrame, chosen: pd.DataFrame, base: dict) -> list[str]:
    out = []
    for _, p in points[(points.technique == "int8_dynamic") & ~points.controlled.astype(bool)].iterrows():
        q, total = extra_mean(p, "quantized_params"), extra_mean(p, "quantizable_params")
        if total > 0 and q / total < tol.NOOP_QUANTIZED_FRACTION:
            b = base.get((p["framework"], p["arch"]))
            out.append(f"Dynamic quantization was a no-op on {p['framework']}/{p['arch']}: int8_dynamic converted "
                       f"{q / total:.1%} of the quantizable weights (< {tol.NOOP_QUANTIZED_FRACTION:.0%}; "
                       f"quantized_params {fmt.integer(q)} of {fmt.integer(total)}), accuracy "
                       f"{fmt.delta_pts(p['test_acc'], b['test_acc'] if b is not None else None)} pts.")
    flat = defaultdict(list)
    for _, p in chosen[chosen.technique != "baseline"].iterrows():
        b = base.get((p["framework"], p["arch"]))
        s = speedup(b["latency_b1_ms_median"], p["latency_b1_ms_median"]) if b is not None else np.nan
        if np.isfinite(s) and abs(1 / s - 1) <= tol.NOOP_LATENCY_BAND:
            flat[(p["framework"], p["arch"])].append(p["technique"])
    out += [f"Batch-1 latency within ±{tol.NOOP_LATENCY_BAND:.0%} of the baseline (no measurable speed change) on "
            f"{fw}/{arch}: {', '.join(techs)}." for (fw, arch), techs in flat.items()]
    return out


def latency_vs_macs(points: pd.DataFrame, base: dict) -> list[str]:
    out, sparse = [], defaultdict(list)
    for _, p in points[~points.controlled.astype(bool) & (points.technique != "baseline")].iterrows():
        b = base.get((p["framework"], p["arch"]))
        if b is None:
            continue
        s, m = speedup(b["latency_b1_ms_median"], p["latency_b1_ms_median"]), speedup(b["macs"], p["macs"])
        if m >= tol.MAC_REDUCTION_NOTABLE and s < tol.SPEEDUP_EXPECTED:
            out.append(f"Latency did not follow MACs: {_who(p)} cut MACs {m:.2f}× but batch-1 latency only "
                       f"{s:.2f}× (< {tol.SPEEDUP_EXPECTED}×).")
        if p["technique"] in PRUNE_UNSTRUCTURED and np.isfinite(s) and s < tol.SPEEDUP_EXPECTED:
            sparse[(p["framework"], p["arch"])].append((p["technique"], p["settings"].get("sparsity"), s))
    for (fw, arch), pts in sparse.items():
        techs = ", ".join(dict.fromkeys(t for t, _, _ in pts))
        out.append(f"Unstructured sparsity gave no latency gain on {fw}/{arch} ({techs}; sparsity up to "
                   f"{max(sp or 0 for _, sp, _ in pts):g}): best batch-1 speedup {max(s for _, _, s in pts):.2f}× "
                   f"(< {tol.SPEEDUP_EXPECTED}×; dense kernels still multiply the zeros).")
    return out


def expected_absent(rows: list[dict]) -> list[str]:
    """Cells the rows' own preset plans (shared.runner.plan_cells) that have no row at all."""
    present = {r.get("cell_id") for r in rows}
    by_config, out = {}, []
    for r in rows:
        if r.get("config") and not is_controlled(r):
            by_config.setdefault(json.dumps(r["config"], sort_keys=True), []).append(r)
    absent = defaultdict(list)
    for text, group in by_config.items():
        try:
            preset = from_jsonable(json.loads(text))
        except (TypeError, ValueError) as exc:
            out.append(f"Could not read the config of {len(group)} rows ({exc}); their missing cells are not checked.")
            continue
        archs = [a for a in preset.archs if any(r.get("arch") == a for r in group)]  # --arch runs cover fewer
        for fw in FRAMEWORKS:
            for cell in plan_cells(fw, preset, archs=archs):
                if cell.id not in present:
                    absent[(fw, cell.arch, cell.technique)].append(f"{settings_label(cell.settings)} seed {cell.seed}")
    for fw in FRAMEWORKS:
        n = sum(len(v) for k, v in absent.items() if k[0] == fw)
        if n and not any(r.get("framework") == fw for r in rows):
            out.append(f"Expected but absent: every {fw} cell ({n} planned); that suite has not run here.")
            absent = {k: v for k, v in absent.items() if k[0] != fw}
    out += [f"Expected but absent: {fw}/{arch}/{tech}: {'; '.join(which)}."
            for (fw, arch, tech), which in absent.items()]
    return out


def missing(cells: pd.DataFrame, rows: list[dict]) -> list[str]:
    ni = cells[cells.status == "not_implemented"]
    out = []
    for (fw, arch, tech), grp in ni.groupby(["framework", "arch", "technique"], sort=False):
        msg = (grp.iloc[0]["row"].get("error") or "").strip().splitlines()[-1:] or ["no message"]
        out.append(f"Not implemented: {fw}/{arch}/{tech} ({len(grp)} cells; {msg[0]}).")
    return out + expected_absent(rows)


def failed(cells: pd.DataFrame) -> list[str]:
    out = []
    for _, c in cells[cells.status == "failed"].iterrows():
        last = (c["row"].get("error") or "").strip().splitlines()[-1:] or ["no error text"]
        out.append(f"Failed: `{c['cell_id']}` ({c['framework']}/{c['arch']}/{c['technique']}, {c['label']}, seed "
                   f"{c['seed']}): {last[0]}")
    return out


def outside_tolerance(pairs: pd.DataFrame) -> list[str]:
    return [f"Frameworks outside tolerance{' (controlled mode)' if r.controlled else ''}: "
            f"{ARCH_NAMES.get(r.arch, r.arch)} {r.technique} ({r.label}): PyTorch {fmt.pct(r.pytorch)}% vs Keras "
            f"{fmt.pct(r.keras)}%, {fmt.delta_pts(r.keras, r.pytorch)} pts (tolerance ±{r.tolerance * 100:g})."
            for r in pairs[~pairs.within.astype(bool)].itertuples()]


def findings_section(cells, points, chosen, base, pairs, rows, left_out=()) -> list:
    groups = (("No measurable effect", no_effect(points, chosen, base)),
              ("Latency vs MACs", latency_vs_macs(points, base)),
              ("Missing cells", missing(cells, rows)),
              ("Failed cells", failed(cells)),
              ("Frameworks outside tolerance", outside_tolerance(pairs)),
              ("Rows left out", list(left_out)))
    blocks = [Heading("5. Findings and warnings"),
              Para("Generated from the rows with the thresholds of shared/tolerances.py.")]
    for title, items in groups:
        blocks += [Heading(title, 3), Bullets(items) if items else Para("None.")]
    return blocks
