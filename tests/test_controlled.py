"""Controlled mode: the Keras suite starts from the PyTorch-trained baseline instead of training its own."""
import shutil

import numpy as np
import pytest
import torch

import tensorflow_impl  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from pytorch_impl import models as tm
from pytorch_impl import weights as tw
from shared import state as neutral
from shared.cli import suite_main
from shared.presets import fingerprint, get_preset
from shared import techniques
from shared.drivers.baseline import baseline
from shared.drivers.common import load_baseline
from shared.runner import CONTROLLED_SOURCE, Cell, RunContext, plan_cells, run_suite
from tensorflow_impl.train import normalise


def test_the_controlled_source_is_pytorch_and_the_runner_re_exports_it():
    assert CONTROLLED_SOURCE == techniques.CONTROLLED_SOURCE == "pytorch"


def test_controlled_cells_are_marked_and_have_their_own_ids():
    preset = get_preset("smoke")
    plain, controlled = plan_cells("keras", preset), plan_cells("keras", preset, controlled=True)
    assert len(plain) == len(controlled)
    for a, b in zip(plain, controlled):
        assert b.settings == {**a.settings, "controlled": True}
        assert (a.arch, a.technique) == (b.arch, b.technique) and a.id != b.id


def test_controlled_checkpoints_never_overwrite_the_independent_ones(tmp_path):
    plain = RunContext(preset=get_preset("smoke"), out_dir=tmp_path)
    ctrl = RunContext(preset=get_preset("smoke"), out_dir=tmp_path, controlled=True)
    fp = fingerprint(get_preset("smoke"))
    assert ctrl.checkpoint_path("keras", "vgg16", 0).name == f"keras-controlled__vgg16__baseline__{fp}__s0.safetensors"
    assert plain.checkpoint_path("keras", "vgg16", 0).name == f"keras__vgg16__baseline__{fp}__s0.safetensors"
    # the source's checkpoint is the same file in both modes: that is what controlled cells start from
    assert ctrl.checkpoint_path("pytorch", "vgg16", 0) == plain.checkpoint_path("pytorch", "vgg16", 0)


def test_the_source_suite_refuses_controlled_mode(tmp_path, capsys, pt_backend):
    assert pt_backend.name == CONTROLLED_SOURCE
    with pytest.raises(ValueError, match="the pytorch suite is that source: run it without --controlled"):
        run_suite(pt_backend, get_preset("smoke"), tmp_path, controlled=True)
    with pytest.raises(SystemExit) as exc:
        suite_main("pytorch_impl", ["run", "--preset", "smoke", "--out", str(tmp_path), "--controlled"])
    assert exc.value.code == 2
    assert "--controlled applies to the Keras suite" in capsys.readouterr().err
    assert not (tmp_path / "rows").exists()


def test_missing_pytorch_baseline_is_a_clear_error(tmp_path, tf_backend):
    ctx = RunContext(preset=get_preset("smoke"), out_dir=tmp_path, controlled=True)
    with pytest.raises(FileNotFoundError, match="controlled mode needs the pytorch baseline at .*"
                                                "python -m pytorch_impl run --preset smoke"):
        baseline(tf_backend, ctx, Cell("keras", "resnet18", "baseline", 0, {"controlled": True}))
    assert not (tmp_path / "checkpoints").exists()


@pytest.fixture(scope="module")
def controlled(pt_smoke_ctx, tf_backend, tmp_path_factory):
    """A controlled Keras baseline (ResNet-18) over a copy of the smoke run's PyTorch checkpoint."""
    ctx = RunContext(preset=pt_smoke_ctx.preset, out_dir=tmp_path_factory.mktemp("controlled"), controlled=True)
    source = ctx.checkpoint_path("pytorch", "resnet18", 0)
    source.parent.mkdir(parents=True)
    shutil.copy(pt_smoke_ctx.checkpoint_path("pytorch", "resnet18", 0), source)
    cell = Cell("keras", "resnet18", "baseline", 0, {"controlled": True})
    return ctx, cell, baseline(tf_backend, ctx, cell)


def test_controlled_baseline_is_the_pytorch_model_not_a_trained_one(controlled):
    ctx, cell, row = controlled
    assert row["source_framework"] == "pytorch" and "history" not in row and "train_time_s" not in row
    source = neutral.load(ctx.checkpoint_path("pytorch", "resnet18", 0))
    saved = neutral.load(ctx.checkpoint_path("keras", "resnet18", 0))
    assert set(saved) == set(source)
    for key in source:  # what every controlled technique starts from: the PyTorch weights, bit for bit
        np.testing.assert_array_equal(saved[key], source[key], err_msg=key)


def test_controlled_techniques_start_from_the_pytorch_weights(controlled, tf_backend):
    ctx, cell, _ = controlled
    torch_model = tw.import_state(tm.build("resnet18", width=ctx.preset.width),
                                  neutral.load(ctx.checkpoint_path("pytorch", "resnet18", 0))).eval()
    keras_model = load_baseline(tf_backend, ctx, Cell("keras", "resnet18", "int8_static", 0, {"controlled": True}))
    xk = normalise(ctx.dataset.test.x[:32]).numpy()
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(np.ascontiguousarray(xk.transpose(0, 3, 1, 2)))).numpy()
    np.testing.assert_allclose(keras_model(xk, training=False).numpy(), expected, atol=1e-4)
