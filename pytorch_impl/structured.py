"""Structured filter pruning (Li et al. 2017) with Torch-Pruning's DepGraph (Fang et al. 2023).

Filters are physically removed, and the pruned network is rebuilt from its new width spec
(``models.build(arch, widths=...)``) so the Keras suite can build the identical network. Which filters go is
defined framework-free in ``shared.filter_rule``; ``FilterL1Importance`` configures Torch-Pruning to match.
"""
from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

from shared import filter_rule, specs
from . import models
from .weights import export_state, import_state


class FilterL1Importance(tp.importance.GroupMagnitudeImportance):
    """Li et al.'s filter L1 norm, averaged over a coupled group's convs (``shared.filter_rule``).

    Torch-Pruning's magnitude importance also scores BN scales and the consumers' input-channel slices of
    every group member; only the ``prune_conv_out_channels`` entries (the filters themselves) are passed on.
    """

    def __init__(self):
        super().__init__(p=1, group_reduction="mean", normalizer=None, bias=False, target_types=[nn.Conv2d])

    def __call__(self, group):
        filters = [item for item in group if item.dep.pruning_fn == tp.prune_conv_out_channels]
        return super().__call__(filters)


def num_classes(model) -> int:
    return specs.linears_of(model.plan)[-1].cout


def read_widths(model: nn.Module, arch: str) -> tuple[int, ...]:
    """The width spec of a (pruned) model, read from its modules in ``specs.layer_names`` order."""
    modules = dict(model.named_modules())
    layers = [modules[filter_rule.module_of_layer(arch, name)] for name in specs.layer_names(arch)]
    return tuple(m.out_features if isinstance(m, nn.Linear) else m.out_channels for m in layers)


def prune_filters(model: nn.Module, ratios_per_layer) -> tuple[nn.Module, dict[str, list[int]]]:
    """Prune with Torch-Pruning; return the rebuilt model and {layer: kept channels of the input model}."""
    arch, before = model.arch, model.widths
    model = model.to("cpu").eval()  # eval: tracing must not update BN statistics (nor see a batch of 1)
    removed = _prune_in_place(model, arch, ratios_per_layer)
    widths = read_widths(model, arch)
    rebuilt = import_state(models.build(arch, num_classes(model), widths=widths, head=specs.head_of(model.plan)),
                           export_state(model))
    kept = {layer: [i for i in range(w) if i not in removed.get(filter_rule.module_of_layer(arch, layer), ())]
            for layer, w in zip(specs.layer_names(arch), before)}
    return rebuilt, kept


def _prune_in_place(model: nn.Module, arch: str, ratios_per_layer) -> dict[str, set[int]]:
    """Run one Torch-Pruning step; return {conv path: removed output channels}."""
    modules = dict(model.named_modules())
    ratio_of_conv = {modules[conv]: ratio for group, ratio in filter_rule.group_ratios(arch, ratios_per_layer)
                     for conv in group.convs}
    pruner = tp.pruner.BasePruner(
        model,
        example_inputs=torch.zeros(1, 3, model.plan.input_hw, model.plan.input_hw),  # tracing needs shapes only
        importance=FilterL1Importance(),
        pruning_ratio=0.0,  # every conv has its own entry below; nothing else is pruned
        pruning_ratio_dict=ratio_of_conv,  # local pruning: each coupled group ranked on its own
        ignored_layers=[m for m in model.modules() if isinstance(m, nn.Linear)],  # fc1 and classifiers
        round_to=None,
    )
    names = {m: n for n, m in modules.items()}
    removed: dict[str, set[int]] = {}
    for group in pruner.step(interactive=True):
        for dep, idxs in group:
            if dep.pruning_fn == tp.prune_conv_out_channels:
                removed[names[dep.layer]] = set(tp._helpers.to_plain_idxs(idxs))
        group.prune()
    return removed
