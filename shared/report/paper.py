"""Section 2: tables in the layouts of the papers (Li et al. 2017 Table 1; original/pruned/quantized; KD;
quantization; the combined pipelines stage by stage)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import fmt
from .cells import ARCH_NAMES, FRAMEWORK_NAMES, FRAMEWORKS
from .doc import Heading, Para, Table
from .latency import PRIMARY_RUNTIME, RUNTIME_NAMES, SPEEDUP_NOTE, speedup_cell
from .published import LI2017_SOURCE, LI2017_TABLE1, LI2017_WIDTH

QUANT_TECHNIQUES = ("baseline", "int8_dynamic", "int8_static", "int8_qat", "bf16", "fixed_point")


def extra_mean(p, key):
    """Mean over the point's seed rows of a technique-specific scalar (NaN when no row has it)."""
    vals = [r.get(key) for r in p["rows"] if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return float(np.mean(vals)) if vals else float("nan")


SAME_RUNTIME_NOTE = (
    "**×fp32** is the fp32 baseline's latency over the variant's, runtime for runtime: PyTorch variants and "
    "the PyTorch baseline in eager PyTorch; Keras variants and the Keras baseline's fp32 flatbuffer on LiteRT "
    "(XNNPACK), same threads, same CPU (see Provenance). " + SPEEDUP_NOTE)


def _pick(chosen: pd.DataFrame, fw: str, arch: str, technique: str):
    sub = chosen[(chosen.framework == fw) & (chosen.arch == arch) & (chosen.technique == technique)]
    return None if sub.empty else sub.iloc[0]


def li_table(chosen: pd.DataFrame, base: dict) -> list:
    rows = [[f"{p['model']} (published)", f"{p['error_pct']:.2f}", fmt.sci(p["flops"]),
             f"{p['flops_pruned_pct']:.1f}%" if p["flops_pruned_pct"] else fmt.DASH, fmt.sci(p["params"]),
             f"{p['params_pruned_pct']:.1f}%" if p["params_pruned_pct"] else fmt.DASH] for p in LI2017_TABLE1]
    notes = {}
    for fw in FRAMEWORKS:
        b, a = base.get((fw, "vgg16")), _pick(chosen, fw, "vgg16", "filter_li_a")
        if b is None:
            continue
        width = (b["rows"][0].get("config") or {}).get("width")
        rows.append([f"VGG-16 (ours, {FRAMEWORK_NAMES[fw]})", fmt.pct(1 - b["test_acc"]), fmt.sci(b["macs"]),
                     fmt.DASH, fmt.sci(b["params_total"]), fmt.DASH])
        if a is not None:
            rows.append([f"VGG-16-pruned-A (ours, {FRAMEWORK_NAMES[fw]})", fmt.pct(1 - a["test_acc"]),
                         fmt.sci(a["macs"]), fmt.percent_of(b["macs"] - a["macs"], b["macs"]),
                         fmt.sci(a["params_total"]), fmt.percent_of(b["params_total"] - a["params_total"],
                                                                   b["params_total"])])
        if width is not None and width != LI2017_WIDTH:
            notes.setdefault(width, []).append(FRAMEWORK_NAMES[fw])
    notes = [f"{' and '.join(fws)}: our width multiplier is {w:g} (config.width) where the paper's networks are "
             f"full width ({LI2017_WIDTH:g}): absolute FLOPs and parameters are not comparable; the pruned "
             f"percentages and the change in error are." for w, fws in notes.items()]
    return [Heading("Li et al. 2017, Table 1 layout (VGG-16, CIFAR-10)", 3),
            Table(["Model", "Error %", "FLOPs", "Pruned %", "Params", "Pruned %"], rows,
                  caption=f"Published rows from {LI2017_SOURCE}; FLOPs are multiply-accumulates."),
            *[Para(n) for n in notes]]


def opq_table(chosen: pd.DataFrame, base: dict) -> list:
    stages = (("Original", "baseline"), ("Pruned (unstructured)", "prune_global"),
              ("Pruned (filters)", "filter_uniform"), ("Quantized (int8 static)", "int8_static"),
              ("Pruned + quantized", "pipeline_prune_int8"))
    rows = []
    for fw in FRAMEWORKS:
        for arch in ARCH_NAMES:
            for name, tech in stages:
                p = base.get((fw, arch)) if tech == "baseline" else _pick(chosen, fw, arch, tech)
                if p is not None:
                    rows.append([FRAMEWORK_NAMES[fw], ARCH_NAMES[arch], name, p["label"], fmt.pct(p["test_acc"]),
                                 fmt.mb(p["size_bytes"]), fmt.mb(p["size_gzip_bytes"]),
                                 RUNTIME_NAMES[PRIMARY_RUNTIME[fw]],
                                 fmt.ms(p["latency_b1_ms_median"]), speedup_cell(p, 1)])
    return [Heading("Original / Pruned / Quantized", 3),
            Table(["Framework", "Arch", "Model", "Setting", "Acc %", "MB", "Gzip MB", "Runtime", "ms (b1)",
                   "b1 ×fp32"], rows)
            if rows else Para("No baseline rows.")]


def kd_table(chosen: pd.DataFrame, base: dict) -> list:
    rows = []
    for fw in FRAMEWORKS:
        for arch in ARCH_NAMES:
            kd, ctl, b = (_pick(chosen, fw, arch, "kd"), _pick(chosen, fw, arch, "kd_control"), base.get((fw, arch)))
            if kd is None and ctl is None:
                continue
            teacher = extra_mean(kd, "teacher_test_acc") if kd is not None else float("nan")
            if np.isnan(teacher) and b is not None:
                teacher = b["test_acc"]  # the teacher is the baseline of the same run
            kd_acc = kd["test_acc"] if kd is not None else None
            ctl_acc = ctl["test_acc"] if ctl is not None else None
            student = kd if kd is not None else ctl
            rows.append([FRAMEWORK_NAMES[fw], ARCH_NAMES[arch], fmt.pct(teacher), fmt.pct(ctl_acc), fmt.pct(kd_acc),
                         fmt.delta_pts(kd_acc, ctl_acc), fmt.integer(b["params_total"] if b is not None else None),
                         fmt.integer(student["params_total"])])
    return [Heading("Knowledge distillation", 3),
            Table(["Framework", "Arch", "Teacher acc %", "Student alone acc % (kd_control)",
                   "Student distilled acc % (kd)", "Δ distilled − alone (pts)", "Teacher params", "Student params"],
                  rows) if rows else Para("No kd / kd_control rows.")]


def quant_tables(points: pd.DataFrame, base: dict) -> list:
    blocks = [Heading("Quantization and reduced precision", 3)]
    indep = points[~points.controlled.astype(bool) & points.technique.isin(QUANT_TECHNIQUES)]
    for arch in ARCH_NAMES:
        sub = indep[indep.arch == arch]
        if sub.empty:
            continue
        rows = []
        for (tech, key), grp in sub.groupby(["technique", "settings_key"], sort=False):
            row = [tech if tech != "baseline" else "fp32 (baseline)", grp.iloc[0]["label"]]
            for fw in FRAMEWORKS:
                p = grp[grp.framework == fw]
                b = base.get((fw, arch))
                if p.empty:
                    row += [fmt.DASH] * 7
                    continue
                p = p.iloc[0]
                row += [fmt.acc_cell(p["test_acc"], p["acc_std"], p["n"], p["acc_ci95"]),
                        fmt.delta_pts(p["test_acc"], b["test_acc"] if b is not None else None),
                        fmt.mb(p["size_gzip_bytes"]), fmt.ms(p["latency_b1_ms_median"]),
                        speedup_cell(p, 1), fmt.ms(p["latency_b64_ms_median"]), speedup_cell(p, 64)]
            rows.append(row)
        cols = ["Variant", "Setting"] + [f"{FRAMEWORK_NAMES[fw]} {c}" for fw in FRAMEWORKS
                                         for c in ("acc %", "Δ pts", "gzip MB", "b1 ms", "b1 ×fp32", "b64 ms",
                                                   "b64 ×fp32")]
        blocks += [Heading(f"Quantization — {ARCH_NAMES[arch]}", 4), Table(cols, rows)]
        dyn = sub[sub.technique == "int8_dynamic"]
        cover = [f"{FRAMEWORK_NAMES.get(p['framework'], p['framework'])} "
                 f"{fmt.percent_of(extra_mean(p, 'quantized_params'), extra_mean(p, 'quantizable_params'))}"
                 for _, p in dyn.iterrows()]
        if cover:
            blocks.append(Para(f"int8_dynamic converted these shares of the quantizable weights: {'; '.join(cover)}."))
    if len(blocks) == 1:
        blocks.append(Para("No quantization rows."))
    blocks.append(Para(SAME_RUNTIME_NOTE))
    blocks.append(Para("fixed_point is simulated (fake quantization in float32): its size is the fp32 model's and "
                       "it is not timed (no runtime executes Qm.n arithmetic)."))
    return blocks


def pipeline_table(chosen: pd.DataFrame, base: dict) -> list:
    rows = []
    for _, p in chosen[chosen.technique.str.startswith("pipeline_")].iterrows():
        b = base.get((p["framework"], p["arch"]))
        lead = [FRAMEWORK_NAMES.get(p["framework"], p["framework"]), ARCH_NAMES.get(p["arch"], p["arch"]),
                p["technique"]]
        if b is not None:
            rows.append(lead + ["baseline", fmt.pct(b["test_acc"]), fmt.integer(b["params_nonzero"]),
                                fmt.integer(b["macs"]), fmt.mb(b["size_gzip_bytes"]), fmt.DASH])
        stages = pd.DataFrame([dict(s, _i=i) for r in p["rows"] for i, s in enumerate(r.get("stages") or [])])
        if stages.empty:
            continue
        groups = list(stages.groupby(["_i", "stage"], sort=True))
        for k, ((_i, name), s) in enumerate(groups):
            mean = s.mean(numeric_only=True)
            final = k == len(groups) - 1  # only the pipeline's output is an artifact, and so timed
            rows.append(lead + [name, fmt.pct(mean.get("test_acc")), fmt.integer(mean.get("params_nonzero")),
                                fmt.integer(mean.get("macs")), fmt.mb(mean.get("size_gzip_bytes")),
                                speedup_cell(p, 1) if final else fmt.DASH])
    return [Heading("Combined pipelines, measured after every stage", 3),
            Table(["Framework", "Arch", "Pipeline", "Stage", "Acc %", "Nonzero params", "MACs", "Gzip MB",
                   "b1 ×fp32 baseline"], rows,
                  caption="The final stage is timed against the uncompressed fp32 baseline on the framework's "
                          "runtime (intermediate stages are not saved, so not timed).")
            if rows else Para("No pipeline rows.")]


def paper_section(points: pd.DataFrame, chosen: pd.DataFrame, base: dict) -> list:
    return [Heading("2. Paper-style tables"), *li_table(chosen, base), *opq_table(chosen, base),
            *kd_table(chosen, base), *quant_tables(points, base), *pipeline_table(chosen, base)]
