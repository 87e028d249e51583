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
    rebuilt = models.build(arch, num_classes(model), widths=widths, weight_decay=weight_decay,
                           head=specs.head_of(model.plan))
    return import_state(rebuilt, filter_rule.prune_state(state, arch, kept)), kept
