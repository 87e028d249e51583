"""Structured filter pruning in PyTorch: Torch-Pruning, the shared selection rule, and the technique rows."""
import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from pytorch_impl import models, structured
from pytorch_impl.weights import export_state
from shared import filter_rule, specs
from shared.protocols import LI_PRUNED_A_RATIOS, CompressionProtocol
from shared.runner import Cell
from shared.techniques import operating_points

ROW_KEYS = {"test_acc", "params_total", "macs", "pruned_widths", "baseline_widths", "ratio_settings",
            "kept_channels", "pre_finetune_test_acc", "finetune_history", "macs_reduction", "params_reduction"}


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


def test_li_pruned_a_full_width_counts():
    """Li et al. 2017 Table 1: VGG-16-pruned-A has 5.4e6 params (-64.0%) and 2.06e8 FLOPs (-34.2%)."""
    model = random_model("vgg16", 1.0)
    base_params, base_macs = models.count_params(model), conv_linear_macs(model)
    ratios = filter_rule.conv_layer_ratios("vgg16", LI_PRUNED_A_RATIOS)
    structured._prune_in_place(model, "vgg16", ratios)  # the Torch-Pruning model itself, before the rebuild
    widths = structured.read_widths(model, "vgg16")
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
    structured._prune_in_place(pruned_in_place, arch, ratios)
    rebuilt, kept = structured.prune_filters(model, ratios)
    assert rebuilt.widths == structured.read_widths(pruned_in_place, arch)
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
    protocol = CompressionProtocol()
    stage = protocol.stage_ratios_vgg16 if arch == "vgg16" else protocol.stage_ratios_resnet18
    for ratios in (filter_rule.uniform_layer_ratios(arch, 0.4), filter_rule.stage_layer_ratios(arch, stage)):
        rebuilt, kept = structured.prune_filters(copy.deepcopy(model), ratios)
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
        np.testing.assert_allclose(structured.FilterL1Importance()(group).numpy(), expected, rtol=1e-5)
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
        rebuilt, _ = structured.prune_filters(copy.deepcopy(model), filter_rule.uniform_layer_ratios(arch, 0.5))
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


def _check_row(row, ctx, arch):
    assert ROW_KEYS <= row.keys()
    json.dumps(row, allow_nan=False)
    base = specs.default_widths(arch, ctx.preset.width)
    assert row["baseline_widths"] == list(base)
    assert row["widths"] == row["pruned_widths"] and sum(row["pruned_widths"]) < sum(base)
    assert [len(row["kept_channels"][n]) for n in specs.layer_names(arch)] == row["pruned_widths"]
    assert row["macs"] == specs.count_macs(specs.plan(arch, widths=row["pruned_widths"]))
    assert row["macs_reduction"] > 1 and row["params_reduction"] > 1
    assert len(row["finetune_history"]) >= ctx.preset.protocol.finetune_epochs


# VGG's uniform and ResNet's stage-wise prunes are covered without training above; fine-tuning is the cost
@pytest.mark.parametrize("arch,technique", [
    ("resnet18", "filter_uniform"), ("vgg16", "filter_stagewise"), ("vgg16", "filter_li_a"),
])
def test_one_shot_techniques_on_smoke(pt_smoke_ctx, arch, technique):
    settings = operating_points(technique, arch, pt_smoke_ctx.preset.protocol)[-1]
    row = structured.REGISTRY[technique](pt_smoke_ctx, Cell("pytorch", arch, technique, 0, settings))
    _check_row(row, pt_smoke_ctx, arch)
    if technique == "filter_li_a":
        assert row["pruned_widths"][0] == row["baseline_widths"][0] // 2
        assert row["pruned_widths"][1:7] == row["baseline_widths"][1:7]


@pytest.mark.parametrize("arch", specs.ARCHS)
def test_iterative_records_every_round_on_smoke(pt_smoke_ctx, arch):
    settings = operating_points("filter_iterative", arch, pt_smoke_ctx.preset.protocol)[0]
    row = structured.filter_iterative(pt_smoke_ctx, Cell("pytorch", arch, "filter_iterative", 0, settings))
    _check_row(row, pt_smoke_ctx, arch)
    rounds = row["rounds"]
    assert len(rounds) == settings["rounds"] == 2
    params = [r["params"] for r in rounds]
    assert all(a > b for a, b in zip(params, params[1:]))
    assert rounds[-1]["widths"] == row["pruned_widths"] and rounds[-1]["params"] == row["params_total"]
    assert {"macs", "test_acc", "val_acc", "pre_finetune_test_acc"} <= rounds[0].keys()
