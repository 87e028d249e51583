"""Unstructured pruning drivers: one-shot (global, layer-wise, random), gradual (Zhu & Gupta, global or per
layer), Li et al.'s sensitivity scan and the sparsity search.

The masks come from ``shared.masks`` (numpy, neutral state); a backend only holds them, zeroing the masked
weights after every optimizer step, so both suites prune the same weights and a pruned weight never returns.
"""
from __future__ import annotations

from .. import masks as M, pruning_rules as rules
from .common import accuracy, finetune, finetune_extras, load_baseline, measured, recalibrate_bn


class GradualPruning:
    """A train step hook: Zhu & Gupta's cubic schedule raising one monotone mask, global or per layer."""

    def __init__(self, backend, model, final: float, protocol, scope: str):
        self.backend, self.model, self.final, self.protocol, self.scope = backend, model, float(final), protocol, scope
        self.masker = backend.masker(model)
        self.masks = None
        self.schedule: list[dict] = []

    def __call__(self, step: int, total: int) -> None:
        target = M.gradual_target(step, total, self.final, self.protocol)
        if target is not None:
            weights = M.weights_of(self.backend.export_state(self.model), self.model.arch)
            self.masks = M.raise_masks(weights, self.masks, target, self.scope)
            self.masker.set(self.masks)
            self.schedule.append({"step": step, "target": target, "achieved": M.overall_sparsity(self.masks),
                                  "layer_sparsity": M.layer_sparsity(self.masks)})
        elif self.masks is not None:
            self.masker.apply()

    def state(self) -> tuple[dict, dict]:
        """The masks raised so far and their schedule: what a training resumed mid-ramp continues from."""
        return ({} if self.masks is None else {f"mask/{k}": v for k, v in self.masks.items()}), {"schedule": self.schedule}

    def restore(self, arrays: dict, record: dict) -> None:
        masks = {k[len("mask/"):]: v.astype(bool) for k, v in arrays.items() if k.startswith("mask/")}
        self.masks = masks or None
        self.schedule = list(record.get("schedule", []))
        if self.masks is not None:
            self.masker.set(self.masks)


class HeldMasks:
    """A train step hook that keeps fixed one-shot masks in place."""

    def __init__(self, backend, model, masks):
        self.masker = backend.masker(model)
        self.masker.set(masks)

    def __call__(self, step: int, total: int) -> None:
        self.masker.apply()


def sparsity_figures(backend, model) -> dict:
    """Sparsity of the conv/linear weights (shared counting rule)."""
    per_layer = rules.layer_zeros(backend.export_state(model), model.arch)
    zeros = sum(z for z, _ in per_layer.values())
    total = sum(n for _, n in per_layer.values())
    return {"sparsity": zeros / total, "zero_weights": zeros, "prunable_weights": total,
            "layer_sparsity": {name: z / n for name, (z, n) in per_layer.items()}}


# Technique key -> (method, scope): one-shot methods name a ``masks.ONE_SHOT`` rule, gradual a scope.
METHODS = {
    "prune_global": ("one_shot", "global"), "prune_layerwise": ("one_shot", "layerwise"),
    "prune_random": ("one_shot", "random"), "prune_gradual": ("gradual", "global"),
    "prune_gradual_layerwise": ("gradual", "layerwise"),
}


def pruned_and_finetuned(backend, ctx, cell, technique: str, sparsity: float | None = None):
    """The baseline pruned as ``technique`` says, fine-tuned with its masks held; (model, row figures)."""
    method, scope = METHODS[technique]
    target = float(cell.settings["sparsity"] if sparsity is None else sparsity)
    protocol, budget = ctx.preset.protocol, ctx.preset.protocol.prune_budget
    model = load_baseline(backend, ctx, cell)
    label = f"{technique} s={target}"
    extra = {}
    if method == "gradual":
        hook = GradualPruning(backend, model, target, protocol, scope)
        pre_acc = None  # nothing is pruned before its fine-tuning starts
    else:
        state = backend.export_state(model)
        masks = M.ONE_SHOT[scope](state, cell.arch, target, cell.seed)
        backend.import_state(model, M.apply_masks(state, masks))
        pre_acc = accuracy(backend, model, ctx, "test")
        hook = HeldMasks(backend, model, masks)
    stats = finetune(backend, ctx, cell, model, budget, label, on_step=hook)
    if method == "gradual":
        extra["gradual_schedule"] = hook.schedule
        extra["schedule"] = f"Zhu & Gupta cubic, {scope} magnitude, monotone masks"
    # The final masks are in place: BN statistics re-estimated for the pruned network (zeros unaffected).
    extra["bn_recalibration_images"] = recalibrate_bn(backend, model, ctx)
    extra.update({**sparsity_figures(backend, model), "target_sparsity": target,
                  **backend.sparse_sizes(model, ctx.preset.measure.gzip_level),
                  **finetune_extras(stats), "pre_finetune_test_acc": pre_acc})
    return model, extra


def prune(backend, ctx, cell) -> dict:
    model, extra = pruned_and_finetuned(backend, ctx, cell, cell.technique)
    return measured(backend, model, ctx, **extra)


# --- analyses on the validation split: no fine-tuning ------------------------------------------------------

def _val_scorer(backend, ctx, baseline):
    """Validation accuracy of a neutral state, imported into a probe network of the baseline's shape."""
    probe = backend.build(baseline.arch, widths=baseline.widths, **ctx.network)

    def val_accuracy(state: dict) -> float:
        backend.import_state(probe, state)
        return accuracy(backend, probe, ctx, "val")

    return probe, val_accuracy


def sensitivity(backend, ctx, cell) -> dict:
    """Li et al. 2017 Fig. 2 (``pruning_rules.sensitivity_scan``): removal emulated by masking filters on the
    neutral state, exactly equivalent to a physically narrower layer."""
    baseline = load_baseline(backend, ctx, cell)
    _, val_accuracy = _val_scorer(backend, ctx, baseline)
    scan = rules.sensitivity_scan(backend.export_state(baseline), cell.arch, ctx.preset.protocol.sensitivity_ratios,
                                  val_accuracy)
    return {**scan, "baseline_val_acc": accuracy(backend, baseline, ctx, "val")}


def sparsity_search(backend, ctx, cell) -> dict:
    """The largest one-shot global L1 sparsity within the validation tolerance (``rules.bisect_sparsity``)."""
    baseline = load_baseline(backend, ctx, cell)
    base_state = backend.export_state(baseline)
    probe, val_accuracy = _val_scorer(backend, ctx, baseline)
    best, figures = rules.bisect_sparsity(
        lambda s: M.apply_masks(base_state, M.global_masks(base_state, cell.arch, s)), val_accuracy,
        accuracy(backend, baseline, ctx, "val"), ctx.preset.protocol)
    backend.import_state(probe, base_state if best is None else best)
    return measured(backend, probe, ctx, **sparsity_figures(backend, probe), **figures)


REGISTRY = {**{key: prune for key in METHODS}, "sensitivity": sensitivity, "sparsity_search": sparsity_search}
