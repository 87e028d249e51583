"""Section 4's figures. Each builder takes the tidy tables and returns a figure, or None when its data is
absent (the report then says the figure was skipped and why)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from .cells import ARCH_NAMES, FRAMEWORK_NAMES, FRAMEWORKS, PRUNE_UNSTRUCTURED, plain_settings
from .style import FRAMEWORK_COLORS, FRAMEWORK_DASHES, FRAMEWORK_MARKERS, TECHNIQUE_COLORS, plt, sns


@dataclass
class Data:
    cells: pd.DataFrame
    points: pd.DataFrame
    base: dict


def _grid(nrows, ncols, w=4.6, h=3.4):
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False, layout="constrained")
    return fig, axes


def _ok(d: Data, techniques) -> pd.DataFrame:
    c = d.cells
    return c[(c.status == "ok") & ~c.controlled.astype(bool) & c.technique.isin(techniques)]


def _present(values, order):
    return [v for v in order if v in set(values)]


def _fw_legend(ax, fws):
    handles = [Line2D([], [], color=FRAMEWORK_COLORS[f], marker=FRAMEWORK_MARKERS[f], ls="") for f in fws]
    return handles, [FRAMEWORK_NAMES[f] for f in fws]


def accuracy_vs_sparsity(d: Data):
    df = _ok(d, PRUNE_UNSTRUCTURED).dropna(subset=["test_acc"]).copy()
    if df.empty:
        return None
    df["sparsity"] = [s.get("sparsity") for s in df.settings]
    df["acc"] = df.test_acc * 100
    archs, fws = _present(df.arch, ARCH_NAMES), _present(df.framework, FRAMEWORKS)
    techs = _present(df.technique, PRUNE_UNSTRUCTURED)
    fig, axes = _grid(len(archs), len(fws))
    for i, arch in enumerate(archs):
        for j, fw in enumerate(fws):
            ax, sub = axes[i, j], df[(df.arch == arch) & (df.framework == fw)]
            if not sub.empty:
                sns.lineplot(sub, x="sparsity", y="acc", hue="technique", hue_order=techs, palette=TECHNIQUE_COLORS,
                             marker="o", errorbar="sd", ax=ax, legend=(i == 0 and j == len(fws) - 1))
            b = d.base.get((fw, arch))
            if b is not None:
                ax.axhline(b["test_acc"] * 100, color=TECHNIQUE_COLORS["baseline"], ls="--", lw=1, label="baseline")
            ax.set(title=f"{FRAMEWORK_NAMES[fw]} · {ARCH_NAMES[arch]}", xlabel="sparsity", ylabel="test acc %")
    return fig


def _sensitivity_tidy(d: Data) -> pd.DataFrame:
    recs = []
    for _, c in _ok(d, ["sensitivity"]).iterrows():
        r = c["row"]
        layers = list(dict.fromkeys(p["layer"] for p in r.get("curve") or []))
        recs += [dict(framework=c.framework, arch=c.arch, seed=c.seed, layer=p["layer"], ratio=p["ratio"],
                      val_acc=p["val_acc"] * 100) for p in r.get("curve") or []]
        if r.get("baseline_val_acc") is not None:  # ratio 0: the unpruned network
            recs += [dict(framework=c.framework, arch=c.arch, seed=c.seed, layer=layer, ratio=0.0,
                          val_acc=r["baseline_val_acc"] * 100) for layer in layers]
    return pd.DataFrame(recs)


def sensitivity_curves(d: Data):
    df = _sensitivity_tidy(d)
    if df.empty:
        return None
    archs, fws = _present(df.arch, ARCH_NAMES), _present(df.framework, FRAMEWORKS)
    fig, axes = _grid(len(archs), len(fws), w=5.2)
    for i, arch in enumerate(archs):
        layers = list(dict.fromkeys(df[df.arch == arch].layer))
        pal = dict(zip(layers, sns.color_palette("viridis", len(layers)).as_hex()))  # shallow -> deep
        for j, fw in enumerate(fws):
            ax, sub = axes[i, j], df[(df.arch == arch) & (df.framework == fw)]
            if not sub.empty:
                sns.lineplot(sub, x="ratio", y="val_acc", hue="layer", hue_order=layers, palette=pal, marker=".",
                             errorbar=None, ax=ax, legend=(j == len(fws) - 1))
                if j == len(fws) - 1:
                    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), fontsize=6, title="layer", ncol=1)
            ax.set(title=f"{FRAMEWORK_NAMES[fw]} · {ARCH_NAMES[arch]}", xlabel="filters pruned (fraction)",
                   ylabel="val acc %")
    return fig


def sensitivity_bars(d: Data):
    df = _sensitivity_tidy(d)
    df = df[df.ratio > 0] if not df.empty else df
    if df.empty:
        return None
    archs = _present(df.arch, ARCH_NAMES)
    fig, axes = _grid(len(archs), 1, w=10)
    for i, arch in enumerate(archs):
        sub = df[df.arch == arch]
        ratio = 0.9 if np.isclose(sub.ratio, 0.9).any() else sub.ratio.max()  # the paper's 90%, else the largest
        sub = sub[np.isclose(sub.ratio, ratio)]
        fws, ax = _present(sub.framework, FRAMEWORKS), axes[i, 0]
        sns.barplot(sub, x="layer", y="val_acc", hue="framework", hue_order=fws, palette=FRAMEWORK_COLORS,
                    errorbar=None, ax=ax)
        ax.set(title=f"{ARCH_NAMES[arch]}: each layer alone pruned {ratio:.0%} (no fine-tuning)", xlabel="",
               ylabel="val acc %")
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0))  # outside: the bars fill the panel
        ax.tick_params(axis="x", rotation=60, labelsize=7)
    return fig


def _pareto(d: Data, col: str, scale, xlabel: str, log: bool, higher_better: bool = False):
    p = d.points[~d.points.controlled.astype(bool)].dropna(subset=["test_acc", col])
    if p.empty:
        return None
    archs = _present(p.arch, ARCH_NAMES)
    fig, axes = _grid(1, len(archs), w=5.6, h=4.2)
    for j, arch in enumerate(archs):
        ax, sub = axes[0, j], p[p.arch == arch]
        for fw in _present(sub.framework, FRAMEWORKS):
            s = sub[sub.framework == fw].sort_values([col, "test_acc"], ascending=[not higher_better, False])
            x, y = s[col].to_numpy() * scale, s.test_acc.to_numpy() * 100
            ax.scatter(x, y, c=[TECHNIQUE_COLORS.get(t, "grey") for t in s.technique], marker=FRAMEWORK_MARKERS[fw],
                       edgecolors=FRAMEWORK_COLORS[fw], linewidths=0.8, s=36, zorder=3)
            front = y >= np.maximum.accumulate(y)  # no cheaper (faster) point is more accurate
            ax.step(x[front], y[front], where="pre" if higher_better else "post", color=FRAMEWORK_COLORS[fw], dashes=FRAMEWORK_DASHES[fw] or
                    (None, None), lw=1.4, zorder=2)
        if log:
            ax.set_xscale("log")
        ax.set(title=ARCH_NAMES[arch], xlabel=xlabel, ylabel="test acc %")
    techs = _present(p.technique, TECHNIQUE_COLORS)
    handles = [Line2D([], [], color=TECHNIQUE_COLORS[t], marker="o", ls="") for t in techs]
    fh, fl = _fw_legend(axes[0, -1], _present(p.framework, FRAMEWORKS))
    fig.legend(handles + fh, techs + [f"{n} (front)" for n in fl], loc="outside right upper", fontsize=7)
    return fig


def pareto_size(d: Data):
    return _pareto(d, "size_gzip_bytes", 1e-6, "model size, gzip (MB, log)", True)


def pareto_latency(d: Data):
    # a speedup, not a latency: each framework's models against its own fp32 baseline on its own runtime
    return _pareto(d, "speedup_b1", 1.0, "batch-1 speedup over the fp32 baseline (same runtime)", True, True)


def filter_rounds(d: Data):
    recs = []
    for _, c in _ok(d, ["filter_iterative"]).iterrows():
        rounds = c["row"].get("rounds") or []
        b = d.base.get((c.framework, c.arch))
        if rounds and min(r["round"] for r in rounds) > 0 and b is not None:  # round 0: the baseline itself
            recs.append(dict(framework=c.framework, arch=c.arch, round=0, params=b["params_total"], macs=b["macs"],
                             test_acc=b["test_acc"]))
        recs += [dict(framework=c.framework, arch=c.arch, round=r["round"], params=r.get("params"),
                      macs=r.get("macs"), test_acc=r.get("test_acc")) for r in rounds]
    df = pd.DataFrame(recs)
    if df.empty:
        return None
    df["test_acc"] = df.test_acc * 100
    archs, fws = _present(df.arch, ARCH_NAMES), _present(df.framework, FRAMEWORKS)
    metrics = (("params", "parameters"), ("macs", "MACs"), ("test_acc", "test acc %"))
    fig, axes = _grid(len(archs), len(metrics), w=4)
    for i, arch in enumerate(archs):
        for j, (m, label) in enumerate(metrics):
            sns.lineplot(df[df.arch == arch], x="round", y=m, hue="framework", hue_order=fws, palette=FRAMEWORK_COLORS,
                         style="framework", style_order=fws, dashes=FRAMEWORK_DASHES, markers=FRAMEWORK_MARKERS,
                         errorbar="sd", ax=axes[i, j], legend=(i == 0 and j == 0))  # dashes: equal counts overlap
            axes[i, j].set(title=f"{ARCH_NAMES[arch]}: {label}", ylabel=label)
            axes[i, j].xaxis.get_major_locator().set_params(integer=True)
    return fig


def int8_deltas(d: Data):
    p = d.points[~d.points.controlled.astype(bool) & d.points.technique.isin(["int8_dynamic", "int8_static",
                                                                             "int8_qat"])].copy()
    p["delta"] = [(r.test_acc - d.base[(r.framework, r.arch)]["test_acc"]) * 100
                  if (r.framework, r.arch) in d.base else np.nan for r in p.itertuples()]
    p = p.dropna(subset=["delta"])
    if p.empty:
        return None
    # short tick labels ("static / minmax / 32"): the full settings text would overlap its neighbours
    p["variant"] = ["\n".join([t.removeprefix("int8_"), *(str(v) for _, v in sorted(plain_settings(st).items(),
                                                                                    reverse=True))])
                    for t, st in zip(p.technique, p.settings)]
    archs = _present(p.arch, ARCH_NAMES)
    fig, axes = _grid(len(archs), 1, w=9)
    for i, arch in enumerate(archs):
        sub, ax = p[p.arch == arch], axes[i, 0]
        sns.barplot(sub, x="variant", y="delta", hue="framework", hue_order=_present(sub.framework, FRAMEWORKS),
                    palette=FRAMEWORK_COLORS, errorbar=None, ax=ax)
        ax.axhline(0, color="black", lw=0.8)
        ax.set(title=f"{ARCH_NAMES[arch]}: int8 accuracy change vs fp32", xlabel="", ylabel="Δ test acc (pts)")
        ax.tick_params(axis="x", labelsize=7)
    return fig


def accuracy_vs_bits(d: Data):
    p = d.points[~d.points.controlled.astype(bool) & d.points.technique.isin(["baseline", "fixed_point", "bf16"])]
    p = p.assign(bits=[s.get("bits", 32 if t == "baseline" else 16) for s, t in zip(p.settings, p.technique)],
                 acc=p.test_acc * 100)
    if not (p.technique == "fixed_point").any():
        return None
    archs = _present(p.arch, ARCH_NAMES)
    fig, axes = _grid(1, len(archs), w=5)
    for j, arch in enumerate(archs):
        ax, sub = axes[0, j], p[p.arch == arch]
        for fw in _present(sub.framework, FRAMEWORKS):
            line = sub[(sub.framework == fw) & (sub.technique != "bf16")].sort_values("bits")
            ax.plot(line.bits, line.acc, color=FRAMEWORK_COLORS[fw], marker=FRAMEWORK_MARKERS[fw],
                    dashes=FRAMEWORK_DASHES[fw] or (None, None), label=f"{FRAMEWORK_NAMES[fw]} fixed point / fp32")
            bf = sub[(sub.framework == fw) & (sub.technique == "bf16")]
            ax.scatter(bf.bits, bf.acc, color=FRAMEWORK_COLORS[fw], marker="*", s=110, zorder=3,
                       label=f"{FRAMEWORK_NAMES[fw]} bf16")
        ax.set_xscale("log", base=2)
        ticks = sorted(set(sub.bits))
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set(title=ARCH_NAMES[arch], xlabel="bits per weight", ylabel="test acc %")
    axes[0, -1].legend(fontsize=7)
    return fig


def training_curves(d: Data):
    recs = []
    for _, c in _ok(d, ["baseline", "kd", "kd_control"]).iterrows():
        recs += [dict(framework=c.framework, arch=c.arch, technique=c.technique, seed=c.seed, epoch=h.get("epoch"),
                      val_acc=h.get("val_acc"), train_loss=h.get("train_loss")) for h in c["row"].get("history") or []]
    df = pd.DataFrame(recs)
    if df.empty:
        return None
    df["val_acc"] = pd.to_numeric(df.val_acc, errors="coerce") * 100
    df["train_loss"] = pd.to_numeric(df.train_loss, errors="coerce")
    # a run without a validation split (val_size=0) logs no val_acc: draw only what was logged
    metrics = [(m, lab) for m, lab in (("val_acc", "val acc %"), ("train_loss", "train loss")) if df[m].notna().any()]
    archs = _present(df.arch, ARCH_NAMES)
    if not metrics or not archs:
        return None
    fig, axes = _grid(len(metrics), len(archs), w=5.2)
    for j, arch in enumerate(archs):
        sub = df[df.arch == arch]
        for i, (m, label) in enumerate(metrics):
            sns.lineplot(sub, x="epoch", y=m, hue="framework", hue_order=_present(sub.framework, FRAMEWORKS),
                         palette=FRAMEWORK_COLORS, style="technique",
                         style_order=_present(sub.technique, ["baseline", "kd", "kd_control"]), marker="o",
                         errorbar="sd", ax=axes[i, j], legend=(i == 0 and j == len(archs) - 1))
            axes[i, j].set(title=f"{ARCH_NAMES[arch]}: {label}", ylabel=label)
            axes[i, j].xaxis.get_major_locator().set_params(integer=True)
    return fig


@dataclass(frozen=True)
class Spec:
    name: str
    title: str
    caption: str
    build: Callable[[Data], object]
    needs: str  # what rows the figure needs, said when it is skipped


FIGURES = (
    Spec("accuracy_vs_sparsity", "Accuracy vs sparsity", "Test accuracy against the fraction of conv/linear weights "
         "removed: one-shot global L1, gradual (Zhu & Gupta), layer-wise L1 and random; mean ± sd over seeds; dashed: "
         "baseline.", accuracy_vs_sparsity, "prune_global/prune_gradual/prune_gradual_layerwise/prune_layerwise/prune_random rows"),
    Spec("sensitivity_curves", "Per-layer sensitivity", "Validation accuracy when one layer's filters alone are "
         "pruned by L1 norm, without fine-tuning (Li et al. Fig. 2).", sensitivity_curves, "sensitivity rows"),
    Spec("sensitivity_pruned_90", "Each layer pruned 90%", "Validation accuracy with each layer alone pruned at 90% "
         "of its filters (the largest ratio present when 0.9 is absent; the panel title says which).",
         sensitivity_bars, "sensitivity rows"),
    Spec("pareto_size", "Pareto front: accuracy vs size", "Every operating point; colour: technique, marker: "
         "framework; the step line is each framework's Pareto front.", pareto_size, "rows with test metrics"),
    Spec("pareto_latency", "Pareto front: accuracy vs speedup",
         "As above against the measured batch-1 speedup over the same framework's fp32 baseline on the same runtime "
         "(PyTorch eager; Keras on LiteRT), log scale.",
         pareto_latency, "rows with test metrics"),
    Spec("filter_rounds", "Structured pruning rounds", "Iterative filter pruning: parameters, MACs and test accuracy "
         "after every prune + fine-tune round (round 0: the baseline).", filter_rounds, "filter_iterative rows"),
    Spec("int8_deltas", "int8 accuracy deltas", "Test accuracy change of every int8 variant against the fp32 baseline "
         "(points).", int8_deltas, "int8_* rows and a baseline"),
    Spec("accuracy_vs_bits", "Accuracy vs bit width", "Simulated fixed-point weights at each bit width, the fp32 "
         "baseline at 32 and bf16 (star) at 16.", accuracy_vs_bits, "fixed_point rows"),
    Spec("training_curves", "Training curves", "Validation accuracy and training loss per epoch (baseline, and the "
         "KD students); mean ± sd over seeds.", training_curves, "rows with a per-epoch history"),
)
