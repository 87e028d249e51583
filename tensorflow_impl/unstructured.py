"""Unstructured magnitude pruning (tensorflow-model-optimization), Li et al.'s sensitivity scan, the sparsity search.

The mirror of ``pytorch_impl.unstructured``. Which layers are pruned, how sparsity is counted and how a removed
filter is emulated come from ``shared.pruning_rules``, so both suites prune and count the same weights.

How the four pruning techniques map onto tfmot (``prune_low_magnitude`` + ``UpdatePruningStep``, which has
only per-layer magnitude masks):

* global: ONE L1 threshold over all prunable weights (PyTorch's ``global_unstructured``) is computed on the
  neutral state; it gives every layer its own sparsity z_l / n_l, and each layer is then wrapped with
  ``ConstantSparsity(z_l / n_l)``. tfmot's per-layer magnitude rule at that sparsity keeps exactly the weights
  above the global threshold, so this is exactly global L1 one-shot pruning.
* layer-wise: every layer loses round(s * n_l) weights by its own magnitudes (torch's ``l1_unstructured``
  count), held by ``ConstantSparsity(round(s * n_l) / n_l)``: tfmot's own round(n_l * (1 - s)) kept weights
  can differ from it by one weight.
* random: tfmot has no random criterion. A seeded random mask (round(s * n_l) weights per layer) zeroes the
  weights; tfmot's magnitude mask computed on those weights then is that random mask (the zeros are the
  smallest magnitudes and exactly n_l - z_l weights are kept), and tfmot holds it through fine-tuning.
* gradual: tfmot's ``PolynomialDecay(power=3)`` (Zhu & Gupta's cubic) on every layer, updated on the steps of
  the shared schedule. tfmot only offers this per layer, whereas the PyTorch suite raises one global mask.

The three one-shot masks are computed here in numpy and applied to the weights before fine-tuning, so the
pre-fine-tuning accuracy is measured on the pruned network as in PyTorch; tfmot recomputes each layer's mask
once, at the first fine-tuning step (where it reproduces the applied mask), and then holds it fixed, as
``torch.nn.utils.prune`` does.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from . import require_tf_keras

keras = require_tf_keras()

import tensorflow as tf  # noqa: E402  (after require_tf_keras: tf.keras must be tf_keras for tfmot)
import tensorflow_model_optimization as tfmot  # noqa: E402
# the wrapper class is not exported by tfmot.sparsity.keras; it is needed to find wrappers and their masks
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper  # noqa: E402

from shared import pruning_rules as rules  # noqa: E402
from shared.measure import file_sizes  # noqa: E402
from shared.protocols import finetune_recipe  # noqa: E402
from shared.recipe import steps_per_epoch  # noqa: E402
from . import models  # noqa: E402
from .common import finetune, load_baseline, measured  # noqa: E402
from .train import evaluate  # noqa: E402
from .weights import export_state, import_state  # noqa: E402

sparsity_api = tfmot.sparsity.keras

# tfmot's wrapper increments its pruning_step before it updates the mask, so the first fine-tuning batch
# runs at pruning_step 1 (UpdatePruningStep sets it to 0 when training begins): 0-based batch b is step b + 1.
FIRST_STEP = 1


# --- masks on the neutral state (shared counting rules, numpy) ---------------------------------------------

def _weights(state: dict, arch: str) -> dict[str, np.ndarray]:
    return {name: np.asarray(state[f"{name}.weight"]) for name in rules.prunable_layer_names(arch)}


def _drop_smallest(scores: np.ndarray, k: int) -> np.ndarray:
    """Keep-mask of ``scores``' shape without its ``k`` smallest entries (ties: the lower flat index goes first)."""
    keep = np.ones(scores.size, dtype=bool)
    keep[np.argsort(scores.ravel(), kind="stable")[:k]] = False
    return keep.reshape(scores.shape)


def global_masks(state: dict, arch: str, sparsity: float, seed: int = 0) -> dict[str, np.ndarray]:
    """One L1 threshold over all conv/linear weights (torch's global_unstructured): round(s * N) weights go,
    so layers end up with different sparsities."""
    weights = _weights(state, arch)
    flat = np.concatenate([np.abs(w).ravel() for w in weights.values()])
    keep = _drop_smallest(flat, round(float(sparsity) * flat.size))
    out, start = {}, 0
    for name, w in weights.items():
        out[name] = keep[start:start + w.size].reshape(w.shape)
        start += w.size
    return out


def layerwise_masks(state: dict, arch: str, sparsity: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Blalock et al.'s layer-wise baseline: round(s * n) weights of every layer by its own L1 magnitude."""
    return {name: _drop_smallest(np.abs(w), round(float(sparsity) * w.size))
            for name, w in _weights(state, arch).items()}


# One signature for the three one-shot methods; only random pruning uses the seed.
ONE_SHOT = {"global": global_masks, "layerwise": layerwise_masks, "random": rules.random_masks}


def apply_masks(state: dict, masks: dict[str, np.ndarray]) -> dict:
    """A new neutral state with every masked-out weight set to zero."""
    out = dict(state)
    for name, keep in masks.items():
        out[f"{name}.weight"] = np.where(keep, state[f"{name}.weight"], 0).astype(np.float32)
    return out


def _to_keras_layout(mask: np.ndarray) -> np.ndarray:
    """Neutral OIHW / (out, in) -> Keras HWIO / (in, out) (see tensorflow_impl.weights)."""
    return mask.transpose(2, 3, 1, 0) if mask.ndim == 4 else mask.T


# --- tfmot wrapping ------------------------------------------------------------------------------------------

def held_sparsity(zeros: int, n: int) -> float | None:
    """The ConstantSparsity value with which tfmot keeps exactly ``n - zeros`` weights, or None if none does.

    tfmot keeps max(1, round(n * (1 - s))) weights, in float32; z / n gives n - z unless float32 rounding
    moves the product by half a weight, which is checked rather than assumed. A fully pruned layer (z = n)
    cannot be held: tfmot keeps at least one weight and requires s < 1.
    """
    if zeros >= n:
        return None
    s = zeros / n
    kept = np.round(np.float32(n) * (np.float32(1.0) - np.float32(s)))
    return s if int(kept) == n - zeros else None


def hold(masks: dict[str, np.ndarray], state: dict) -> tuple[dict, dict]:
    """(layer -> tfmot schedule, layer -> Keras-layout mask for the layers tfmot cannot hold).

    ``state`` holds the weights before masking. begin_step = end_step = FIRST_STEP: one mask update, at the
    first fine-tuning step, on the already masked weights, then fixed (a later update would let pruned
    weights that moved during fine-tuning back in). tfmot's mask keeps |w| >= its k-th largest |w|, which is
    exactly the applied mask only if every kept weight is nonzero; a layer where that or ``held_sparsity``
    fails (in practice only a fully pruned layer) gets its mask re-applied after every batch instead.
    """
    schedules, fallback = {}, {}
    for name, keep in masks.items():
        s = held_sparsity(int(keep.size - keep.sum()), int(keep.size))
        if s is None or not np.all(state[f"{name}.weight"][keep]):
            fallback[name] = _to_keras_layout(keep).astype(np.float32)
        else:
            schedules[name] = sparsity_api.ConstantSparsity(s, begin_step=FIRST_STEP, end_step=FIRST_STEP, frequency=1)
    return schedules, fallback


class ZhuGupta(sparsity_api.PolynomialDecay):
    """tfmot's PolynomialDecay with power=3 (Zhu & Gupta's cubic) on the update steps of the shared schedule.

    The sparsity is PolynomialDecay's, begun at the first fine-tuning step and ending after
    max(1, int(total * gradual_end)) steps, which is ``zhu_gupta_sparsity``; the steps on which masks change
    are ``pruning_rules.gradual_target``'s (every ``gradual_every`` steps plus the ramp's end, where the
    target is exactly the final sparsity even when a short budget clamps the ramp). A plain ``frequency``
    would miss the ramp's end whenever it is not a multiple of ``gradual_every`` and never reach the final
    sparsity. tfmot updates a mask at the start of a step, PyTorch's hook after it: same targets on the
    same step indices, applied one batch earlier.
    """

    def __init__(self, final: float, total_steps: int, protocol):
        ramp = max(1, int(total_steps * protocol.gradual_end))
        super().__init__(initial_sparsity=protocol.gradual_initial_sparsity, final_sparsity=float(final),
                         begin_step=FIRST_STEP, end_step=FIRST_STEP + ramp, power=3, frequency=protocol.gradual_every)
        targets = [rules.gradual_target(s, total_steps, final, protocol) for s in range(total_steps)]
        self.updates = [(s, t) for s, t in enumerate(targets) if t is not None]  # (0-based step, target)
        self._update_at = tf.constant([t is not None for t in targets])
        self._final_step = self.updates[-1][0]  # gradual_target returns exactly ``final`` there

    def __call__(self, step):
        _, sparsity = super().__call__(step)
        s = tf.cast(step, tf.int64) - FIRST_STEP  # the 0-based fine-tuning step
        last = tf.size(self._update_at, out_type=tf.int64) - 1
        update = tf.logical_and(tf.logical_and(s >= 0, s <= last),
                                tf.gather(self._update_at, tf.clip_by_value(s, 0, last)))
        sparsity = tf.where(tf.equal(s, self._final_step), tf.constant(self.final_sparsity, tf.float32), sparsity)
        return update, sparsity


def wrap(model, schedules: dict):
    """A clone of ``model`` whose layers named in ``schedules`` are tfmot PruneLowMagnitude wrappers.

    The clone shares every layer object (and so its weights) with ``model``; only the wrappers are new.
    """
    def clone(layer):
        if layer.name in schedules:
            return sparsity_api.prune_low_magnitude(layer, pruning_schedule=schedules[layer.name])
        return layer

    return keras.models.clone_model(model, clone_function=clone)


def strip(wrapped, like):
    """tfmot's strip_pruning (wrappers removed, masked weights kept) with models.build's attributes restored."""
    model = sparsity_api.strip_pruning(wrapped)
    model.arch, model.widths, model.plan = like.arch, like.widths, like.plan
    return model


def wrappers(model) -> list:
    return [layer for layer in model.layers if isinstance(layer, pruning_wrapper.PruneLowMagnitude)]


def mask_counts(model) -> tuple[int, int]:
    """(masked-out weights, weights) over the tfmot masks of a wrapped model."""
    masks = [mask.numpy() for layer in wrappers(model) for _, mask, _ in layer.pruning_vars]
    return sum(int(m.size - np.count_nonzero(m)) for m in masks), sum(m.size for m in masks)


class FixedMasks(keras.callbacks.Callback):
    """Re-applies fixed masks after every batch to layers tfmot cannot hold (fully pruned ones)."""

    def __init__(self, kernels_and_masks):
        super().__init__()
        self.pairs = kernels_and_masks

    def on_train_batch_end(self, batch, logs=None):
        for kernel, mask in self.pairs:
            kernel.assign(kernel * mask)


class ScheduleLog(keras.callbacks.Callback):
    """Records, after each mask update of the gradual schedule, its target and the sparsity of the masks."""

    def __init__(self, updates):
        super().__init__()
        self.targets, self.step, self.rows = dict(updates), 0, []

    def on_train_batch_end(self, batch, logs=None):
        if self.step in self.targets:
            zeros, total = mask_counts(self.model)
            self.rows.append({"step": self.step, "target": self.targets[self.step], "achieved": zeros / total})
        self.step += 1


# --- figures -------------------------------------------------------------------------------------------------

def sparsity_figures(model) -> dict:
    """Sparsity of the conv/linear weights of a stripped model (shared counting rule)."""
    per_layer = rules.layer_zeros(export_state(model), model.arch)
    zeros = sum(z for z, _ in per_layer.values())
    total = sum(n for _, n in per_layer.values())
    return {
        "sparsity": zeros / total, "zero_weights": zeros, "prunable_weights": total,
        "layer_sparsity": {name: z / n for name, (z, n) in per_layer.items()},
    }


def sparse_state(model) -> dict[str, np.ndarray]:
    """The neutral state with every prunable weight as 2-D (out, -1) CSR parts: float32 values, int32 indices.

    The same matrices and index width as PyTorch's sparse artifact (int32, as scipy and cuSPARSE use);
    ``<key>.shape`` keeps the dense shape so the weight can be rebuilt.
    """
    state = export_state(model)
    out = {}
    for key, value in state.items():
        if key not in rules.prunable_weight_keys(model.arch):
            out[key] = value
            continue
        rows = value.reshape(value.shape[0], -1)
        nz_rows, cols = np.nonzero(rows)  # row-major order: CSR order
        out[f"{key}.values"] = rows[nz_rows, cols].astype(np.float32)
        out[f"{key}.col_indices"] = cols.astype(np.int32)
        per_row = np.bincount(nz_rows, minlength=rows.shape[0])
        out[f"{key}.crow_indices"] = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int32)
        out[f"{key}.shape"] = np.asarray(value.shape, dtype=np.int32)
    return out


def dense_from_sparse(sparse: dict, key: str) -> np.ndarray:
    """Rebuild one dense neutral weight from its CSR parts."""
    shape = tuple(int(d) for d in sparse[f"{key}.shape"])
    crow, cols, values = sparse[f"{key}.crow_indices"], sparse[f"{key}.col_indices"], sparse[f"{key}.values"]
    rows = np.zeros((shape[0], int(np.prod(shape[1:]))), dtype=np.float32)
    rows[np.repeat(np.arange(shape[0]), np.diff(crow)), cols] = values
    return rows.reshape(shape)


def sparse_sizes(model, gzip_level: int) -> dict[str, int]:
    """Size of the sparse artifact: the CSR parts in a safetensors file (no pickle), and its gzip size."""
    from safetensors.numpy import save_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file(sparse_state(model), str(path))
        sizes = file_sizes(path, gzip_level)
    return {"size_sparse_bytes": sizes["size_bytes"], "size_sparse_gzip_bytes": sizes["size_gzip_bytes"]}


def _accuracy(model, ctx, split: str) -> float:
    return evaluate(model, getattr(ctx.dataset, split), ctx.preset.recipe.eval_batch_size)[1]


# --- techniques 1-4: prune, fine-tune with the masks held by tfmot, strip the wrappers ---------------------

def _finetune_steps(ctx) -> int:
    recipe = finetune_recipe(ctx.preset.recipe, ctx.preset.protocol)
    return steps_per_epoch(len(ctx.finetune_dataset.train), recipe.batch_size) * recipe.epochs


def _gradual(model, ctx, cell, target: float, label: str):
    schedule = ZhuGupta(target, _finetune_steps(ctx), ctx.preset.protocol)
    # every layer ramps to the target by its own magnitudes: tfmot offers polynomial decay per layer only
    wrapped = wrap(model, {name: schedule for name in rules.prunable_layer_names(cell.arch)})
    log = ScheduleLog(schedule.updates)
    stats = finetune(wrapped, ctx, cell, label, callbacks=[sparsity_api.UpdatePruningStep(), log])
    extra = {"gradual_schedule": log.rows, "schedule": "tfmot PolynomialDecay(power=3), per layer"}
    return wrapped, stats, None, extra  # nothing is pruned before its fine-tuning starts


def _one_shot(model, ctx, cell, method: str, target: float, label: str):
    state = export_state(model)
    masks = ONE_SHOT[method](state, cell.arch, target, cell.seed)
    import_state(model, apply_masks(state, masks))
    pre_acc = _accuracy(model, ctx, "test")
    schedules, fallback = hold(masks, state)
    wrapped = wrap(model, schedules)
    keeper = FixedMasks([(wrapped.get_layer(name).kernel, mask) for name, mask in fallback.items()])
    stats = finetune(wrapped, ctx, cell, label, callbacks=[sparsity_api.UpdatePruningStep(), keeper])
    return wrapped, stats, pre_acc, {}


def pruned_and_finetuned(ctx, cell, method: str):
    """The baseline pruned by ``method`` (global, gradual, layerwise, random), fine-tuned, wrappers stripped;
    returns the model and the row's technique-specific figures."""
    target = float(cell.settings["sparsity"])
    baseline = load_baseline(ctx, cell)
    label = f"prune_{method} s={target}"
    if method == "gradual":
        wrapped, stats, pre_acc, extra = _gradual(baseline, ctx, cell, target, label)
    else:
        wrapped, stats, pre_acc, extra = _one_shot(baseline, ctx, cell, method, target, label)
    model = strip(wrapped, baseline)
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

def _probe_model(baseline):
    """A second network of the baseline's shape into which probed states are imported (the baseline stays intact)."""
    return models.build(baseline.arch, widths=baseline.widths)


def sensitivity(ctx, cell) -> dict:
    """Li et al. 2017 Fig. 2 (``shared.pruning_rules.sensitivity_scan``), the PyTorch suite's scan: each
    masked state is imported into a probe network of the baseline's shape and scored on validation."""
    baseline = load_baseline(ctx, cell)
    base_state, base_acc = export_state(baseline), _accuracy(baseline, ctx, "val")
    probe = _probe_model(baseline)

    def val_accuracy(state: dict) -> float:
        import_state(probe, state)
        return _accuracy(probe, ctx, "val")

    scan = rules.sensitivity_scan(base_state, cell.arch, ctx.preset.protocol.sensitivity_ratios, val_accuracy)
    return {**scan, "baseline_val_acc": base_acc}


def sparsity_search(ctx, cell) -> dict:
    """The PyTorch suite's search (``rules.bisect_sparsity``) on masked neutral states."""
    baseline = load_baseline(ctx, cell)
    base_state = export_state(baseline)
    probe = _probe_model(baseline)

    def val_accuracy(state: dict) -> float:
        import_state(probe, state)
        return _accuracy(probe, ctx, "val")

    best, figures = rules.bisect_sparsity(lambda s: apply_masks(base_state, global_masks(base_state, cell.arch, s)),
                                          val_accuracy, _accuracy(baseline, ctx, "val"), ctx.preset.protocol)
    import_state(probe, base_state if best is None else best)
    return measured(probe, ctx, **sparsity_figures(probe), **figures)


# Merged into tensorflow_impl.techniques.REGISTRY (keys are shared.techniques names).
REGISTRY = {
    "prune_global": prune_global, "prune_gradual": prune_gradual, "prune_layerwise": prune_layerwise,
    "prune_random": prune_random, "sensitivity": sensitivity, "sparsity_search": sparsity_search,
}
