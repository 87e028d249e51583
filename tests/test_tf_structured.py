"""Structured filter pruning in Keras: Li et al.'s counts, parity with Torch-Pruning, and the technique rows."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import tensorflow_impl  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import torch

from pytorch_impl import models as tm
from pytorch_impl import structured as pt_structured
from pytorch_impl import weights as tw
from shared import filter_rule, specs
from shared.protocols import LI_PRUNED_A_RATIOS, CompressionProtocol
from shared.runner import Cell
from shared.techniques import operating_points
from tensorflow_impl import models as km
from tensorflow_impl import structured
from tensorflow_impl import weights as kw

ROW_KEYS = {"test_acc", "params_total", "macs", "pruned_widths", "baseline_widths", "ratio_settings",
            "kept_channels", "pre_finetune_test_acc", "finetune_history", "macs_reduction", "params_reduction"}
WIDTH = 0.125


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


def test_li_pruned_a_full_width_counts():
    """Li et al. 2017 Table 1: VGG-16-pruned-A has 5.4e6 params and 2.06e8 FLOPs, here in Keras."""
    model = km.build("vgg16", width=1.0)
    rebuilt, kept = structured.prune_filters(model, filter_rule.conv_layer_ratios("vgg16", LI_PRUNED_A_RATIOS))
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
    stage = CompressionProtocol().stage_ratios_vgg16 if arch == "vgg16" else CompressionProtocol().stage_ratios_resnet18
    x = np.random.default_rng(1).standard_normal((4, 32, 32, 3)).astype(np.float32)
    for ratios in (filter_rule.uniform_layer_ratios(arch, 0.4), filter_rule.stage_layer_ratios(arch, stage)):
        torch_pruned, torch_kept = pt_structured.prune_filters(copy.deepcopy(torch_model), ratios)
        keras_pruned, keras_kept = structured.prune_filters(keras_model, ratios)
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
    assert not structured.prune_filters(model, ratios)[0].losses
    assert structured.prune_filters(model, ratios, weight_decay=5e-4)[0].losses


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
def test_one_shot_techniques_on_smoke(tf_smoke_ctx, arch, technique):
    settings = operating_points(technique, arch, tf_smoke_ctx.preset.protocol)[-1]
    row = structured.REGISTRY[technique](tf_smoke_ctx, Cell("keras", arch, technique, 0, settings))
    _check_row(row, tf_smoke_ctx, arch)
    if technique == "filter_li_a":
        assert row["pruned_widths"][0] == row["baseline_widths"][0] // 2
        assert row["pruned_widths"][1:7] == row["baseline_widths"][1:7]


def test_iterative_records_every_round_on_smoke(tf_smoke_ctx):
    arch = "resnet18"  # the coupled residual groups are the harder case; VGG's rounds are the same loop
    settings = operating_points("filter_iterative", arch, tf_smoke_ctx.preset.protocol)[0]
    row = structured.filter_iterative(tf_smoke_ctx, Cell("keras", arch, "filter_iterative", 0, settings))
    _check_row(row, tf_smoke_ctx, arch)
    rounds = row["rounds"]
    assert len(rounds) == settings["rounds"] == 2
    params = [r["params"] for r in rounds]
    assert all(a > b for a, b in zip(params, params[1:]))
    assert rounds[-1]["widths"] == row["pruned_widths"] and rounds[-1]["params"] == row["params_total"]
    assert {"macs", "test_acc", "val_acc", "pre_finetune_test_acc"} <= rounds[0].keys()
