"""Unstructured magnitude pruning (torch.nn.utils.prune), Li et al.'s sensitivity scan, the sparsity search.

Which layers are pruned, how sparsity is counted and how a removed filter is emulated come from
``shared.pruning_rules``, so the Keras suite prunes and counts the same weights.
"""
from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path

import torch
from torch.nn.utils import prune

from shared import pruning_rules as rules
from shared.measure import file_sizes
from .common import finetune, load_baseline, measured
from .train import evaluate, pick_device
from .weights import export_state, import_state


# --- masks ------------------------------------------------------------------------------------------------

def prunable_params(model) -> list[tuple[torch.nn.Module, str]]:
    return [(model.get_submodule(name), "weight") for name in rules.prunable_layer_names(model.arch)]


def apply_global(model, sparsity: float, seed: int = 0) -> None:
    """One L1 threshold over all conv/linear weights: layers end up with different sparsities."""
    prune.global_unstructured(prunable_params(model), pruning_method=prune.L1Unstructured, amount=float(sparsity))


def apply_layerwise(model, sparsity: float, seed: int = 0) -> None:
    """Blalock et al.'s layer-wise baseline: every layer at the same sparsity by its own L1 magnitude."""
    for module, name in prunable_params(model):
        prune.l1_unstructured(module, name, amount=float(sparsity))


def apply_random(model, sparsity: float, seed: int = 0) -> None:
    """Blalock et al.'s floor: ``shared.pruning_rules.random_masks`` (the Keras suite's masks) as custom masks."""
    masks = rules.random_masks(export_state(model), model.arch, sparsity, seed)
    for name, (module, attr) in zip(rules.prunable_layer_names(model.arch), prunable_params(model)):
        prune.custom_from_mask(module, attr, torch.from_numpy(masks[name]).to(module.weight.device, torch.float32))


# One signature for the three one-shot methods; only random pruning uses the seed.
ONE_SHOT = {"global": apply_global, "layerwise": apply_layerwise, "random": apply_random}


def make_permanent(model) -> None:
    """Fold every mask into its weight (prune.remove): plain parameters again, no pre-hooks, zeros kept."""
    for module, name in prunable_params(model):
        if prune.is_pruned(module):
            prune.remove(module, name)


class GradualPruner:
    """train()'s on_step hook for Zhu & Gupta 2017: the global L1 mask raised along the cubic schedule.

    The reparametrisation (weight_orig * weight_mask) is installed before training, so the optimizer that
    train() builds holds weight_orig and keeps updating it while the masks grow in place.
    """

    def __init__(self, model, final: float, protocol):
        self.params = prunable_params(model)
        self.final, self.protocol = float(final), protocol
        self.schedule: list[dict] = []
        for module, name in self.params:
            prune.identity(module, name)

    def __call__(self, step: int, total_steps: int, model) -> None:
        target = rules.gradual_target(step, total_steps, self.final, self.protocol)
        if target is not None:
            self.raise_to(target)
            self.schedule.append({"step": step, "target": target, "achieved": self.sparsity()})

    def counts(self) -> tuple[int, int]:
        masks = [module.weight_mask for module, _ in self.params]
        return sum(int((m == 0).sum()) for m in masks), sum(m.numel() for m in masks)

    def sparsity(self) -> float:
        zeros, total = self.counts()
        return zeros / total

    @torch.no_grad()
    def raise_to(self, target: float) -> None:
        zeros, total = self.counts()
        extra = round(target * total) - zeros
        if extra <= 0:
            return
        for module, _ in self.params:
            # global_unstructured flattens masks with view(-1), which the channels_last layout that
            # train() gives the model refuses
            module.weight_mask = module.weight_mask.contiguous()
        # the live weights, not module.weight (computed at the last forward, one optimizer step stale);
        # an int amount prunes exactly that many of the still-unpruned weights
        scores = {(m, n): (m.weight_orig * m.weight_mask).contiguous() for m, n in self.params}
        prune.global_unstructured(self.params, pruning_method=prune.L1Unstructured,
                                  importance_scores=scores, amount=int(extra))


# --- figures ----------------------------------------------------------------------------------------------

def sparsity_figures(model) -> dict:
    """Sparsity of the conv/linear weights of a model whose masks are permanent (shared counting rule)."""
    per_layer = rules.layer_zeros(export_state(model), model.arch)
    zeros = sum(z for z, _ in per_layer.values())
    total = sum(n for _, n in per_layer.values())
    return {
        "sparsity": zeros / total, "zero_weights": zeros, "prunable_weights": total,
        "layer_sparsity": {name: z / n for name, (z, n) in per_layer.items()},
    }


def sparse_state_dict(model) -> dict:
    """The state_dict with every prunable weight as a 2-D (out, -1) CSR tensor with int32 indices.

    int32 is what scipy and cuSPARSE use; torch's default int64 indices would make CSR larger than dense
    below ~67% sparsity and hide what a sparse format buys.
    """
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        # PyTorch flags all CSR use as beta; these tensors are only serialised to measure the format's size
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        for key in rules.prunable_weight_keys(model.arch):
            csr = sd[key].reshape(sd[key].shape[0], -1).to_sparse_csr()
            sd[key] = torch.sparse_csr_tensor(csr.crow_indices().to(torch.int32), csr.col_indices().to(torch.int32),
                                              csr.values(), csr.shape, check_invariants=True)
    return sd


def sparse_sizes(model, gzip_level: int) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"  # the dense artifact's name: torch.save prefixes every record with it
        torch.save(sparse_state_dict(model), path)
        sizes = file_sizes(path, gzip_level)
    return {"size_sparse_bytes": sizes["size_bytes"], "size_sparse_gzip_bytes": sizes["size_gzip_bytes"]}


def _accuracy(model, ctx, split: str) -> float:
    return evaluate(model, getattr(ctx.dataset, split), ctx.preset.recipe.eval_batch_size)[1]


# --- techniques 1-4: prune, fine-tune with the masks in place, make them permanent -------------------------

def pruned_and_finetuned(ctx, cell, method: str) -> tuple[torch.nn.Module, dict]:
    """The baseline pruned by ``method`` (global, gradual, layerwise, random), fine-tuned, masks removed;
    returns the model and the row's technique-specific figures."""
    target = float(cell.settings["sparsity"])
    model = load_baseline(ctx, cell).to(pick_device())
    label = f"prune_{method} s={target}"
    extra = {}
    if method == "gradual":
        pruner = GradualPruner(model, target, ctx.preset.protocol)
        stats = finetune(model, ctx, cell, label, on_step=pruner)
        pre_acc = None  # nothing is pruned before its fine-tuning starts
        extra["gradual_schedule"] = pruner.schedule
    else:
        ONE_SHOT[method](model, target, cell.seed)
        pre_acc = _accuracy(model, ctx, "test")
        stats = finetune(model, ctx, cell, label)
    make_permanent(model)
    model.to("cpu")
    extra.update({
        **sparsity_figures(model), "target_sparsity": target,
        **sparse_sizes(model, ctx.preset.measure.gzip_level),
        "finetune_history": stats["history"], "finetune_time_s": stats["train_time_s"],
        "pre_finetune_test_acc": pre_acc,
    })
    return model, extra


def _row(ctx, cell, method: str) -> dict:
    model, extra = pruned_and_finetuned(ctx, cell, method)
    return measured(model, ctx, **extra)


def prune_global(ctx, cell) -> dict:
    return _row(ctx, cell, "global")


def prune_gradual(ctx, cell) -> dict:
    return _row(ctx, cell, "gradual")


def prune_layerwise(ctx, cell) -> dict:
    return _row(ctx, cell, "layerwise")


def prune_random(ctx, cell) -> dict:
    return _row(ctx, cell, "random")


# --- analyses on the validation split: no fine-tuning ----------------------------------------------------

def sensitivity(ctx, cell) -> dict:
    """Li et al. 2017 Fig. 2 (``shared.pruning_rules.sensitivity_scan``): removal is emulated by masking
    filters on the neutral state, exactly equivalent to a physically narrower layer and identical to what
    the Keras suite applies."""
    model = load_baseline(ctx, cell).to(pick_device())
    base_state, base_acc = export_state(model), _accuracy(model, ctx, "val")

    def val_accuracy(state: dict) -> float:
        import_state(model, state)
        return _accuracy(model, ctx, "val")

    scan = rules.sensitivity_scan(base_state, cell.arch, ctx.preset.protocol.sensitivity_ratios, val_accuracy)
    return {**scan, "baseline_val_acc": base_acc}


def globally_pruned_copy(model, sparsity: float):
    """A copy of ``model`` one-shot pruned by global L1 to ``sparsity``, masks permanent, no fine-tuning."""
    pruned = copy.deepcopy(model)
    apply_global(pruned, sparsity)
    make_permanent(pruned)
    return pruned


def sparsity_search(ctx, cell) -> dict:
    """The largest one-shot global L1 sparsity within the validation tolerance (``rules.bisect_sparsity``)."""
    baseline = load_baseline(ctx, cell).to(pick_device())
    best, figures = rules.bisect_sparsity(lambda s: globally_pruned_copy(baseline, s),
                                          lambda m: _accuracy(m, ctx, "val"), _accuracy(baseline, ctx, "val"),
                                          ctx.preset.protocol)
    best = baseline if best is None else best
    return measured(best, ctx, **sparsity_figures(best), **figures)


# Merged into pytorch_impl.techniques.REGISTRY (keys are shared.techniques names).
REGISTRY = {
    "prune_global": prune_global, "prune_gradual": prune_gradual, "prune_layerwise": prune_layerwise,
    "prune_random": prune_random, "sensitivity": sensitivity, "sparsity_search": sparsity_search,
}
