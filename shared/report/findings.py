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
from .latency import BATCH_SIZES, NO_CHANGE, RUNTIME_NAMES, point_verdict
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
    for bs in BATCH_SIZES:
        flat = defaultdict(list)
        for _, p in chosen[chosen.technique != "baseline"].iterrows():
            if point_verdict(p, bs) == NO_CHANGE:
                flat[(p["framework"], p["arch"], p["runtime"])].append(p["technique"])
        out += [f"Batch-{bs} latency: no measurable change (95% CI contains 1, or within the A/A noise) on "
                f"{fw}/{arch} ({RUNTIME_NAMES.get(rt, rt)}): {', '.join(techs)}."
                for (fw, arch, rt), techs in flat.items()]
    return out


def _ci(p, bs) -> str:
    return (f"{p[f'speedup_b{bs}']:.2f}× [{p[f'speedup_b{bs}_lo']:.2f}–{p[f'speedup_b{bs}_hi']:.2f}], "
            f"A/A noise ±{p[f'noise_b{bs}']:.3f}")


def measured_speedups(chosen: pd.DataFrame) -> list[str]:
    """Chosen points that measurably changed speed (CI excludes 1 and the change exceeds the A/A noise)."""
    out = []
    for _, p in chosen[chosen.technique != "baseline"].iterrows():
        for bs in BATCH_SIZES:
            v = point_verdict(p, bs)
            if v in ("faster", "slower"):
                out.append(f"{_who(p)} is measurably {v} at batch {bs} on {RUNTIME_NAMES.get(p['runtime'])}: "
                           f"{_ci(p, bs)}.")
    return out


def latency_vs_macs(points: pd.DataFrame, base: dict) -> list[str]:
    out, sparse = [], defaultdict(list)
    for _, p in points[~points.controlled.astype(bool) & (points.technique != "baseline")].iterrows():
        b = base.get((p["framework"], p["arch"]))
        if b is None:
            continue
        m, hi = speedup(b["macs"], p["macs"]), p["speedup_b1_hi"]  # the upper CI bound: a noisy gain still counts
        if m >= tol.MAC_REDUCTION_NOTABLE and np.isfinite(hi) and hi < tol.SPEEDUP_EXPECTED:
            out.append(f"Latency did not follow MACs: {_who(p)} cut MACs {m:.2f}× but batch-1 latency only "
                       f"{_ci(p, 1)} (the CI stays below {tol.SPEEDUP_EXPECTED}×).")
        if p["technique"] in PRUNE_UNSTRUCTURED:
            sparse[(p["framework"], p["arch"], p["runtime"])].append(p)
    for (fw, arch, rt), pts in sparse.items():
        for bs in BATCH_SIZES:
            verdicts = [(q, point_verdict(q, bs)) for q in pts]
            timed = [(q, v) for q, v in verdicts if v is not None]
            if not timed:
                continue
            changed = [(q, v) for q, v in timed if v != NO_CHANGE]
            where = f"{fw}/{arch} ({RUNTIME_NAMES.get(rt, rt)}), batch {bs}"
            if not changed:
                lo = min(q[f"speedup_b{bs}"] for q, _ in timed)
                hi = max(q[f"speedup_b{bs}"] for q, _ in timed)
                out.append(f"Unstructured sparsity: no measurable change on {where}: all {len(timed)} points "
                           f"within their CI or the A/A noise (speedups {lo:.2f}–{hi:.2f}×; dense kernels still "
                           f"multiply the zeros).")
            else:
                listed = "; ".join(f"{_who(q)} {v} {_ci(q, bs)}" for q, v in changed)
                p_chance = chance_of_flags(len(changed), len(timed))
                if p_chance >= tol.FAMILY_ALPHA:
                    out.append(f"Unstructured sparsity: no measurable change on {where} as a family: {len(changed)} "
                               f"of {len(timed)} points outside their 95% CI, as many as chance puts outside "
                               f"{len(timed)} such intervals (expected {tol.POINT_ALPHA * len(timed):.1f}; "
                               f"P(≥ {len(changed)}) = {p_chance:.2f}): {listed}.")
                else:
                    out.append(f"Unstructured sparsity on {where}: {len(changed)} of {len(timed)} points measurably "
                               f"changed speed, more than chance (P(≥ {len(changed)}) = {p_chance:.3f}): {listed}.")
    return out


def chance_of_flags(k: int, n: int) -> float:
    """P(at least k of n 95% intervals exclude the truth) when none of the n points changed: the binomial tail
    (intervals of one group share a reference and so are not independent; the tail is the usual approximation)."""
    from scipy.stats import binom

    return float(binom.sf(k - 1, n, tol.POINT_ALPHA))


def timing_gaps(cells: pd.DataFrame) -> list[str]:
    """Rows without a usable latency: never timed, or timed under contention (shown as missing)."""
    ok = cells[cells.status == "ok"]
    # timed on any runtime (a row timed only off its framework's own runtime, ORT's int8, is not a gap)
    timed = set(ok[ok.latency_b1_ms_median.notna()].cell_id) | {
        c["cell_id"] for _, c in ok.iterrows()
        if any(not e.get("contended") for e in (c["row"].get("timings") or {}).values())}
    contended = [(c["cell_id"], rt) for _, c in ok.iterrows()
                 for rt, e in (c["row"].get("timings") or {}).items() if e.get("contended")]
    untimed = [c["cell_id"] for _, c in ok.iterrows() if c["cell_id"] not in timed
               and not any(cid == c["cell_id"] for cid, _ in contended)
               and any(k != "none" for k in ((c["row"].get("artifact") or {}).get("runtimes") or {}))]
    out = []
    if untimed:
        out.append(f"No timing for {_count(untimed, 'row')} with artifacts: run `python -m shared time OUT` on a quiet "
                   f"machine ({', '.join(f'`{c}`' for c in untimed[:5])}{' …' if len(untimed) > 5 else ''}).")
    if contended:
        out.append(f"Timed while other processes used the CPU (marked contended; their latencies are left out, rerun "
                   f"`python -m shared time OUT --retime` on a quiet machine): "
                   f"{', '.join(f'`{c}` on {RUNTIME_NAMES.get(rt, rt)}' for c, rt in contended)}.")
    return out


def _count(items, noun: str) -> str:
    return f"{len(items)} {noun}{'s' * (len(items) != 1)}"


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
            f"{fmt.pct(r.keras)}%, {fmt.delta_pts(r.keras, r.pytorch)} pts (tolerance ±{r.tolerance * 100:g}; "
            f"{r.verdict.replace('**NO** ', '').strip('()')})."
            for r in pairs[~pairs.within.astype(bool)].itertuples()]


def findings_section(cells, points, chosen, base, pairs, rows, left_out=()) -> list:
    groups = (("No measurable effect", no_effect(points, chosen, base)),
              ("Measured speed changes", measured_speedups(chosen)),
              ("Latency vs MACs", latency_vs_macs(points, base)),
              ("Timing", timing_gaps(cells)),
              ("Missing cells", missing(cells, rows)),
              ("Failed cells", failed(cells)),
              ("Frameworks outside tolerance", outside_tolerance(pairs)),
              ("Rows left out", list(left_out)))
    blocks = [Heading("5. Findings and warnings"),
              Para("Generated from the rows with the thresholds of shared/tolerances.py.")]
    for title, items in groups:
        blocks += [Heading(title, 3), Bullets(items) if items else Para("None.")]
    return blocks
