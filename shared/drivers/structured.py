"""Structured filter pruning drivers (Li et al. 2017): one-shot at per-layer ratios, and iterative rounds.

Which filters go is ``shared.filter_rule``'s (PyTorch's Torch-Pruning is configured to agree and is tested
to); the pruned network is rebuilt from its new width spec, so both frameworks build the identical network.
Iterative rounds split the one structured budget between them (``protocols.split_steps``): every structured
technique gets the same number of fine-tuning steps.
"""
from __future__ import annotations

from .. import filter_rule, specs
from ..protocols import budget_figures, split_steps
from .common import (accuracy, finetune, finetune_data, finetune_extras, load_baseline, measured,
                     recalibrate_bn, total_steps)


def compose_kept(kept_so_far: dict[str, list[int]], kept_now: dict[str, list[int]]) -> dict[str, list[int]]:
    """Kept channels of the baseline after another prune whose indices refer to the previous model."""
    return {layer: [kept_so_far[layer][i] for i in idxs] for layer, idxs in kept_now.items()}


def prune_and_recalibrate(backend, model, ctx, ratios_per_layer):
    pruned, kept = backend.prune_filters(model, ratios_per_layer)
    recalibrate_bn(backend, pruned, ctx)
    return pruned, kept


def prune_finetune_measure(backend, ctx, cell) -> dict:
    """One prune of the baseline at the cell's ratios, the structured budget, then the row."""
    ratios = filter_rule.technique_layer_ratios(cell.technique, cell.arch, cell.settings)
    budget = ctx.preset.protocol.filter_budget
    baseline = load_baseline(backend, ctx, cell)
    pruned, kept = prune_and_recalibrate(backend, baseline, ctx, ratios)
    pre_finetune = accuracy(backend, pruned, ctx, "test")
    stats = finetune(backend, ctx, cell, pruned, budget, f"{cell.technique} finetune")
    return measured(backend, pruned, ctx, **filter_rule.structure_figures(baseline, pruned, kept, ratios),
                    pre_finetune_test_acc=pre_finetune, **finetune_extras(stats),
                    bn_recalibration_images=ctx.preset.protocol.bn_recalibration_images)


def filter_iterative(backend, ctx, cell) -> dict:
    """``rounds`` x (prune ``ratio_per_round`` of the remaining filters uniformly, fine-tune a share)."""
    budget = ctx.preset.protocol.filter_budget
    baseline = load_baseline(backend, ctx, cell)
    model = baseline
    ratios = filter_rule.technique_layer_ratios(cell.technique, cell.arch, cell.settings)
    kept = {layer: list(range(w)) for layer, w in zip(specs.layer_names(cell.arch), model.widths)}
    shares = split_steps(total_steps(ctx, budget), int(cell.settings["rounds"]))
    rounds, history, time_s = [], [], 0.0
    for r, steps in enumerate(shares, start=1):
        model, kept_now = prune_and_recalibrate(backend, model, ctx, ratios)  # a new model: the baseline stays
        kept = compose_kept(kept, kept_now)
        pre_finetune = accuracy(backend, model, ctx, "test")
        stats = finetune(backend, ctx, cell, model, budget, f"filter_iterative round {r} finetune", steps=steps)
        history += [{"round": r, **epoch} for epoch in stats["history"]]
        time_s += stats["train_time_s"]
        rounds.append({
            "round": r, "steps": steps, "params": specs.count_params(model.plan),
            "macs": specs.count_macs(model.plan), "widths": list(model.widths), "pre_finetune_test_acc": pre_finetune,
            "test_acc": accuracy(backend, model, ctx, "test"), "val_acc": accuracy(backend, model, ctx, "val"),
        })
    n_images = len(finetune_data(ctx, budget).train)
    budget_row = {**budget_figures(ctx.preset.recipe, budget, n_images, sum(shares)), "round_steps": shares}
    return measured(backend, model, ctx, **filter_rule.structure_figures(baseline, model, kept, ratios),
                    rounds=rounds, pre_finetune_test_acc=rounds[0]["pre_finetune_test_acc"],
                    finetune_history=history, finetune_time_s=time_s, budget=budget_row,
                    bn_recalibration_images=ctx.preset.protocol.bn_recalibration_images)


REGISTRY = {"filter_uniform": prune_finetune_measure, "filter_stagewise": prune_finetune_measure,
            "filter_li_a": prune_finetune_measure, "filter_iterative": filter_iterative}
