"""Unstructured pruning in both suites: the shared masks (``shared.masks``), the drivers
(``shared.drivers.unstructured``) run through each backend, the filter-masking rule, Li et al.'s
sensitivity scan and the sparsity search."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import tensorflow_impl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tf_keras as keras
import torch
from torch.nn.utils import prune as torch_prune

from pytorch_impl import sparsity as pt_sparsity
from shared import masks as M, pruning_rules as rules, specs, state as neutral
from shared.drivers import unstructured as U
from shared.drivers.common import load_baseline
from shared.protocols import CompressionProtocol, zhu_gupta_sparsity
from shared.runner import Cell, RunContext
from tensorflow_impl import sparsity as tf_sparsity

SPARSITY = 0.9
TECHNIQUES = ("prune_global", "prune_gradual", "prune_gradual_layerwise", "prune_layerwise", "prune_random")
ONE_GLOBAL_COUNT = ("prune_global", "prune_gradual")  # one threshold over all layers: round(s * N)
ONE_SHOT = {"prune_global": "global", "prune_layerwise": "layerwise", "prune_random": "random"}
FRAMEWORKS = ("pytorch", "keras")
FIXTURES = {"pytorch": ("pt_backend", "pt_smoke_ctx"), "keras": ("tf_backend", "tf_smoke_ctx")}


def _suite(request, framework):
    backend_fixture, ctx_fixture = FIXTURES[framework]
    return request.getfixturevalue(backend_fixture), request.getfixturevalue(ctx_fixture)


@pytest.fixture(scope="module", params=FRAMEWORKS)
def suite(request):
    """(backend, smoke context with both archs' seed-0 baselines) of one framework."""
    return _suite(request, request.param)


@pytest.fixture(scope="module")
def pruned(suite):
    """technique -> (model the driver measured, its row): each technique run once on the VGG baseline."""
    backend, ctx = suite
    out = {}
    real_measured = U.measured
    with pytest.MonkeyPatch.context() as mp:
        for technique in TECHNIQUES:
            seen = {}

            def capture(backend_, model, ctx_, **extra):
                seen["model"] = model
                return real_measured(backend_, model, ctx_, **extra)

            mp.setattr(U, "measured", capture)
            row = U.REGISTRY[technique](backend, ctx, Cell(backend.name, "vgg16", technique, 0, {"sparsity": SPARSITY}))
            out[technique] = (seen["model"], row)
    return out


def _layer_zeros(backend, model) -> dict[str, tuple[int, int]]:
    return rules.layer_zeros(backend.export_state(model), model.arch)


# --- shared rules ------------------------------------------------------------------------------------------

def test_prunable_and_sensitivity_layers():
    assert len(rules.prunable_layer_names("vgg16")) == 13 + 2
    resnet = rules.prunable_layer_names("resnet18")
    assert len(resnet) == 1 + 16 + 3 + 1  # stem, 8 blocks x 2 convs, 3 projection shortcuts, classifier
    assert {"stem.conv", "layer2.0.shortcut.conv", "layer4.0.shortcut.conv", "fc"} <= set(resnet)
    assert rules.sensitivity_layers("vgg16") == tuple((f"features.{i}.conv", f"features.{i}.bn") for i in range(13))
    assert rules.sensitivity_layers("resnet18") == tuple(
        (f"layer{s}.{b}.conv1", f"layer{s}.{b}.bn1") for s in range(1, 5) for b in range(2))


def test_zhu_gupta_schedule_golden_values():
    p = CompressionProtocol(gradual_initial_sparsity=0.0, gradual_end=0.5, gradual_every=5)
    assert zhu_gupta_sparsity(0, 100, 0.9, p) == 0.0
    assert zhu_gupta_sparsity(25, 100, 0.9, p) == pytest.approx(0.9 * (1 - 0.5**3))  # half the ramp: 0.7875
    assert zhu_gupta_sparsity(50, 100, 0.9, p) == pytest.approx(0.9)
    assert zhu_gupta_sparsity(100, 100, 0.9, p) == pytest.approx(0.9)
    assert zhu_gupta_sparsity(0, 100, 0.9, CompressionProtocol(gradual_initial_sparsity=0.2)) == pytest.approx(0.2)
    updates = [s for s in range(100) if M.gradual_target(s, 100, 0.9, p) is not None]
    assert updates == list(range(0, 51, 5))
    assert M.gradual_target(50, 100, 0.9, p) == 0.9
    assert M.gradual_target(25, 100, 0.9, p) == pytest.approx(0.7875)
    # 8 steps, ramp end int(8 * 0.75) = 6 < gradual_every (10): updates after steps 0 and 6 only
    default = CompressionProtocol()
    assert [s for s in range(8) if M.gradual_target(s, 8, 0.9, default) is not None] == [0, 6]
    # the smoke protocol (gradual_every=2): 0, 2, 4, then exactly the final sparsity at 6
    smoke = CompressionProtocol(gradual_every=2)
    targets = {s: M.gradual_target(s, 8, 0.9, smoke) for s in range(8)}
    assert {s: t for s, t in targets.items() if t is not None} == {
        0: 0.0, 2: pytest.approx(0.9 * 19 / 27), 4: pytest.approx(0.9 * 26 / 27), 6: 0.9}
    assert M.gradual_target(0, 1, 0.9, default) == 0.9  # a one-step budget still reaches the final sparsity
    assert M.gradual_target(1, 2, 0.9, default) == 0.9  # the ramp end is clamped to the last step


def test_filters_to_remove_golden():
    w = np.array([[1.0, -1.0], [0.5, 0.0], [0.0, -0.5], [3.0, 0.0], [0.1, 0.1]]).reshape(5, 1, 1, 2)
    # L1 norms 2, 0.5, 0.5, 3, 0.2: filters 1 and 2 tie, the lower index goes first
    # the count is filter pruning's: n - int(n * (1 - r)) filters go (Torch-Pruning keeps int(n * (1 - r)))
    assert rules.filters_to_remove(w, 0.5).tolist() == [1, 2, 4]  # keeps int(2.5) = 2
    assert rules.filters_to_remove(w, 0.6).tolist() == [1, 2, 4]  # keeps int(2.0) = 2
    assert rules.filters_to_remove(w, 0.79).tolist() == [0, 1, 2, 4]  # keeps int(1.05) = 1
    assert rules.filters_to_remove(w, 0.1).tolist() == [4]  # keeps int(4.5) = 4
    assert rules.n_filters_to_remove(100, 0.29) == 29
    assert rules.n_filters_to_remove(10, 0.25) == 3  # the same count as structured pruning, not floor(2.5)
    assert rules.n_filters_to_remove(4, 0.9) == 3  # int(0.4) = 0 would leave no filter: one always stays
    with pytest.raises(ValueError):
        rules.n_filters_to_remove(10, 1.0)


def test_mask_filters_zeroes_the_filter_its_bias_and_bn_only():
    rng = np.random.default_rng(0)
    state = {"c.weight": rng.normal(size=(4, 2, 3, 3)), "c.bias": rng.normal(size=4),
             **{f"b.{s}": rng.uniform(0.5, 1.5, size=4) for s in neutral.BN_SUFFIXES}}
    before = {k: v.copy() for k, v in state.items()}
    out = rules.mask_filters(state, "c", "b", [0, 2])
    for k, v in before.items():
        np.testing.assert_array_equal(state[k], v)  # input untouched
    for k in ("c.weight", "c.bias", "b.weight", "b.bias"):
        assert not out[k][[0, 2]].any() and np.array_equal(out[k][[1, 3]], before[k][[1, 3]])
    for k in ("b.running_mean", "b.running_var"):
        np.testing.assert_array_equal(out[k], before[k])


def _physically_removed(state, arch, widths, conv, bn, removed):
    """The state of a network in which the filters ``removed`` of ``conv`` do not exist, and its widths."""
    n = state[f"{conv}.weight"].shape[0]
    kept = np.setdiff1d(np.arange(n), removed)
    out = dict(state)
    for key in [f"{conv}.weight", f"{conv}.bias"] + [f"{bn}.{s}" for s in neutral.BN_SUFFIXES]:
        if key in out:
            out[key] = out[key][kept]
    if arch == "vgg16":
        i = int(conv.split(".")[1])
        consumer, layer = ("fc1" if i == 12 else f"features.{i + 1}.conv"), f"features.{i}"
    else:
        consumer, layer = conv.replace("conv1", "conv2"), conv
    out[f"{consumer}.weight"] = out[f"{consumer}.weight"][:, kept]
    widths = list(widths)
    widths[specs.layer_names(arch).index(layer)] = len(kept)
    return out, widths


def _eval_logits(backend, model, x_nhwc: np.ndarray) -> np.ndarray:
    if backend.name == "pytorch":
        with torch.no_grad():
            return model.eval()(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2).contiguous()).numpy()
    return model(x_nhwc, training=False).numpy()


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("arch, layers", [
    ("vgg16", ("features.0.conv", "features.3.conv", "features.12.conv")),  # consumers: conv, conv after pool, fc1
    ("resnet18", ("layer1.0.conv1", "layer2.0.conv1", "layer4.1.conv1")),
])
def test_masked_filters_give_the_logits_of_physically_removed_filters(arch, layers, framework, request):
    backend = request.getfixturevalue(FIXTURES[framework][0])
    model = backend.build(arch, width=0.125, seed=0)
    state = backend.export_state(model)
    rng = np.random.default_rng(0)
    for k in state:  # trained-like BN: the masking must not rely on gamma = 1, beta = 0, mean 0, var 1
        if "bn" in k:
            positive = k.endswith(("weight", "running_var"))
            draw = rng.uniform(0.5, 1.5, state[k].shape) if positive else rng.normal(0, 0.5, state[k].shape)
            state[k] = draw.astype(np.float32)
    pairs = dict(rules.sensitivity_layers(arch))
    removed = {conv: rules.filters_to_remove(state[f"{conv}.weight"], 0.5) for conv in layers}  # from the intact state
    masked, physical, widths = state, state, model.widths
    for conv in layers:
        masked = rules.mask_filters(masked, conv, pairs[conv], removed[conv])
        physical, widths = _physically_removed(physical, arch, widths, conv, pairs[conv], removed[conv])
    x = np.random.default_rng(1).normal(size=(4, 32, 32, 3)).astype(np.float32)
    a = _eval_logits(backend, backend.import_state(backend.build(arch, width=0.125), masked), x)
    b = _eval_logits(backend, backend.import_state(backend.build(arch, widths=widths), physical), x)
    for conv, r in removed.items():
        assert len(r) == state[f"{conv}.weight"].shape[0] // 2 > 0
    assert list(widths) != list(model.widths)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


# --- shared.masks: golden values on tiny hand-made weights ----------------------------------------------

# |w|: a = 0.1 0.5 0.3 0.0, b = 2.0 0.2 0.05 1.0 0.4 0.3 (N = 10; a's 0.3 and b's 0.3 tie across layers)
TINY = {"a": np.array([[0.1, -0.5], [0.3, 0.0]], np.float32),
        "b": np.array([2.0, -0.2, 0.05, 1.0, 0.4, -0.3], np.float32)}


def _pruned(masks) -> dict[str, int]:
    return {name: int(keep.size - keep.sum()) for name, keep in masks.items()}


def test_global_masks_golden():
    # 5 of 10 go by one ranking: 0.0 (a3), 0.05 (b2), 0.1 (a0), 0.2 (b1), then the 0.3 tie: a (earlier) goes
    keep = M.raise_masks(TINY, None, 0.5, "global")
    assert keep["a"].tolist() == [[False, True], [False, False]]
    assert keep["b"].tolist() == [True, False, False, True, True, True]
    assert _pruned(keep) == {"a": 3, "b": 2}  # non-uniform: 75% and 33%
    assert M.layer_sparsity(keep) == {"a": 0.75, "b": pytest.approx(1 / 3)}
    assert M.overall_sparsity(keep) == 0.5
    # the layers' order decides cross-layer ties: with b first, b's 0.3 goes instead of a's
    swapped = M.raise_masks({"b": TINY["b"], "a": TINY["a"]}, None, 0.5, "global")
    assert swapped["a"].tolist() == [[False, True], [True, False]]
    assert swapped["b"].tolist() == [True, False, False, True, True, False]
    assert _pruned(M.raise_masks(TINY, None, 0.0, "global")) == {"a": 0, "b": 0}
    assert _pruned(M.raise_masks(TINY, None, 1.0, "global")) == {"a": 4, "b": 6}
    assert _pruned(M.raise_masks(TINY, None, 0.74, "global")) == {"a": 3, "b": 4}  # round(7.4) = 7


def test_layerwise_masks_golden():
    keep = M.raise_masks(TINY, None, 0.5, "layerwise")
    assert keep["a"].tolist() == [[False, True], [True, False]]  # 0.0 and 0.1 go: round(2.0) = 2
    assert keep["b"].tolist() == [True, False, False, True, True, False]  # 0.05, 0.2, 0.3: round(3.0) = 3
    assert _pruned(keep) == {"a": 2, "b": 3}
    # round() is Python's (half to even), as torch.nn.utils.prune counts: 0.25 * 6 = 1.5 -> 2, 0.25 * 4 = 1
    assert _pruned(M.raise_masks(TINY, None, 0.25, "layerwise")) == {"a": 1, "b": 2}
    assert _pruned(M.raise_masks({"c": np.ones(5)}, None, 0.5, "layerwise")) == {"c": 2}  # round(2.5) = 2
    assert _pruned(M.raise_masks({"c": np.ones(7)}, None, 0.5, "layerwise")) == {"c": 4}  # round(3.5) = 4


def test_ties_go_in_flat_index_order_whatever_the_sign():
    w = {"c": np.array([[0.5, -0.5], [0.5, 0.1]], np.float32)}
    assert M.raise_masks(w, None, 0.5, "layerwise")["c"].tolist() == [[False, True], [True, False]]
    assert M.raise_masks(w, None, 0.75, "global")["c"].tolist() == [[False, False], [True, False]]
    zeros = {"c": np.zeros((2, 3), np.float32)}  # all tied: the first flat indices go
    assert M.raise_masks(zeros, None, 0.5, "layerwise")["c"].tolist() == [[False, False, False], [True, True, True]]


def test_raise_masks_is_monotone_a_pruned_weight_never_returns():
    first = M.raise_masks({"a": np.array([1.0, 2.0, 3.0, 4.0])}, None, 0.5, "layerwise")
    assert first["a"].tolist() == [False, False, True, True]
    # after training, the pruned weight 0 would be the largest: it stays pruned, the smallest survivor goes
    later = {"a": np.array([100.0, 50.0, 5.0, 0.5])}
    assert M.raise_masks(later, first, 0.75, "layerwise")["a"].tolist() == [False, False, True, False]
    assert M.raise_masks(later, None, 0.75, "layerwise")["a"].tolist() == [True, False, False, False]  # fresh
    # global: pruned weights of every layer count towards the target and stay pruned
    g1 = M.raise_masks(TINY, None, 0.5, "global")
    grown = {"a": np.array([[9.0, -0.5], [9.0, 9.0]], np.float32), "b": TINY["b"]}
    g2 = M.raise_masks(grown, g1, 0.7, "global")
    assert g2["a"].tolist() == [[False, True], [False, False]]  # a's pruned 9.0s stay out
    assert g2["b"].tolist() == [True, False, False, True, False, False]  # then 0.3 and 0.4 of b go
    assert M.overall_sparsity(g2) == pytest.approx(0.7)
    for name in g1:
        assert not (g2[name] & ~g1[name]).any()
    # the same target again changes nothing
    for name, keep in M.raise_masks(grown, g2, 0.7, "global").items():
        np.testing.assert_array_equal(keep, g2[name])
    with pytest.raises(ValueError, match="unknown pruning scope"):
        M.raise_masks(TINY, None, 0.5, "random")


def test_apply_masks_zeroes_only_the_masked_weights():
    state = {"a.weight": TINY["a"], "a.bias": np.ones(2, np.float32), "b.weight": TINY["b"]}
    keep = M.raise_masks(TINY, None, 0.5, "global")
    out = M.apply_masks(state, keep)
    assert out["a.weight"].tolist() == [[0.0, -0.5], [0.0, 0.0]]
    np.testing.assert_array_equal(out["b.weight"], np.array([2.0, 0, 0, 1.0, 0.4, -0.3], np.float32))
    assert out["a.bias"] is state["a.bias"] and out["a.weight"].dtype == np.float32
    assert state["a.weight"][0, 0] == np.float32(0.1)  # the input state is untouched


@pytest.mark.parametrize("arch", specs.ARCHS)
def test_one_shot_masks_are_torch_prunes_on_a_real_state(arch, pt_backend):
    """An independent reference: torch.nn.utils.prune's global_unstructured and l1_unstructured (tie-free
    random weights, so the rules must agree weight for weight); the one-shot functions are raise_masks."""
    model = pt_backend.build(arch, width=0.125, seed=0)
    state = pt_backend.export_state(model)
    names = rules.prunable_layer_names(arch)
    for scope, fn in (("global", M.global_masks), ("layerwise", M.layerwise_masks)):
        ours = fn(state, arch, SPARSITY)
        assert list(ours) == list(names)
        for name, keep in M.raise_masks(M.weights_of(state, arch), None, SPARSITY, scope).items():
            np.testing.assert_array_equal(ours[name], keep)
        reference = pt_backend.import_state(pt_backend.build(arch, width=0.125), state)
        params = [(reference.get_submodule(name), "weight") for name in names]
        if scope == "global":
            torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=SPARSITY)
        else:
            for module, param in params:
                torch_prune.l1_unstructured(module, param, amount=SPARSITY)
        for name in names:
            mask = reference.get_submodule(name).weight_mask.numpy().astype(bool)
            np.testing.assert_array_equal(ours[name], mask, err_msg=f"{scope} {name}")
    assert M.ONE_SHOT == {"global": M.global_masks, "layerwise": M.layerwise_masks, "random": M.random_masks}


@pytest.mark.parametrize("arch", specs.ARCHS)
def test_random_masks_ignore_the_weights_and_their_signs(arch, pt_backend, tf_backend):
    # The baselines are initialised from the framework RNG seeded with the cell seed; a mask drawn from that
    # same stream used to prune mostly positive weights (a ResNet-18 that stayed at chance).
    states = {b.name: b.export_state(b.build(arch, width=0.25, seed=0)) for b in (pt_backend, tf_backend)}
    expected = M.random_masks(states["pytorch"], arch, 0.5, seed=0)
    other = M.random_masks(states["keras"], arch, 0.5, seed=0)  # other weights, the same shapes
    reseeded = M.random_masks(states["pytorch"], arch, 0.5, seed=1)
    for name in rules.prunable_layer_names(arch):
        np.testing.assert_array_equal(other[name], expected[name], err_msg=name)
        assert not np.array_equal(reseeded[name], expected[name]), name
        assert int((~expected[name]).sum()) == round(0.5 * expected[name].size), name
    for state in states.values():  # the old draw: ~70% positive pruned, ~25% positive kept
        for name in rules.prunable_layer_names(arch):
            w, pruned = state[f"{name}.weight"], ~expected[name]
            assert abs((w[pruned] > 0).mean() - (w[~pruned] > 0).mean()) < 0.25, name


# --- the pruning techniques, run by the shared drivers in each suite ------------------------------------

@pytest.mark.parametrize("technique", TECHNIQUES)
def test_prune_reaches_the_target_sparsity(technique, pruned, suite):
    backend, _ = suite
    model, row = pruned[technique]
    counts = _layer_zeros(backend, model)
    n_weights = sum(c.cout * c.cin * c.kernel**2 for c in specs.convs_of(model.plan)) + sum(
        lin.cout * lin.cin for lin in specs.linears_of(model.plan))
    assert row["prunable_weights"] == n_weights == sum(n for _, n in counts.values())
    assert row["target_sparsity"] == SPARSITY
    assert abs(row["sparsity"] - SPARSITY) <= 0.005
    assert row["zero_weights"] == sum(z for z, _ in counts.values())
    assert row["layer_sparsity"] == {name: z / n for name, (z, n) in counts.items()}
    if technique in ONE_GLOBAL_COUNT:
        assert row["zero_weights"] == round(SPARSITY * n_weights)
    else:  # every layer exactly round(s * n), so within 0.5 points
        for name, (zeros, n) in counts.items():
            assert zeros == round(SPARSITY * n), name
            assert abs(row["layer_sparsity"][name] - SPARSITY) <= 0.005, name
    assert isinstance(row["pre_finetune_test_acc"], float if technique in ONE_SHOT else type(None))
    assert [h["epoch"] for h in row["finetune_history"]] == [1]
    assert row["budget"]["steps"] == 8 and row["finetune_time_s"] > 0
    assert row["bn_recalibration_images"] == 128


@pytest.mark.parametrize("technique", ONE_SHOT)
def test_one_shot_masks_are_held_fixed_through_finetuning(technique, pruned, suite):
    """The zeros after fine-tuning are exactly the one-shot mask of the baseline: no pruned weight came
    back, no kept weight was zeroed."""
    backend, ctx = suite
    model, _ = pruned[technique]
    state = backend.export_state(load_baseline(backend, ctx, Cell(backend.name, "vgg16", technique, 0)))
    masks = M.ONE_SHOT[ONE_SHOT[technique]](state, "vgg16", SPARSITY, 0)
    final = backend.export_state(model)
    for name, keep in masks.items():
        np.testing.assert_array_equal(final[f"{name}.weight"] != 0, keep, err_msg=name)


def _framework_round_trip(backend, model, tmp_path) -> dict:
    """The model saved and loaded by its framework's own format, as a neutral state."""
    if backend.name == "pytorch":
        torch.save(model.state_dict(), tmp_path / "m.pt")
        back = backend.build(model.arch, widths=model.widths)
        back.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    else:
        model.save(tmp_path / "m.keras")
        # compile=False: the fine-tuned model is compiled with train.TabulatedSchedule, which is not
        # registered as Keras-serializable, so restoring its optimizer fails (the weights are what matter)
        back = keras.models.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
        back.arch, back.widths, back.plan = model.arch, model.widths, model.plan
    return backend.export_state(back)


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_masks_are_permanent_and_zeros_survive_save_and_load(technique, pruned, suite, tmp_path):
    backend, _ = suite
    model, _ = pruned[technique]
    if backend.name == "pytorch":  # plain weights: no torch.nn.utils.prune reparametrisation left behind
        assert not [k for k in model.state_dict() if k.endswith(("_orig", "_mask"))]
        assert not any(torch_prune.is_pruned(m) for m in model.modules())
    else:  # no tfmot wrappers or pruning variables, no masks tracked by the model
        assert not [layer.name for layer in model.layers if "prune_low_magnitude" in layer.name]
        assert not [v.name for v in model.variables if any(s in v.name for s in ("mask", "threshold", "pruning_step"))]
    zeros = _layer_zeros(backend, model)
    assert rules.layer_zeros(_framework_round_trip(backend, model, tmp_path), "vgg16") == zeros
    neutral.save(backend.export_state(model), tmp_path / "m.safetensors")
    state = neutral.load(tmp_path / "m.safetensors")
    assert rules.layer_zeros(state, "vgg16") == zeros
    rebuilt = backend.import_state(backend.build("vgg16", widths=model.widths), state)
    assert _layer_zeros(backend, rebuilt) == zeros


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_params_nonzero_is_total_minus_the_pruned_zeros(technique, pruned):
    model, row = pruned[technique]
    assert row["params_total"] == specs.count_params(model.plan)
    assert row["params_nonzero"] == row["params_total"] - row["zero_weights"]


def test_global_is_non_uniform_across_layers_layerwise_is_uniform(pruned):
    spread = {t: np.ptp(list(pruned[t][1]["layer_sparsity"].values())) for t in TECHNIQUES}
    for technique in ("prune_layerwise", "prune_gradual_layerwise", "prune_random"):
        assert spread[technique] < 0.01, technique  # rounding only
    for technique in ONE_GLOBAL_COUNT:
        assert spread[technique] > 0.1, technique


@pytest.mark.parametrize("technique, scope", [("prune_gradual", "global"), ("prune_gradual_layerwise", "layerwise")])
def test_gradual_follows_the_schedule_and_ends_at_the_final_sparsity(technique, scope, pruned):
    _, row = pruned[technique]
    n = row["prunable_weights"]
    # smoke budget: 8 steps, ramp end int(8 * 0.75) = 6, gradual_every=2: updates after steps 0, 2, 4, 6
    assert [(s["step"], s["target"]) for s in row["gradual_schedule"]] == [
        (0, 0.0), (2, pytest.approx(0.9 * 19 / 27)), (4, pytest.approx(0.9 * 26 / 27)), (6, SPARSITY)]
    assert row["gradual_schedule"][0]["achieved"] == 0.0
    assert row["gradual_schedule"][-1]["achieved"] == row["sparsity"]
    assert row["gradual_schedule"][-1]["layer_sparsity"] == pytest.approx(row["layer_sparsity"], abs=1e-12)
    achieved = [s["achieved"] for s in row["gradual_schedule"]]
    assert achieved == sorted(achieved)
    if scope == "global":
        assert row["sparsity"] == round(SPARSITY * n) / n
    assert row["schedule"] == f"Zhu & Gupta cubic, {scope} magnitude, monotone masks"


def _sparse_round_trip(backend, model, tmp_path) -> tuple[dict, dict]:
    """(the sparse (CSR) artifact written and read back as dense arrays, the model's dense tensors), checking
    that every prunable weight is stored as CSR with int32 indices."""
    prunable = rules.prunable_weight_keys(model.arch)
    if backend.name == "pytorch":
        sd = pt_sparsity.sparse_state_dict(model)
        for key in prunable:
            assert sd[key].layout == torch.sparse_csr, key
            assert sd[key].col_indices().dtype == sd[key].crow_indices().dtype == torch.int32, key
        torch.save(sd, tmp_path / "s.pt")
        back = torch.load(tmp_path / "s.pt", weights_only=True)
        dense = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return {k: (v.to_dense().reshape(dense[k].shape) if v.layout == torch.sparse_csr else v).numpy()
                for k, v in back.items()}, {k: v.numpy() for k, v in dense.items()}
    sparse = tf_sparsity.sparse_state(model)
    for key in prunable:
        assert sparse[f"{key}.col_indices"].dtype == sparse[f"{key}.crow_indices"].dtype == np.int32, key
    dense = backend.export_state(model)
    return {**{k: v for k, v in sparse.items() if k in dense},
            **{key: tf_sparsity.dense_from_sparse(sparse, key) for key in prunable}}, dense


# torch notes that it validates loaded sparse tensors under weights_only=True: expected here
@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
def test_sparse_artifact_is_smaller_and_loads_back_to_the_weights(pruned, suite, tmp_path):
    backend, _ = suite
    model, row = pruned["prune_global"]
    assert row["size_sparse_bytes"] < row["size_bytes"]  # 10% of weights at 4 + 4 bytes vs all at 4 bytes
    assert row["size_sparse_gzip_bytes"] < row["size_gzip_bytes"]
    back, dense = _sparse_round_trip(backend, model, tmp_path)
    assert set(back) == set(dense)
    for key, value in dense.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


# --- analyses ------------------------------------------------------------------------------------------------

def test_sensitivity_row_structure(suite):
    backend, ctx = suite
    row = U.sensitivity(backend, ctx, Cell(backend.name, "resnet18", "sensitivity", 0))
    layers = [conv for conv, _ in rules.sensitivity_layers("resnet18")]
    ratios = ctx.preset.protocol.sensitivity_ratios
    assert row["layers"] == layers and row["ratios"] == list(ratios)
    assert len(row["curve"]) == len(layers) * len(ratios)
    assert [(p["layer"], p["ratio"]) for p in row["curve"]] == [(l, r) for l in layers for r in ratios]
    widths = dict(zip(specs.layer_names("resnet18"), backend.build("resnet18", width=ctx.preset.width).widths))
    for p in row["curve"]:
        assert p["filters"] == widths[p["layer"]]
        assert p["filters_removed"] == p["filters"] - max(1, int(p["filters"] * (1 - p["ratio"])))
        assert 0.0 <= p["val_acc"] <= 1.0
    assert 0.0 <= row["baseline_val_acc"] <= 1.0


def test_sensitivity_curve_is_the_same_in_both_suites_on_identical_weights(pt_backend, tf_backend, tf_smoke_ctx,
                                                                           tmp_path):
    cell = Cell("keras", "resnet18", "sensitivity", 0)
    row = U.sensitivity(tf_backend, tf_smoke_ctx, cell)
    # PyTorch's scan of the same weights: the Keras baseline checkpoint as PyTorch's, the same data
    pt_ctx = RunContext(preset=tf_smoke_ctx.preset, out_dir=tmp_path, _dataset=tf_smoke_ctx.dataset)
    pt_path = pt_ctx.checkpoint_path("pytorch", "resnet18", 0)
    pt_path.parent.mkdir(parents=True)
    shutil.copy(tf_smoke_ctx.checkpoint_path("keras", "resnet18", 0), pt_path)
    pt_row = U.sensitivity(pt_backend, pt_ctx, Cell("pytorch", "resnet18", "sensitivity", 0))
    assert row["layers"] == pt_row["layers"] and row["ratios"] == pt_row["ratios"]
    assert abs(row["baseline_val_acc"] - pt_row["baseline_val_acc"]) <= 0.005
    for ours, theirs in zip(row["curve"], pt_row["curve"], strict=True):
        assert {k: ours[k] for k in ("layer", "ratio", "filters", "filters_removed")} == {
            k: theirs[k] for k in ("layer", "ratio", "filters", "filters_removed")}
        assert abs(ours["val_acc"] - theirs["val_acc"]) <= 0.005, (ours, theirs)


def test_sparsity_search_bisects_and_stays_within_tolerance(suite):
    backend, ctx = suite
    protocol = ctx.preset.protocol
    row = U.sparsity_search(backend, ctx, Cell(backend.name, "vgg16", "sparsity_search", 0))
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
