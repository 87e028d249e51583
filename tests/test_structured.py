"""Structured filter pruning in both suites: Torch-Pruning against the shared selection rule, Li et al.'s
counts, the Keras prune against Torch-Pruning, and the technique rows on the smoke run (one structured
budget for every technique, iterative rounds included)."""
import copy
import json

import numpy as np
import pytest

import tensorflow_impl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import torch
from torch import nn

from pytorch_impl import models
from pytorch_impl import models as tm
from pytorch_impl import structured as pt_structured
from pytorch_impl import weights as tw
from pytorch_impl.weights import export_state
from shared import filter_rule, specs
from shared.drivers import REGISTRY, common
from shared.protocols import LI_PRUNED_A_RATIOS, CompressionProtocol, budget_figures, split_steps, stage_ratios
from shared.runner import Cell
from shared.techniques import operating_points
from tensorflow_impl import models as km
from tensorflow_impl import structured as tf_structured
from tensorflow_impl import weights as kw

FRAMEWORKS = ("pytorch", "keras")
ROW_KEYS = {"test_acc", "params_total", "macs", "pruned_widths", "baseline_widths", "ratio_settings",
            "kept_channels", "pre_finetune_test_acc", "finetune_history", "finetune_time_s", "budget",
            "bn_recalibration_images", "macs_reduction", "params_reduction"}
WIDTH = 0.125


# --- PyTorch: Torch-Pruning and the shared rule ---------------------------------------------------------

def random_model(arch, width, seed=0):
    """Random weights and non-trivial BN statistics, so a wrong slice of any tensor changes the logits."""
    torch.manual_seed(seed)
    model = models.build(arch, width=width)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def conv_linear_macs(model) -> int:
    """MACs counted by running the torch model (conv and linear layers, as specs.count_macs does)."""
    total = []

    def hook(m, inputs, out):
        if isinstance(m, nn.Conv2d):
            taps = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            total.append(out.shape[1] * out.shape[2] * out.shape[3] * taps)
        else:
            total.append(m.in_features * m.out_features)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 32, 32))
    for h in handles:
        h.remove()
    return sum(total)


def test_li_pruned_a_full_width_counts_with_torch_pruning():
    """Li et al. 2017 Table 1: VGG-16-pruned-A has 5.4e6 params (-64.0%) and 2.06e8 FLOPs (-34.2%)."""
    model = random_model("vgg16", 1.0)
    base_params, base_macs = models.count_params(model), conv_linear_macs(model)
    ratios = filter_rule.conv_layer_ratios("vgg16", LI_PRUNED_A_RATIOS)
    pt_structured._prune_in_place(model, "vgg16", ratios)  # the Torch-Pruning model itself, before the rebuild
    widths = pt_structured.read_widths(model, "vgg16")
    plan = specs.plan("vgg16", widths=widths)
    assert widths == (32, 64, 128, 128, 256, 256, 256, 256, 256, 256, 256, 256, 256, 512)
    assert models.count_params(model) == specs.count_params(plan) == 5_399_690
    assert conv_linear_macs(model) == specs.count_macs(plan) == 206_279_680
    assert round(100 * (1 - 5_399_690 / base_params), 1) == 64.0
    assert round(100 * (1 - 206_279_680 / base_macs), 1) == 34.2


@pytest.mark.parametrize("arch", specs.ARCHS)
def test_rebuilt_model_matches_pruned_model_and_numpy_slice(arch):
    model = random_model(arch, 0.125)
    state = export_state(model)
    pruned_in_place = copy.deepcopy(model)
    ratios = filter_rule.uniform_layer_ratios(arch, 0.3)
    pt_structured._prune_in_place(pruned_in_place, arch, ratios)
    rebuilt, kept = pt_structured.prune_filters(model, ratios)
    assert rebuilt.widths == pt_structured.read_widths(pruned_in_place, arch)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (pruned_in_place.eval()(x) - rebuilt.eval()(x)).abs().max().item()
    assert diff <= 1e-5
    # the Keras suite's route: slice the neutral state with the shared rule, no Torch-Pruning involved
    sliced = filter_rule.prune_state(state, arch, kept)
    for name, value in export_state(rebuilt).items():
        np.testing.assert_array_equal(value, sliced[name], err_msg=name)


@pytest.mark.parametrize("arch", specs.ARCHS)
def test_torch_pruning_keeps_the_filter_rule_channels(arch):
    model = random_model(arch, 0.125, seed=3)
    state = export_state(model)
    stage = stage_ratios(arch, CompressionProtocol())
    for ratios in (filter_rule.uniform_layer_ratios(arch, 0.4), filter_rule.stage_layer_ratios(arch, stage)):
        rebuilt, kept = pt_structured.prune_filters(copy.deepcopy(model), ratios)
        rule_widths, rule_kept = filter_rule.prune_plan(state, arch, model.widths, ratios)
        assert rebuilt.widths == rule_widths
        assert kept == rule_kept
        assert any(len(k) < w for k, w in zip(kept.values(), model.widths))


@pytest.mark.parametrize("arch", specs.ARCHS)
def test_torch_pruning_importance_is_the_rules_mean_filter_l1(arch):
    """Torch-Pruning's groups are the rule's coupled groups, scored by filter L1 alone (no BN, no consumers)."""
    import torch_pruning as tp

    model = random_model(arch, 0.125)
    state, names = export_state(model), {m: n for n, m in model.named_modules()}
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, 3, 32, 32))
    ignored = [m for m in model.modules() if isinstance(m, nn.Linear)]
    rule_groups = {frozenset(g.convs): g for g in filter_rule.coupled_groups(arch)}
    seen = set()
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d]):
        convs = frozenset(names[d.layer] for d, _ in group if d.pruning_fn == tp.prune_conv_out_channels)
        expected = filter_rule.filter_importance(state, rule_groups[convs])
        np.testing.assert_allclose(pt_structured.FilterL1Importance()(group).numpy(), expected, rtol=1e-5)
        seen.add(convs)
    assert seen == set(rule_groups)


def test_coupled_resnet_channels_are_pruned_together_at_the_first_layers_ratio():
    stage = CompressionProtocol().stage_ratios_resnet18
    widths, kept = filter_rule.prune_plan(export_state(random_model("resnet18", 0.25)), "resnet18",
                                          specs.default_widths("resnet18", 0.25),
                                          filter_rule.stage_layer_ratios("resnet18", stage))
    names = specs.layer_names("resnet18")
    w = dict(zip(names, widths))
    # the stem has no stage (ratio 0), so its residual stream with layer1's block outputs stays whole
    assert w["stem"] == w["layer1.0.conv2"] == w["layer1.1.conv2"] == 16
    assert w["layer1.0.conv1"] == int(16 * 0.9) == 14
    # layer2's stream (block outputs + projection) takes block layer2.0's ratio, 0.2 of 32 -> floor(25.6)
    assert w["layer2.0.conv2"] == w["layer2.1.conv2"] == 25 and kept["layer2.0.conv2"] == kept["layer2.1.conv2"]
    assert w["layer4.0.conv2"] == w["layer4.1.conv2"] == int(128 * 0.7) == 89


def test_uniform_half_halves_every_vgg_conv_and_shrinks_both_archs():
    # kept = floor(C * (1 - ratio)): halves an even width exactly; 7 channels at 0.5 keep 3, 6 at 0.25 keep 4
    kept_count = filter_rule.kept_count
    assert (kept_count(64, 0.5), kept_count(7, 0.5), kept_count(6, 0.25), kept_count(1, 0.5)) == (32, 3, 4, 1)
    with pytest.raises(ValueError, match="remove all"):
        kept_count(2, 0.6)
    for arch in specs.ARCHS:
        model = random_model(arch, 0.125)
        rebuilt, _ = pt_structured.prune_filters(copy.deepcopy(model), filter_rule.uniform_layer_ratios(arch, 0.5))
        assert models.count_params(rebuilt) < models.count_params(model)
        assert specs.count_macs(rebuilt.plan) < specs.count_macs(model.plan)
        if arch == "vgg16":
            assert rebuilt.widths[:-1] == tuple(w // 2 for w in model.widths[:-1])
            assert rebuilt.widths[-1] == model.widths[-1] == 64  # fc1 is never pruned
            assert rebuilt.fc2.in_features == 64


def test_cell_settings_map_to_per_layer_ratios():
    protocol = CompressionProtocol()
    for technique in ("filter_uniform", "filter_stagewise", "filter_li_a", "filter_iterative"):
        for arch in specs.ARCHS:
            for settings in operating_points(technique, arch, protocol):
                ratios = filter_rule.technique_layer_ratios(technique, arch, settings)
                assert len(ratios) == len(specs.layer_names(arch)) and max(ratios) > 0
                if arch == "vgg16":
                    assert ratios[-1] == 0.0  # fc1
    vgg_stage = filter_rule.technique_layer_ratios("filter_stagewise", "vgg16", {"stage_ratios": [.1, .2, .3, .4, .5]})
    assert vgg_stage == [.1, .1, .2, .2, .3, .3, .3, .4, .4, .4, .5, .5, .5, 0.0]
    assert filter_rule.technique_layer_ratios("filter_li_a", "vgg16", {"layer_ratios": list(LI_PRUNED_A_RATIOS)}) == [
        *map(float, LI_PRUNED_A_RATIOS), 0.0]
    with pytest.raises(ValueError, match="no ResNet-18"):
        filter_rule.technique_layer_ratios("filter_li_a", "resnet18", {"layer_ratios": list(LI_PRUNED_A_RATIOS)})
    with pytest.raises(ValueError, match="never pruned"):
        filter_rule.prune_plan({}, "vgg16", specs.default_widths("vgg16"), [0.5] * 14)



# --- Keras: the shared rule on the neutral state, against Torch-Pruning -------------------------------

def random_torch(arch, width, seed):
    """He-normal kernels (logits of order 1-10) and non-trivial BN statistics: a wrong slice shows."""
    torch.manual_seed(seed)
    model = tm.build(arch, width=width)
    classifier = specs.linears_of(model.plan)[-1].name
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.normal_(0.0, float(np.sqrt((1.0 if name == classifier else 2.0) / m.weight[0].numel())))
                if m.bias is not None:
                    m.bias.uniform_(-0.2, 0.2)
            elif isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2), m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def keras_copy(torch_model):
    """The same network in Keras, its weights moved through the neutral state."""
    return kw.import_state(km.build(torch_model.arch, widths=torch_model.widths), tw.export_state(torch_model))


def test_li_pruned_a_full_width_counts_in_keras():
    """Li et al. 2017 Table 1: VGG-16-pruned-A has 5.4e6 params and 2.06e8 FLOPs, here in Keras."""
    model = km.build("vgg16", width=1.0)
    rebuilt, kept = tf_structured.prune_filters(model, filter_rule.conv_layer_ratios("vgg16", LI_PRUNED_A_RATIOS))
    assert rebuilt.widths == (32, 64, 128, 128, 256, 256, 256, 256, 256, 256, 256, 256, 256, 512)
    assert [len(kept[n]) for n in specs.layer_names("vgg16")] == list(rebuilt.widths)
    assert km.count_params(rebuilt) == specs.count_params(rebuilt.plan) == 5_399_690
    assert km.count_macs(rebuilt) == specs.count_macs(rebuilt.plan) == 206_279_680


@pytest.mark.parametrize("arch", specs.ARCHS)
def test_keras_prune_matches_torch_pruning(arch):
    """Same weights in, same channels, counts and (eval-mode) logits out, uniform and stage-wise."""
    torch.set_num_threads(2)
    torch_model = random_torch(arch, WIDTH, seed=3)
    keras_model = keras_copy(torch_model)
    stage = stage_ratios(arch, CompressionProtocol())
    x = np.random.default_rng(1).standard_normal((4, 32, 32, 3)).astype(np.float32)
    for ratios in (filter_rule.uniform_layer_ratios(arch, 0.4), filter_rule.stage_layer_ratios(arch, stage)):
        torch_pruned, torch_kept = pt_structured.prune_filters(copy.deepcopy(torch_model), ratios)
        keras_pruned, keras_kept = tf_structured.prune_filters(keras_model, ratios)
        assert keras_kept == torch_kept
        assert keras_pruned.widths == torch_pruned.widths
        assert any(w < b for w, b in zip(keras_pruned.widths, keras_model.widths))
        assert km.count_params(keras_pruned) == tm.count_params(torch_pruned)
        assert km.count_macs(keras_pruned) == specs.count_macs(torch_pruned.plan)
        with torch.no_grad():
            want = torch_pruned.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
        got = keras_pruned(x, training=False).numpy()
        assert np.abs(got - want).max() <= 1e-4
    assert km.count_params(keras_model) == tm.count_params(torch_model)  # the input model is left as it was


def test_rebuilt_model_carries_the_given_weight_decay():
    model = km.build("resnet18", width=WIDTH)
    ratios = filter_rule.uniform_layer_ratios("resnet18", 0.5)
    assert not tf_structured.prune_filters(model, ratios)[0].losses
    assert tf_structured.prune_filters(model, ratios, weight_decay=5e-4)[0].losses




def test_keras_backend_prunes_with_its_weight_decay(tf_backend):
    model = km.build("resnet18", width=WIDTH)
    pruned, kept = tf_backend.prune_filters(model, filter_rule.uniform_layer_ratios("resnet18", 0.5))
    assert tf_backend.weight_decay == 5e-4 and pruned.losses
    assert [len(kept[n]) for n in specs.layer_names("resnet18")] == list(pruned.widths)


# --- the drivers on the smoke run (both suites) ---------------------------------------------------------

@pytest.fixture(scope="module")
def smoke_rows():
    """Rows computed once per module: (framework, arch, technique) -> row."""
    return {}


def structured_row(request, smoke_rows, framework, arch, technique):
    key = (framework, arch, technique)
    if key not in smoke_rows:
        prefix = "pt" if framework == "pytorch" else "tf"
        backend, ctx = request.getfixturevalue(f"{prefix}_backend"), request.getfixturevalue(f"{prefix}_smoke_ctx")
        settings = operating_points(technique, arch, ctx.preset.protocol)[-1]
        smoke_rows[key] = (ctx, settings, REGISTRY[technique](backend, ctx, Cell(framework, arch, technique, 0, settings)))
    return smoke_rows[key]


def _check_row(row, ctx, arch, technique, settings):
    assert ROW_KEYS <= row.keys()
    json.dumps(row, allow_nan=False)
    base = specs.default_widths(arch, ctx.preset.width)
    assert row["baseline_widths"] == list(base)
    assert row["widths"] == row["pruned_widths"] and sum(row["pruned_widths"]) < sum(base)
    assert [len(row["kept_channels"][n]) for n in specs.layer_names(arch)] == row["pruned_widths"]
    assert row["macs"] == specs.count_macs(specs.plan(arch, widths=row["pruned_widths"]))
    assert row["params_total"] == specs.count_params(specs.plan(arch, widths=row["pruned_widths"]))
    assert row["macs_reduction"] > 1 and row["params_reduction"] > 1
    ratios = filter_rule.technique_layer_ratios(technique, arch, settings)
    assert row["ratio_settings"]["per_layer"] == dict(zip(specs.layer_names(arch), map(float, ratios)))
    assert row["bn_recalibration_images"] == ctx.preset.protocol.bn_recalibration_images
    # the one structured budget: the filter budget's steps, all of them taken
    budget = ctx.preset.protocol.filter_budget
    n_images = len(common.finetune_data(ctx, budget).train)
    want = budget_figures(ctx.preset.recipe, budget, n_images)
    assert {k: row["budget"][k] for k in want} == want
    assert row["budget"]["steps"] == common.total_steps(ctx, budget) == 8  # smoke: 1 epoch of 8 steps
    assert sum(h["steps"] for h in row["finetune_history"]) == row["budget"]["steps"]


# VGG's uniform and ResNet's stage-wise prunes are covered without training above; fine-tuning is the cost
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("arch,technique", [
    ("resnet18", "filter_uniform"), ("vgg16", "filter_stagewise"), ("vgg16", "filter_li_a"),
])
def test_one_shot_techniques_on_smoke(request, smoke_rows, framework, arch, technique):
    ctx, settings, row = structured_row(request, smoke_rows, framework, arch, technique)
    _check_row(row, ctx, arch, technique, settings)
    assert set(row["budget"]) >= {"epochs", "images", "steps", "peak_lr", "schedule"}
    assert "round_steps" not in row["budget"]
    assert [h["epoch"] for h in row["finetune_history"]] == [1]
    if technique == "filter_uniform":
        assert settings == {"ratio": 0.5}
        assert row["pruned_widths"] == [filter_rule.kept_count(w, 0.5) for w in row["baseline_widths"]]
    if technique == "filter_li_a":
        assert row["pruned_widths"][0] == row["baseline_widths"][0] // 2
        assert row["pruned_widths"][1:7] == row["baseline_widths"][1:7]


# PyTorch on both archs; Keras on ResNet-18 (the coupled residual groups; VGG's rounds are the same loop)
@pytest.mark.parametrize("framework,arch", [("pytorch", "vgg16"), ("pytorch", "resnet18"), ("keras", "resnet18")])
def test_iterative_records_every_round_on_smoke(request, smoke_rows, framework, arch):
    ctx, settings, row = structured_row(request, smoke_rows, framework, arch, "filter_iterative")
    _check_row(row, ctx, arch, "filter_iterative", settings)
    rounds = row["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, settings["rounds"] + 1)) == [1, 2]
    params = [r["params"] for r in rounds]
    assert all(a > b for a, b in zip(params, params[1:]))
    assert rounds[-1]["widths"] == row["pruned_widths"] and rounds[-1]["params"] == row["params_total"]
    assert rounds[-1]["macs"] == row["macs"]
    for r in rounds:
        assert {"macs", "test_acc", "val_acc", "pre_finetune_test_acc", "steps"} <= r.keys()
    assert row["pre_finetune_test_acc"] == rounds[0]["pre_finetune_test_acc"]
    # the kept channels compose over the rounds: indices into the baseline, as many as the final widths
    for name, width in zip(specs.layer_names(arch), row["baseline_widths"]):
        kept = row["kept_channels"][name]
        assert kept == sorted(set(kept)) and all(0 <= i < width for i in kept)
    # every round fine-tunes its share of the one budget; the history records each round's steps
    shares = split_steps(row["budget"]["steps"], settings["rounds"])
    assert row["budget"]["round_steps"] == [r["steps"] for r in rounds] == shares == [4, 4]
    assert [(h["round"], h["steps"]) for h in row["finetune_history"]] == [(1, 4), (2, 4)]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_iterative_and_uniform_take_the_same_number_of_finetuning_steps(request, smoke_rows, framework):
    """The equal-budget rule: iterative rounds split the structured budget instead of each getting one."""
    _, _, uniform = structured_row(request, smoke_rows, framework, "resnet18", "filter_uniform")
    _, _, iterative = structured_row(request, smoke_rows, framework, "resnet18", "filter_iterative")
    steps = uniform["budget"]["steps"]
    assert iterative["budget"]["steps"] == steps
    assert sum(h["steps"] for h in uniform["finetune_history"]) == steps
    assert sum(h["steps"] for h in iterative["finetune_history"]) == steps
    assert sum(iterative["budget"]["round_steps"]) == steps
    assert iterative["budget"]["images_seen"] == uniform["budget"]["images_seen"]
    assert iterative["budget"]["epochs"] == uniform["budget"]["epochs"] == 1.0
