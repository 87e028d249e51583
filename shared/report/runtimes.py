"""Section 1's latency-by-runtime tables: the A/A timing noise of every group, and the chosen points on every
runtime they were timed on (Keras float models run on TensorFlow as well as on LiteRT)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import fmt
from .cells import ARCH_NAMES, FRAMEWORK_NAMES
from .doc import Heading, Para, Table
from .latency import BATCH_SIZES, RUNTIME_NAMES, noise_halfwidth, speedup_cell, timing_columns


def noise_table(cells: pd.DataFrame) -> list:
    """Per (framework, arch, runtime): the A/A speedup's CI half-width and the median speedup CI half-width."""
    recs = {}
    for _, c in cells[cells.status == "ok"].iterrows():
        for runtime, e in (c["row"].get("timings") or {}).items():
            if e.get("contended"):
                continue
            key = (c["fw_i"], c["arch_i"], c["framework"], c["arch"], runtime)
            rec = recs.setdefault(key, {f"{k}_b{b}": [] for b in BATCH_SIZES for k in ("aa", "ci", "agree")})
            for b in BATCH_SIZES:
                if f"speedup_b{b}_ci95" in e:
                    lo, hi = e[f"speedup_b{b}_ci95"]
                    rec[f"ci_b{b}"].append((hi - lo) / 2)
                    rec[f"aa_b{b}"].append(noise_halfwidth(e["noise"][f"b{b}"]))
                    if f"b{b}" in e.get("copies", {}):  # timings before two loads per artifact have none
                        rec[f"agree_b{b}"].append(e["copies"][f"b{b}"]["agree"])
    rows = []
    for (_, _, fw, arch, runtime), rec in sorted(recs.items(), key=lambda kv: kv[0][:2] + (kv[0][4],)):
        rows.append([FRAMEWORK_NAMES.get(fw, fw), ARCH_NAMES.get(arch, arch), RUNTIME_NAMES.get(runtime, runtime),
                     *[f"±{max(rec[f'aa_b{b}']):.3f}" if rec[f"aa_b{b}"] else fmt.DASH for b in BATCH_SIZES],
                     *[f"±{np.median(rec[f'ci_b{b}']):.3f}" if rec[f"ci_b{b}"] else fmt.DASH for b in BATCH_SIZES],
                     *[_disagreeing(rec[f"agree_b{b}"]) for b in BATCH_SIZES]])
    if not rows:
        return [Heading("Timing noise", 3), Para("No timings: run `python -m shared time OUT` on a quiet machine.")]
    return [Heading("Timing noise", 3),
            Para("A/A: the baseline timed against a second copy of itself in the same rounds; its distance from "
                 "1× (largest over seeds) is the smallest change a speedup must exceed to count as measured. The "
                 "speedup CI column is the median half-width of the 95% CIs of every model timed there. Every "
                 "model is loaded twice and both copies run in the same rounds; a speedup's CI spans both copies' "
                 "CIs, and the last columns count the models whose two loads disagree (CIs apart)."),
            Table(["Framework", "Arch", "Runtime", *[f"A/A b{b}" for b in BATCH_SIZES],
                   *[f"Speedup CI b{b} (median)" for b in BATCH_SIZES],
                   *[f"Loads disagree b{b}" for b in BATCH_SIZES]], rows)]


def _disagreeing(agree: list[bool]) -> str:
    return f"{agree.count(False)} / {len(agree)}" if agree else fmt.DASH


def by_runtime_table(chosen: pd.DataFrame) -> list:
    rows = []
    for _, p in chosen.iterrows():
        seen = {}
        for r in p["rows"]:
            for runtime, e in (r.get("timings") or {}).items():
                if not e.get("contended"):
                    seen.setdefault(runtime, []).append(timing_columns(e))
        for runtime, entries in seen.items():
            mean = {k: float(np.mean([e[k] for e in entries])) for k in entries[0]}
            for b in BATCH_SIZES:  # the seeds' CIs spanned, as in the headline
                if f"speedup_b{b}_lo" in mean:
                    mean[f"speedup_b{b}_lo"] = min(e[f"speedup_b{b}_lo"] for e in entries)
                    mean[f"speedup_b{b}_hi"] = max(e[f"speedup_b{b}_hi"] for e in entries)
                    mean[f"noise_b{b}"] = max(e[f"noise_b{b}"] for e in entries)
            q = {**mean, "technique": p["technique"]}
            rows.append([FRAMEWORK_NAMES.get(p["framework"], p["framework"]), ARCH_NAMES.get(p["arch"], p["arch"]),
                         p["technique"], p["label"], RUNTIME_NAMES.get(runtime, runtime),
                         fmt.ms(q.get("latency_b1_ms_median")), speedup_cell(q, 1),
                         fmt.ms(q.get("latency_b64_ms_median")), speedup_cell(q, 64)])
    if not rows:
        return []
    return [Heading("Latency by runtime", 3),
            Para("Every chosen point on every runtime it was timed on, each against the fp32 baseline on that same "
                 "runtime (ms: per image at batch 1, per batch of 64 at batch 64)."),
            Table(["Framework", "Arch", "Technique", "Setting", "Runtime", "b1 ms", "b1 ×fp32", "b64 ms",
                   "b64 ×fp32"], rows)]


def runtimes_section(cells: pd.DataFrame, chosen: pd.DataFrame) -> list:
    return [*noise_table(cells), *by_runtime_table(chosen)]
