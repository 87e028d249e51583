"""Structured filter pruning (Li et al. 2017) in Keras: the shared filter rule applied to the neutral state.

Keras has no counterpart of Torch-Pruning (tfmot prunes weights, not filters), so the prune is the
framework-free definition itself: ``shared.filter_rule.prune_plan`` picks the kept channels of every coupled
group from the baseline's neutral state, ``prune_state`` slices every tensor to them, and the network is
rebuilt from its new width spec (``models.build(arch, widths=...)``), the same route the PyTorch suite's
rebuild takes after Torch-Pruning. The PyTorch tests check that Torch-Pruning keeps exactly these channels,
and this suite's tests that both suites' pruned networks agree (channels, counts and logits).
"""
from __future__ import annotations

from shared import filter_rule, specs
from . import models
from .common import finetune, load_baseline, measured
from .train import evaluate
from .weights import export_state, import_state


def num_classes(model) -> int:
    return specs.linears_of(model.plan)[-1].cout


def prune_filters(model, ratios_per_layer, weight_decay: float = 0.0):
    """Prune with the shared rule; return the rebuilt model and {layer: kept channels of the input model}.

    ``weight_decay`` is the rebuilt model's L2 (the recipe's, when it is fine-tuned next): the width spec
    and the weights travel through the neutral state, the regulariser with the build.
    """
    arch, state = model.arch, export_state(model)
    widths, kept = filter_rule.prune_plan(state, arch, model.widths, ratios_per_layer)
    rebuilt = models.build(arch, num_classes(model), widths=widths, weight_decay=weight_decay)
    return import_state(rebuilt, filter_rule.prune_state(state, arch, kept)), kept


def compose_kept(kept_so_far: dict[str, list[int]], kept_now: dict[str, list[int]]) -> dict[str, list[int]]:
    """Kept channels of the baseline after another prune whose indices refer to the previous model."""
    return {layer: [kept_so_far[layer][i] for i in idxs] for layer, idxs in kept_now.items()}


def accuracy_on_test(model, ctx) -> float:
    return evaluate(model, ctx.dataset.test, ctx.preset.recipe.eval_batch_size)[1]


def accuracy_on_val(model, ctx) -> float | None:
    val = ctx.dataset.val
    return evaluate(model, val, ctx.preset.recipe.eval_batch_size)[1] if len(val) else None


def _prune(model, ctx, ratios_per_layer):
    # the rebuilt model is fine-tuned next: it carries the recipe's L2, as the baseline did
    return prune_filters(model, ratios_per_layer, weight_decay=ctx.preset.recipe.weight_decay)


def prune_finetune_measure(ctx, cell) -> dict:
    """One prune of the baseline at the cell's ratios, the protocol's fine-tuning, then the row."""
    ratios_per_layer = filter_rule.technique_layer_ratios(cell.technique, cell.arch, cell.settings)
    baseline = load_baseline(ctx, cell)
    pruned, kept = _prune(baseline, ctx, ratios_per_layer)  # the baseline itself is left as it was
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
    model = baseline
    ratios = filter_rule.technique_layer_ratios(cell.technique, cell.arch, cell.settings)
    kept = {layer: list(range(w)) for layer, w in zip(specs.layer_names(cell.arch), model.widths)}
    rounds, history = [], []
    for r in range(1, int(cell.settings["rounds"]) + 1):
        model, kept_now = _prune(model, ctx, ratios)  # a new model each round: the baseline stays intact
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
