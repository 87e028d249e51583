"""Unstructured pruning masks, computed once in numpy on the neutral state for both suites.

Every mask is a boolean keep-mask per prunable layer (``pruning_rules.prunable_layer_names``) in the neutral
layout. The suites only hold masks (zero the masked weights after every optimizer step); which weights go is
decided here, so PyTorch and Keras prune identical weights by construction.

Ties: weights of equal magnitude go in flat index order (a stable sort), layers concatenated in canonical
order, so the masks are a function of the weights alone.
"""
from __future__ import annotations

import numpy as np

from .pruning_rules import prunable_layer_names
from .protocols import CompressionProtocol, zhu_gupta_sparsity


def weights_of(state: dict, arch: str) -> dict[str, np.ndarray]:
    return {name: np.asarray(state[f"{name}.weight"]) for name in prunable_layer_names(arch)}


def _drop_smallest(scores: np.ndarray, k: int) -> np.ndarray:
    """Keep-mask of ``scores``' shape without its ``k`` smallest entries (ties: the lower flat index goes first)."""
    keep = np.ones(scores.size, dtype=bool)
    keep[np.argsort(scores.ravel(), kind="stable")[:k]] = False
    return keep.reshape(scores.shape)


def _scores(weights: dict, masks: dict | None) -> dict[str, np.ndarray]:
    """|w|, with already pruned weights at -1 so they are always the first to go: masks only grow."""
    out = {}
    for name, w in weights.items():
        score = np.abs(w).astype(np.float64)
        out[name] = score if masks is None else np.where(masks[name], score, -1.0)
    return out


def _global(scores: dict, sparsity: float) -> dict[str, np.ndarray]:
    """One threshold over all layers: round(s * N) weights go, so layers end up with different sparsities."""
    flat = np.concatenate([s.ravel() for s in scores.values()])
    keep = _drop_smallest(flat, round(float(sparsity) * flat.size))
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = keep[start:start + s.size].reshape(s.shape)
        start += s.size
    return out


def _layerwise(scores: dict, sparsity: float) -> dict[str, np.ndarray]:
    """Every layer loses round(s * n) weights by its own magnitudes (torch's ``l1_unstructured`` count)."""
    return {name: _drop_smallest(s, round(float(sparsity) * s.size)) for name, s in scores.items()}


SCOPES = {"global": _global, "layerwise": _layerwise}


def global_masks(state: dict, arch: str, sparsity: float, seed: int = 0) -> dict[str, np.ndarray]:
    """One-shot global L1 (PyTorch's ``global_unstructured``)."""
    return _global(_scores(weights_of(state, arch), None), sparsity)


def layerwise_masks(state: dict, arch: str, sparsity: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Blalock et al.'s layer-wise baseline: every layer at the same sparsity by its own L1 magnitude."""
    return _layerwise(_scores(weights_of(state, arch), None), sparsity)


def random_masks(state: dict, arch: str, sparsity: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Blalock et al.'s floor: round(s * n) weights of every prunable layer drawn at random (keep-masks).

    Drawn from numpy's generator seeded by the cell, for both suites. Not from the framework's global RNG:
    the baselines initialise their weights from that RNG seeded with the same cell seed, so a mask drawn
    from it replays the initialisation's uniform draws, and pruning "the largest draws" removed mostly the
    weights that started (and stayed) positive: PyTorch's random_unstructured left ~25% positive weights
    per layer and a ResNet-18 that could not be fine-tuned above chance.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, w in weights_of(state, arch).items():
        keep = np.ones(w.size, dtype=bool)
        keep[rng.permutation(w.size)[:round(float(sparsity) * w.size)]] = False
        out[name] = keep.reshape(w.shape)
    return out


# One signature for the three one-shot methods; only random pruning uses the seed.
ONE_SHOT = {"global": global_masks, "layerwise": layerwise_masks, "random": random_masks}


def raise_masks(weights: dict, masks: dict | None, sparsity: float, scope: str) -> dict[str, np.ndarray]:
    """Masks at ``sparsity`` that keep every weight ``masks`` already removed removed (monotone: a pruned
    weight never returns), ranking the survivors by |w| globally or per layer."""
    if scope not in SCOPES:
        raise ValueError(f"unknown pruning scope {scope!r}: choose from {', '.join(SCOPES)}")
    new = SCOPES[scope](_scores(weights, masks), sparsity)
    if masks is not None and any(np.any(new[name] & ~keep) for name, keep in masks.items()):
        raise ValueError(f"masks only grow: {scope} sparsity {sparsity} would restore pruned weights "
                         f"(current sparsity {overall_sparsity(masks):.6f})")
    return new


def apply_masks(state: dict, masks: dict[str, np.ndarray]) -> dict:
    """A new neutral state with every masked-out weight set to zero."""
    out = dict(state)
    for name, keep in masks.items():
        out[f"{name}.weight"] = np.where(keep, state[f"{name}.weight"], 0).astype(np.float32)
    return out


def layer_sparsity(masks: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: float(1.0 - keep.mean()) for name, keep in masks.items()}


def overall_sparsity(masks: dict[str, np.ndarray]) -> float:
    kept = sum(int(keep.sum()) for keep in masks.values())
    return 1.0 - kept / sum(keep.size for keep in masks.values())


def gradual_target(step: int, total_steps: int, final: float, protocol: CompressionProtocol) -> float | None:
    """The sparsity Zhu & Gupta's schedule sets after fine-tuning ``step`` (0-based), or None: no mask update.

    Masks are updated every ``gradual_every`` steps over the ramp and once more at its end, where the
    target is exactly ``final``; the end is clamped to the last step so a short budget still reaches it.
    """
    ramp_end = min(max(1, int(total_steps * protocol.gradual_end)), total_steps - 1)
    if step == ramp_end:
        return float(final)
    if step < ramp_end and step % protocol.gradual_every == 0:
        return zhu_gupta_sparsity(step, total_steps, final, protocol)
    return None
