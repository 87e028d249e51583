"""Pruning rules both suites apply literally: which layers, which filters, how a removed filter is emulated.

numpy only, on the framework-neutral state (``shared.state``: PyTorch layouts, conv OIHW, linear (out, in)),
so the PyTorch and Keras suites prune the same weights and count sparsity the same way.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import specs
from .protocols import CompressionProtocol

# A ratio * n product like 0.29 * 100 is 28.999999999999996 in binary floating point; the slack keeps
# floor() on the decimal value the protocol states without ever moving a genuinely fractional product.


def prunable_layer_names(arch: str) -> tuple[str, ...]:
    """Every conv and linear layer, classifier and ResNet shortcuts included: the layers whose *weights*
    (not biases, not BN) unstructured pruning zeroes. Names do not depend on the widths."""
    plan = specs.plan(arch)
    return tuple(c.name for c in specs.convs_of(plan)) + tuple(lin.name for lin in specs.linears_of(plan))


def prunable_weight_keys(arch: str) -> tuple[str, ...]:
    return tuple(f"{name}.weight" for name in prunable_layer_names(arch))


def layer_zeros(state: dict, arch: str) -> dict[str, tuple[int, int]]:
    """{layer: (zero weights, weights)} over the prunable layers of a neutral state."""
    out = {}
    for name in prunable_layer_names(arch):
        w = np.asarray(state[f"{name}.weight"])
        out[name] = (int(w.size - np.count_nonzero(w)), int(w.size))
    return out


def weight_sparsity(state: dict, arch: str) -> tuple[int, int]:
    """(zero weights, prunable weights): sparsity is their ratio, biases and BN excluded."""
    counts = layer_zeros(state, arch).values()
    return sum(z for z, _ in counts), sum(n for _, n in counts)


def sensitivity_layers(arch: str) -> tuple[tuple[str, str], ...]:
    """(conv, its BN) pairs of Li et al. 2017's sensitivity scan (Fig. 2).

    VGG-16: all 13 convs. ResNet-18: the first conv of each residual block only; the second conv's output
    channels are tied to the residual sum, so Li et al. prune only the first layer of each block.
    """
    plan = specs.plan(arch)
    if arch in specs.PLAIN_STACKS:
        return tuple((c.name, c.bn_name) for c in plan.convs)
    return tuple((blk.conv1.name, blk.conv1.bn_name) for blk in plan.blocks)


def n_filters_to_remove(n_filters: int, ratio: float) -> int:
    """How many filters ``ratio`` removes: the structured-pruning count (``filter_rule.kept_count``, Torch-
    Pruning's rule: keep int(n * (1 - r))), so the sensitivity scan and filter pruning agree on what "ratio r" means."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"filter ratio must be in [0, 1), got {ratio}")
    # A scanned layer keeps at least one filter; from 10 filters up the clamp never binds below r = 0.9.
    return n_filters - max(1, min(n_filters, int(n_filters * (1 - float(ratio)))))


def filter_l1_norms(weight_oihw) -> np.ndarray:
    """Li et al.'s filter importance: sum of |w| over each output filter, in float64."""
    w = np.asarray(weight_oihw, dtype=np.float64)
    return np.abs(w).reshape(w.shape[0], -1).sum(axis=1)


def filters_to_remove(weight_oihw, ratio: float) -> np.ndarray:
    """Sorted indices of the n_filters_to_remove(n, ratio) filters with the smallest L1 norm; ties go to the lower index."""
    norms = filter_l1_norms(weight_oihw)
    k = n_filters_to_remove(len(norms), ratio)
    order = np.argsort(norms, kind="stable")  # stable: equal norms keep index order
    return np.sort(order[:k]).astype(np.int64)


def mask_filters(state: dict, conv_name: str, bn_name: str, indices) -> dict:
    """A new state in which the filters ``indices`` of ``conv_name`` are removed in effect.

    Zeroing the filter's weights, its conv bias and its BN gamma and beta makes the channel exactly 0 after
    BN (and ReLU), which is what every consumer of a physically removed channel sees. BN running statistics
    are kept: with gamma = beta = 0 they no longer matter. ``state`` itself is not modified.
    """
    idx = np.asarray(indices, dtype=np.int64)
    out = dict(state)
    keys = [f"{conv_name}.weight", f"{conv_name}.bias", f"{bn_name}.weight", f"{bn_name}.bias"]
    for key in keys:
        if key in state:  # ResNet convs have no bias
            arr = np.array(state[key], copy=True)
            arr[idx] = 0
            out[key] = arr
    return out


def remove_smallest_filters(state: dict, conv_name: str, bn_name: str, ratio: float) -> tuple[dict, np.ndarray]:
    """filters_to_remove + mask_filters on one layer: (new state, removed indices)."""
    indices = filters_to_remove(state[f"{conv_name}.weight"], ratio)
    return mask_filters(state, conv_name, bn_name, indices), indices


# --- the two validation-split analyses, given a suite's way to score a state ------------------------------

def sensitivity_scan(state: dict, arch: str, ratios, val_accuracy: Callable[[dict], float]) -> dict:
    """Li et al. 2017 Fig. 2: each layer alone loses its smallest-L1 filters (``remove_smallest_filters``,
    no fine-tuning); ``val_accuracy(masked_state)`` is the suite's validation accuracy of a state."""
    curve = []
    for conv, bn in sensitivity_layers(arch):
        n_filters = state[f"{conv}.weight"].shape[0]
        for ratio in ratios:
            masked, removed = remove_smallest_filters(state, conv, bn, ratio)
            curve.append({"layer": conv, "ratio": float(ratio), "val_acc": val_accuracy(masked),
                          "filters_removed": len(removed), "filters": int(n_filters)})
    return {"curve": curve, "layers": [conv for conv, _ in sensitivity_layers(arch)],
            "ratios": [float(r) for r in ratios]}


def bisect_sparsity(candidate: Callable[[float], object], val_accuracy: Callable[[object], float],
                    baseline_acc: float, protocol: CompressionProtocol) -> tuple[object | None, dict]:
    """Bisection on [0, 1) for the largest one-shot sparsity whose validation accuracy drops by at most
    ``search_tolerance`` from ``baseline_acc``, in ``search_steps`` probes.

    ``candidate(sparsity)`` builds the suite's pruned model (or state); returns the best candidate (None:
    no probe stayed within tolerance, so the answer is the unpruned baseline) and the row's figures.
    """
    lo, hi, probes = 0.0, 1.0, []
    best, best_acc = None, baseline_acc  # sparsity 0 is within tolerance by definition
    for _ in range(protocol.search_steps):
        mid = (lo + hi) / 2
        pruned = candidate(mid)
        acc = val_accuracy(pruned)
        probes.append({"sparsity": mid, "val_acc": acc})
        if baseline_acc - acc <= protocol.search_tolerance:
            lo, best, best_acc = mid, pruned, acc
        else:
            hi = mid
    return best, {"max_sparsity": lo, "baseline_val_acc": baseline_acc, "val_acc": best_acc, "probes": probes,
                  "search_interval": [lo, hi]}
