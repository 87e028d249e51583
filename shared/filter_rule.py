"""Structured filter pruning, defined without a framework: which filters a prune keeps.

The PyTorch suite prunes with Torch-Pruning (DepGraph); the Keras suite has no such library, so this module
is the definition both follow, on the framework-neutral state (``shared.state``: conv weights OIHW). The
PyTorch tests check that Torch-Pruning keeps exactly the channels computed here.

The rule (Li et al. 2017, section 3.1, extended to residual couplings as in DepGraph, Fang et al. 2023):
  * Coupled groups. Channels that must be removed together form one group: a plain conv's filters, or, in
    ResNet-18, every conv writing into one residual stream (the stem with layer1's block outputs; each later
    stage's block outputs with its projection shortcut). VGG's hidden FC and every classifier are never
    pruned.
  * Group ratio: the ratio of the group's first layer in ``specs.layer_names`` order. Per-stage lists give
    the stem no stage (``protocols.stage_of_layer``), so a stage-wise prune leaves the stem group (and with
    it layer1's block outputs) whole, while a uniform prune cuts it like every other group.
  * Importance of a channel: the L1 norm of its filter (all input channels and taps, no bias, no BN),
    averaged over the group's convs. Torch-Pruning's default also scores BN scales and the consumers' input
    slices; the PyTorch suite restricts it to the filters, as here.
  * Count: a group of C channels keeps ``int(C * (1 - ratio))`` (Torch-Pruning's expression, evaluated in
    double precision), so 0.5 halves an even width. A group of one channel is never pruned (Torch-Pruning
    skips it); keeping nothing is an error.
  * Selection: the ``C - kept`` least important channels go. Exact ties are broken by removing the lower
    index first (a stable sort); Torch-Pruning's ``topk`` leaves tie order unspecified, but exact ties do
    not occur between trained float filters.
  * Importance is computed once on the unpruned state, for every group, before any channel is removed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import specs
from .protocols import stage_of_layer


_NEVER_PRUNED = frozenset({"fc1", "fc2", "fc3", "fc", "head_fc"})  # VGG's hidden FCs and the classifiers keep their widths


@dataclass(frozen=True)
class CoupledGroup:
    layers: tuple[str, ...]  # entries of specs.layer_names sharing one width, canonical order
    convs: tuple[str, ...]  # conv module paths whose filters are removed together

    @property
    def first(self) -> str:
        return self.layers[0]


def module_of_layer(arch: str, layer: str) -> str:
    """Module path of the conv (or VGG's hidden FC) whose output width ``layer`` sets."""
    if arch in specs.PLAIN_STACKS:
        return layer if layer in _NEVER_PRUNED else f"{layer}.conv"
    return "stem.conv" if layer == "stem" else layer


def channel_flow(arch: str, with_head: bool = False) -> dict[str, tuple[str | None, str | None]]:
    """For every conv/linear module path: (layer setting its input channels, layer setting its outputs).

    ``None`` stands for a width no prune changes (the RGB input, the classes, a custom head's hidden FC).
    Members of a coupled group share kept channels, so any member names the group.
    """
    p = specs.plan(arch, head=specs.Head(1) if with_head else None)
    if arch in specs.PLAIN_STACKS:
        names = specs.layer_names(arch)
        flow = {c.name: (names[i - 1] if i else None, names[i]) for i, c in enumerate(p.convs)}
        # fc1 sees the last conv's channels, each as ``spatial`` flattened positions (VGG-16: 1x1)
        src = names[len(p.convs) - 1]
        for lin in p.hidden:
            flow[lin.name], src = (src, lin.name), lin.name
        flow[p.classifier.name] = (src, None)
        return flow
    flow, stream = {"stem.conv": (None, "stem")}, "stem"
    for blk in p.blocks:
        src = stream
        for c in blk.convs:  # conv1 -> conv2 (-> conv3 in a bottleneck)
            flow[c.name], src = (src, c.name), c.name
        if blk.shortcut:
            flow[blk.shortcut.name] = (stream, blk.last.name)
        stream = blk.last.name
    if p.head_fc is not None:  # a custom head's hidden FC reads the stream; the classifier reads it
        flow["head_fc"], flow["fc"] = (stream, None), (None, None)
    else:
        flow["fc"] = (stream, None)
    return flow


def coupled_groups(arch: str) -> list[CoupledGroup]:
    """The prunable groups, ordered by their first layer."""
    names = specs.layer_names(arch)
    order = {n: i for i, n in enumerate(names)}
    parent = {n: n for n in names}

    def root(n):
        while parent[n] != n:
            n = parent[n]
        return n

    p = specs.plan(arch)
    if isinstance(p, specs.ResNetPlan):  # an identity shortcut adds the block's input to its output: one space
        stream = "stem"
        for blk in p.blocks:
            if blk.shortcut is None:
                a, b = sorted((root(stream), root(blk.last.name)), key=order.get)
                parent[b] = a
            stream = blk.last.name
    members: dict[str, list[str]] = {}
    for n in names:
        members.setdefault(root(n), []).append(n)
    convs_by_out: dict[str, list[str]] = {}
    for module, (_, out) in channel_flow(arch).items():
        if out is not None and module not in _NEVER_PRUNED:
            convs_by_out.setdefault(root(out), []).append(module)
    groups = [CoupledGroup(tuple(layers), tuple(convs_by_out[r]))
              for r, layers in members.items() if r in convs_by_out]
    return sorted(groups, key=lambda g: order[g.first])


def kept_count(width: int, ratio: float) -> int:
    """Channels a group of ``width`` keeps at ``ratio`` (Torch-Pruning's floor, in double precision)."""
    if width == 1:
        return 1
    kept = min(width, int(width * (1 - float(ratio))))
    if kept < 1:
        raise ValueError(f"pruning ratio {ratio} would remove all {width} channels of a group")
    return kept


def group_ratios(arch: str, ratios_per_layer) -> list[tuple[CoupledGroup, float]]:
    ratios = _ratios_by_name(arch, ratios_per_layer)
    return [(g, ratios[g.first]) for g in coupled_groups(arch)]


def _ratios_by_name(arch: str, ratios_per_layer) -> dict[str, float]:
    names = specs.layer_names(arch)
    if len(ratios_per_layer) != len(names):
        raise ValueError(f"{arch} takes {len(names)} per-layer ratios ({', '.join(names)}), "
                         f"got {len(ratios_per_layer)}")
    ratios = {n: float(r) for n, r in zip(names, ratios_per_layer)}
    if any(ratios[n] for n in names if n in _NEVER_PRUNED):
        raise ValueError("the hidden FC (fc1) is never pruned: its ratio must be 0")
    if any(not 0.0 <= r < 1.0 for r in ratios.values()):
        raise ValueError(f"pruning ratios must lie in [0, 1), got {ratios_per_layer}")
    return ratios


def filter_importance(state: dict, group: CoupledGroup) -> np.ndarray:
    """Per-channel L1 norm of the group's filters, averaged over its convs (float64)."""
    norms = [np.abs(np.asarray(state[f"{c}.weight"], dtype=np.float64)).reshape(
        np.shape(state[f"{c}.weight"])[0], -1).sum(1) for c in group.convs]
    return np.mean(norms, axis=0)


def prune_plan(state: dict, arch: str, widths, ratios_per_layer) -> tuple[tuple[int, ...], dict[str, list[int]]]:
    """(new widths, {layer name: kept output-channel indices, ascending}) for a prune of ``state``."""
    widths = specs.resolve_widths(arch, widths=widths)
    width_of = dict(zip(specs.layer_names(arch), widths))
    new_width = dict(width_of)
    kept = {n: list(range(w)) for n, w in width_of.items()}
    for group, ratio in group_ratios(arch, ratios_per_layer):
        c = width_of[group.first]
        n_keep = kept_count(c, ratio)
        removed = np.argsort(filter_importance(state, group), kind="stable")[: c - n_keep]
        keep = sorted(set(range(c)) - {int(i) for i in removed})
        for layer in group.layers:
            new_width[layer], kept[layer] = n_keep, keep
    return tuple(new_width[n] for n in specs.layer_names(arch)), kept


def prune_state(state: dict, arch: str, kept: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """The neutral state of the pruned network: every tensor sliced to the kept channels."""
    out = dict(state)
    spatial = {lin.name: lin.spatial for lin in specs.linears_of(specs.plan(arch))}
    for module, (src, dst) in channel_flow(arch, with_head="head_fc.weight" in state).items():
        rows = kept[dst] if dst else slice(None)
        cols = kept[src] if src else slice(None)
        if src and spatial.get(module, 1) > 1:  # a channel's block of positions in (C, H, W) flatten order
            n = spatial[module]
            cols = [c * n + j for c in kept[src] for j in range(n)]
        out[f"{module}.weight"] = np.asarray(state[f"{module}.weight"])[rows][:, cols]
        for key in (f"{module}.bias", *_bn_keys(arch, module)):
            if key in state:
                out[key] = np.asarray(state[key])[rows]
    return out


def _bn_keys(arch: str, module: str) -> list[str]:
    p = specs.plan(arch)
    bn = {**{c.name: c.bn_name for c in specs.convs_of(p)}, **{l.name: l.bn_name for l in specs.linears_of(p)}}
    bn = bn.get(module)
    return [f"{bn}.{s}" for s in ("weight", "bias", "running_mean", "running_var")] if bn else []


def uniform_layer_ratios(arch: str, ratio: float) -> list[float]:
    """``ratio`` for every conv layer; the hidden FC keeps its width."""
    return [0.0 if n in _NEVER_PRUNED else float(ratio) for n in specs.layer_names(arch)]


def stage_layer_ratios(arch: str, stage_ratios) -> list[float]:
    """One ratio per stage (VGG pooling stage / ResNet-18 block); layers of no stage keep their width."""
    stages = [stage_of_layer(arch, i) for i in range(len(specs.layer_names(arch)))]
    if len(stage_ratios) != max(stages) + 1:
        raise ValueError(f"{arch} has {max(stages) + 1} stages, got {len(stage_ratios)} stage ratios")
    return [0.0 if s < 0 else float(stage_ratios[s]) for s in stages]


def conv_layer_ratios(arch: str, conv_ratios) -> list[float]:
    """One ratio per conv layer in canonical order (Li et al.'s per-layer tables); the hidden FC keeps its width."""
    prunable = [n for n in specs.layer_names(arch) if n not in _NEVER_PRUNED]
    if len(conv_ratios) != len(prunable):
        raise ValueError(f"{arch} has {len(prunable)} conv layers, got {len(conv_ratios)} ratios")
    ratios = dict(zip(prunable, conv_ratios))
    return [float(ratios.get(n, 0.0)) for n in specs.layer_names(arch)]


def technique_layer_ratios(technique: str, arch: str, settings: dict) -> list[float]:
    """Per-layer ratios of a structured technique's cell (filter_iterative: those of each round)."""
    if technique == "filter_uniform":
        return uniform_layer_ratios(arch, settings["ratio"])
    if technique == "filter_stagewise":
        return stage_layer_ratios(arch, settings["stage_ratios"])
    if technique == "filter_li_a":
        if arch != "vgg16":
            raise ValueError("filter_li_a is Li et al.'s VGG-16-pruned-A: no ResNet-18 configuration exists")
        return conv_layer_ratios(arch, settings["layer_ratios"])
    if technique == "filter_iterative":
        return uniform_layer_ratios(arch, settings["ratio_per_round"])
    raise ValueError(f"{technique!r} is not a structured filter-pruning technique")


def structure_figures(baseline, pruned, kept, ratios_per_layer) -> dict:
    """A structured row's figures from two built models (anything carrying ``.arch``, ``.widths``, ``.plan``)."""
    names = specs.layer_names(pruned.arch)
    return {
        "pruned_widths": list(pruned.widths),
        "baseline_widths": list(baseline.widths),
        "kept_channels": kept,
        "ratio_settings": {
            "per_layer": dict(zip(names, map(float, ratios_per_layer))),
            "per_group": {g.first: r for g, r in group_ratios(pruned.arch, ratios_per_layer)},
        },
        "macs_reduction": specs.count_macs(baseline.plan) / specs.count_macs(pruned.plan),
        "params_reduction": specs.count_params(baseline.plan) / specs.count_params(pruned.plan),
    }
