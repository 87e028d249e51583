"""Keras unstructured pruning (tfmot), the sensitivity scan and the sparsity search, against PyTorch's rules."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import tensorflow_impl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras as keras
import torch

from pytorch_impl import models as pt_models, unstructured as pt_unstructured
from pytorch_impl.weights import export_state as pt_export_state, import_state as pt_import_state
from shared import pruning_rules as rules, specs, state as neutral
from shared.protocols import CompressionProtocol
from shared.runner import Cell, RunContext
from tensorflow_impl import models, unstructured
from tensorflow_impl.common import load_baseline
from tensorflow_impl.weights import export_state, import_state

SPARSITY = 0.9
METHODS = ("global", "gradual", "layerwise", "random")
TECHNIQUE = {m: getattr(unstructured, f"prune_{m}") for m in METHODS}


def _cell(method: str) -> Cell:
    return Cell("keras", "vgg16", f"prune_{method}", 0, {"sparsity": SPARSITY})


@pytest.fixture(scope="module")
def pruned(tf_smoke_ctx):
    """method -> (model the technique measured, its row), each technique run once on the VGG baseline."""
    out = {}
    real_measured = unstructured.measured
    with pytest.MonkeyPatch.context() as mp:
        for method in METHODS:
            seen = {}

            def capture(model, ctx, **extra):
                seen["model"] = model
                return real_measured(model, ctx, **extra)

            mp.setattr(unstructured, "measured", capture)
            row = TECHNIQUE[method](tf_smoke_ctx, _cell(method))
            out[method] = (seen["model"], row)
    return out


def _layer_zeros(model) -> dict[str, tuple[int, int]]:
    return rules.layer_zeros(export_state(model), model.arch)


# --- rules without training ------------------------------------------------------------------------------

def test_held_sparsity_makes_tfmot_keep_exactly_the_unpruned_weights():
    assert unstructured.held_sparsity(90, 100) == 0.9
    assert unstructured.held_sparsity(0, 100) == 0.0
    assert unstructured.held_sparsity(100, 100) is None  # tfmot keeps >= 1 weight and needs s < 1
    for n in (27, 108, 2304, 36864, 2359296):  # float32 rounding must not move tfmot's count
        for z in (1, n // 3, round(0.9 * n), round(0.95 * n), n - 1):
            s = unstructured.held_sparsity(z, n)
            assert s is not None and round(float(np.float32(n) * (np.float32(1) - np.float32(s)))) == n - z


def test_tfmot_runs_the_first_batch_at_first_step():
    """The step convention every schedule here relies on: a mask scheduled at FIRST_STEP only is in place
    after the first batch (lr 0, so the weights themselves do not move)."""
    import tensorflow_model_optimization as tfmot

    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(4, name="d")(inputs))
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=unstructured.FIRST_STEP,
                                                     end_step=unstructured.FIRST_STEP, frequency=1)
    wrapped = unstructured.wrap(model, {"d": schedule})
    wrapped.compile(keras.optimizers.SGD(0.0), "mse")
    x, y = np.ones((2, 8), np.float32), np.zeros((2, 4), np.float32)
    wrapped.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    (layer,) = unstructured.wrappers(wrapped)
    assert int(layer.pruning_step.numpy()) == unstructured.FIRST_STEP
    assert unstructured.mask_counts(wrapped) == (16, 32)


def test_zhu_gupta_schedule_is_the_shared_schedule_on_tfmot_steps():
    p = CompressionProtocol(gradual_initial_sparsity=0.1, gradual_end=0.5, gradual_every=5)
    for total in (100, 8, 1):
        schedule = unstructured.ZhuGupta(0.9, total, p)
        for step in range(total + 3):  # step 0 (before training) and past the end never update
            update, sparsity = schedule(np.int64(step))
            target = rules.gradual_target(step - 1, total, 0.9, p) if step >= 1 else None
            assert bool(update) == (target is not None), (total, step)
            if target is not None:
                assert float(sparsity) == pytest.approx(target, abs=1e-6), (total, step)
        assert schedule.updates[-1][1] == 0.9


def test_global_masks_match_pytorch_global_unstructured_on_the_same_weights(tf_smoke_ctx):
    """The one-threshold rule on the Keras baseline = torch's global_unstructured on the transferred state."""
    for arch in ("vgg16", "resnet18"):
        state = export_state(load_baseline(tf_smoke_ctx, Cell("keras", arch, "prune_global", 0)))
        masks = unstructured.global_masks(state, arch, SPARSITY)
        tm = pt_import_state(pt_models.build(arch, width=tf_smoke_ctx.preset.width), state)
        pt_unstructured.apply_global(tm, SPARSITY)
        pt_unstructured.make_permanent(tm)
        pt_zeros = rules.layer_zeros(pt_export_state(tm), arch)
        for name, keep in masks.items():
            assert abs(int(keep.size - keep.sum()) - pt_zeros[name][0]) <= 1, (arch, name)  # ties only
        assert sum(int(k.size - k.sum()) for k in masks.values()) == sum(z for z, _ in pt_zeros.values())


# --- techniques 1-4 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_prune_reaches_the_target_sparsity(method, pruned):
    model, row = pruned[method]
    counts = _layer_zeros(model)
    n_weights = sum(c.cout * c.cin * c.kernel**2 for c in specs.convs_of(model.plan)) + sum(
        lin.cout * lin.cin for lin in specs.linears_of(model.plan))
    assert row["prunable_weights"] == n_weights == sum(n for _, n in counts.values())
    assert row["target_sparsity"] == SPARSITY
    assert abs(row["sparsity"] - SPARSITY) <= 0.005
    assert row["zero_weights"] == sum(z for z, _ in counts.values())
    if method == "global":  # one global count: round(s * N)
        assert row["zero_weights"] == round(SPARSITY * n_weights)
    else:  # every layer at s by its own count (tfmot's per layer for gradual), so within 0.5 points
        for name, (zeros, n) in counts.items():
            if method != "gradual":
                assert zeros == round(SPARSITY * n), name
            assert abs(row["layer_sparsity"][name] - SPARSITY) <= 0.005, name
    assert isinstance(row["pre_finetune_test_acc"], float if method != "gradual" else type(None))
    assert [h["epoch"] for h in row["finetune_history"]] == [1]
    assert row["finetune_time_s"] > 0


@pytest.mark.parametrize("method", ["global", "layerwise", "random"])
def test_one_shot_masks_are_held_fixed_through_finetuning(method, pruned, tf_smoke_ctx):
    """The zeros after fine-tuning are exactly the one-shot mask of the baseline: tfmot updated it once, at
    the first step, on the masked weights, and never let a pruned weight back in."""
    model, _ = pruned[method]
    state = export_state(load_baseline(tf_smoke_ctx, _cell(method)))
    masks = unstructured.ONE_SHOT[method](state, "vgg16", SPARSITY, 0)
    final = export_state(model)
    for name, keep in masks.items():
        np.testing.assert_array_equal(final[f"{name}.weight"] != 0, keep, err_msg=name)


def test_finetuned_global_prune_keeps_pytorchs_per_layer_sparsities(pruned, tf_smoke_ctx):
    model, row = pruned["global"]
    state = export_state(load_baseline(tf_smoke_ctx, _cell("global")))
    tm = pt_import_state(pt_models.build("vgg16", width=tf_smoke_ctx.preset.width), state)
    pt_unstructured.apply_global(tm, SPARSITY)
    pt_unstructured.make_permanent(tm)
    pt_zeros = rules.layer_zeros(pt_export_state(tm), "vgg16")
    for name, (zeros, n) in _layer_zeros(model).items():
        assert abs(zeros - pt_zeros[name][0]) <= 1, name


@pytest.mark.parametrize("method", METHODS)
def test_wrappers_are_stripped_and_zeros_survive_keras_save_and_the_neutral_state(method, pruned, tmp_path):
    model, _ = pruned[method]
    assert not unstructured.wrappers(model)
    assert not [layer.name for layer in model.layers if "prune_low_magnitude" in layer.name]
    assert not [v.name for v in model.variables if any(s in v.name for s in ("mask", "threshold", "pruning_step"))]
    zeros = _layer_zeros(model)
    model.save(tmp_path / "m.keras")
    back = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    back.arch, back.widths, back.plan = model.arch, model.widths, model.plan
    assert _layer_zeros(back) == zeros
    neutral.save(export_state(model), tmp_path / "m.safetensors")
    rebuilt = import_state(models.build("vgg16", widths=model.widths), neutral.load(tmp_path / "m.safetensors"))
    assert _layer_zeros(rebuilt) == zeros


@pytest.mark.parametrize("method", METHODS)
def test_params_nonzero_is_total_minus_the_pruned_zeros(method, pruned):
    model, row = pruned[method]
    assert row["params_total"] == specs.count_params(model.plan)
    assert row["params_nonzero"] == row["params_total"] - row["zero_weights"]
    json.dumps(row)  # rows are written as JSON


def test_global_is_non_uniform_across_layers_layerwise_is_uniform(pruned):
    spread = {m: np.ptp(list(pruned[m][1]["layer_sparsity"].values())) for m in ("global", "layerwise")}
    assert spread["layerwise"] < 0.01  # rounding only
    assert spread["global"] > 0.1


def test_gradual_follows_the_schedule_and_ends_at_the_final_sparsity(pruned):
    _, row = pruned["gradual"]
    # smoke budget: 8 steps, ramp end int(8 * 0.75) = 6 < gradual_every (10): updates at steps 0 and 6
    assert [(s["step"], s["target"]) for s in row["gradual_schedule"]] == [(0, 0.0), (6, SPARSITY)]
    assert row["gradual_schedule"][0]["achieved"] == 0.0
    assert row["gradual_schedule"][-1]["achieved"] == row["sparsity"]
    assert row["schedule"] == "tfmot PolynomialDecay(power=3), per layer"


def test_sparse_artifact_is_smaller_and_loads_back_to_the_weights(pruned):
    model, row = pruned["global"]
    assert row["size_sparse_bytes"] < row["size_bytes"]  # 10% of weights at 4 + 4 bytes vs all at 4 bytes
    sparse, dense = unstructured.sparse_state(model), export_state(model)
    for key, value in dense.items():
        if key in rules.prunable_weight_keys("vgg16"):
            assert sparse[f"{key}.col_indices"].dtype == sparse[f"{key}.crow_indices"].dtype == np.int32
            np.testing.assert_array_equal(unstructured.dense_from_sparse(sparse, key), value, err_msg=key)
        else:
            np.testing.assert_array_equal(sparse[key], value, err_msg=key)


# --- analyses ------------------------------------------------------------------------------------------------

def test_sensitivity_curve_equals_the_pytorch_scan_on_identical_weights(tf_smoke_ctx, tmp_path):
    cell = Cell("keras", "resnet18", "sensitivity", 0)
    row = unstructured.sensitivity(tf_smoke_ctx, cell)
    # PyTorch's scan of the same weights: the Keras baseline checkpoint as PyTorch's, the same data
    pt_ctx = RunContext(preset=tf_smoke_ctx.preset, out_dir=tmp_path, _dataset=tf_smoke_ctx.dataset)
    pt_path = pt_ctx.checkpoint_path("pytorch", "resnet18", 0)
    pt_path.parent.mkdir(parents=True)
    shutil.copy(tf_smoke_ctx.checkpoint_path("keras", "resnet18", 0), pt_path)
    with torch.no_grad():
        pt_row = pt_unstructured.sensitivity(pt_ctx, Cell("pytorch", "resnet18", "sensitivity", 0))
    assert row["layers"] == pt_row["layers"] == [conv for conv, _ in rules.sensitivity_layers("resnet18")]
    assert row["ratios"] == pt_row["ratios"] == list(tf_smoke_ctx.preset.protocol.sensitivity_ratios)
    assert abs(row["baseline_val_acc"] - pt_row["baseline_val_acc"]) <= 0.005
    assert len(row["curve"]) == len(row["layers"]) * len(row["ratios"])
    for ours, theirs in zip(row["curve"], pt_row["curve"], strict=True):
        assert {k: ours[k] for k in ("layer", "ratio", "filters", "filters_removed")} == {
            k: theirs[k] for k in ("layer", "ratio", "filters", "filters_removed")}
        assert ours["filters_removed"] == ours["filters"] - max(1, int(ours["filters"] * (1 - ours["ratio"])))
        assert abs(ours["val_acc"] - theirs["val_acc"]) <= 0.005, (ours, theirs)


def test_sparsity_search_bisects_and_stays_within_tolerance(tf_smoke_ctx):
    protocol = tf_smoke_ctx.preset.protocol
    row = unstructured.sparsity_search(tf_smoke_ctx, Cell("keras", "vgg16", "sparsity_search", 0))
    assert len(row["probes"]) == protocol.search_steps
    lo, hi = 0.0, 1.0
    for probe in row["probes"]:
        assert lo < probe["sparsity"] < hi and probe["sparsity"] == (lo + hi) / 2
        if row["baseline_val_acc"] - probe["val_acc"] <= protocol.search_tolerance:
            lo = probe["sparsity"]
        else:
            hi = probe["sparsity"]
    assert row["max_sparsity"] == lo and row["search_interval"] == [lo, hi]
    assert row["baseline_val_acc"] - row["val_acc"] <= protocol.search_tolerance
    assert row["zero_weights"] == round(lo * row["prunable_weights"])
    assert row["params_nonzero"] == row["params_total"] - row["zero_weights"]
    if lo > 0:
        assert {"sparsity": lo, "val_acc": row["val_acc"]} in row["probes"]
