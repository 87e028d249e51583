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
from .common import finetune, load_baseline, measured
from .train import evaluate
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
    rebuilt = import_state(models.build(arch, num_classes(model), widths=widths), export_state(model))
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
        example_inputs=torch.zeros(1, 3, specs.INPUT_HW, specs.INPUT_HW),  # tracing needs shapes only
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


def compose_kept(kept_so_far: dict[str, list[int]], kept_now: dict[str, list[int]]) -> dict[str, list[int]]:
    """Kept channels of the baseline after another prune whose indices refer to the previous model."""
    return {layer: [kept_so_far[layer][i] for i in idxs] for layer, idxs in kept_now.items()}


def accuracy_on_test(model, ctx) -> float:
    return evaluate(model, ctx.dataset.test, ctx.preset.recipe.eval_batch_size)[1]


def accuracy_on_val(model, ctx) -> float | None:
    val = ctx.dataset.val
    return evaluate(model, val, ctx.preset.recipe.eval_batch_size)[1] if len(val) else None


def prune_finetune_measure(ctx, cell) -> dict:
    """One prune of the baseline at the cell's ratios, the protocol's fine-tuning, then the row."""
    ratios_per_layer = filter_rule.technique_layer_ratios(cell.technique, cell.arch, cell.settings)
    baseline = load_baseline(ctx, cell)
    pruned, kept = prune_filters(load_baseline(ctx, cell), ratios_per_layer)
    pre_finetune = accuracy_on_test(pruned, ctx)
    stats = finetune(pruned, ctx, cell, label=f"{cell.technique} finetune")
    return measured(pruned, ctx, **filter_rule.structure_figures(baseline, pruned, kept, ratios_per_layer),
                    pre_finetune_test_acc=pre_finetune, finetune_history=stats["history"])


def filter_uniform(ctx, cell) -> dict:
    """Every coupled conv group loses ``ratio`` of its filters."""
    return prune_finetune_measure(ctx, cell)


def filter_stagewise(ctx, cell) -> dict:
    """One ratio per VGG pooling stage / ResNet-18 block (a coupled group takes its first layer's)."""
    return prune_finetune_measure(ctx, cell)


def filter_li_a(ctx, cell) -> dict:
    """Li et al. 2017's VGG-16-pruned-A: per-conv ratios (50% of conv1 and conv8-conv13)."""
    return prune_finetune_measure(ctx, cell)


def filter_iterative(ctx, cell) -> dict:
    """``rounds`` x (prune ``ratio_per_round`` of the remaining filters uniformly, fine-tune)."""
    baseline = load_baseline(ctx, cell)
    model = load_baseline(ctx, cell)
    ratios = filter_rule.technique_layer_ratios(cell.technique, cell.arch, cell.settings)
    kept = {layer: list(range(w)) for layer, w in zip(specs.layer_names(cell.arch), model.widths)}
    rounds, history = [], []
    for r in range(1, int(cell.settings["rounds"]) + 1):
        model, kept_now = prune_filters(model, ratios)
        kept = compose_kept(kept, kept_now)
        pre_finetune = accuracy_on_test(model, ctx)
        stats = finetune(model, ctx, cell, label=f"filter_iterative round {r} finetune")
        history += [{"round": r, **epoch} for epoch in stats["history"]]
        rounds.append({
            "round": r, "params": models.count_params(model), "macs": specs.count_macs(model.plan),
            "widths": list(model.widths), "pre_finetune_test_acc": pre_finetune,
            "test_acc": accuracy_on_test(model, ctx), "val_acc": accuracy_on_val(model, ctx),
        })
    return measured(model, ctx, **filter_rule.structure_figures(baseline, model, kept, ratios), rounds=rounds,
                    pre_finetune_test_acc=rounds[0]["pre_finetune_test_acc"], finetune_history=history)


REGISTRY = {
    "filter_uniform": filter_uniform,
    "filter_stagewise": filter_stagewise,
    "filter_li_a": filter_li_a,
    "filter_iterative": filter_iterative,
}
