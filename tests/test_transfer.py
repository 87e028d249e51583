"""The transfer family (issue 13): the demonstration's data written as an ImageFolder tree and read back, the
custom head in the spec, the frozen-backbone phase in both suites, the smoke run of the family in both suites,
``--pretrained`` files of every kind, and the report's "Transfer learning" table."""
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from shared import data as data_mod, published, runner, specs, state as neutral, transfer as T
from shared.presets import PRESETS, fingerprint, get_preset, with_overrides
from shared.runner import plan_cells, run_suite
from shared.techniques import operating_points

ROOT = Path(__file__).resolve().parent.parent
SMOKE_T = get_preset("smoke_transfer")
PROTOCOL = SMOKE_T.transfer


# --------------------------------------------------------------------------------------- presets and cells

def test_presets_without_transfer_keep_their_fingerprints():
    # the fields transfer learning added are left out of the fingerprint when unset: the quick runs committed
    # before it stay this configuration's rows
    assert fingerprint(get_preset("quick")) == "853aa518"
    assert fingerprint(get_preset("transfer")) != fingerprint(replace(get_preset("transfer"), pretrained="/x.pth"))
    assert fingerprint(SMOKE_T) == fingerprint(replace(SMOKE_T, techniques=("baseline",)))  # selection only


def test_transfer_cells_exist_only_in_a_transfer_preset():
    assert operating_points("transfer", "resnet18", get_preset("quick").protocol) == []
    assert operating_points("transfer", "resnet18", SMOKE_T.protocol, PROTOCOL) == [{"init": "scratch"},
                                                                                    {"head": "linear"}]
    cells = plan_cells("pytorch", SMOKE_T)
    assert [(c.technique, c.settings) for c in cells] == [
        ("baseline", {}), ("filter_uniform", {"ratio": 0.25}), ("filter_uniform", {"ratio": 0.5}),
        ("int8_dynamic", {}),
        ("int8_static", {"observer": "minmax", "calibration_images": 16}),
        ("int8_static", {"observer": "histogram", "calibration_images": 16}),
        ("int8_qat", {}), ("transfer", {"init": "scratch"}), ("transfer", {"head": "linear"})]
    assert len(plan_cells("pytorch", get_preset("transfer"))) == 9  # the same cells, calibrated on 150 images


def test_command_line_overrides_are_checked():
    quick, transfer = get_preset("quick"), get_preset("transfer")
    with pytest.raises(ValueError, match="--pretrained starts a transfer preset's backbone; the quick preset"):
        with_overrides(quick, pretrained="w.pth")
    with pytest.raises(ValueError, match="give cifar10, synthetic or imagefolder:ROOT"):
        with_overrides(transfer, data="hymenoptera")
    with pytest.raises(ValueError, match=r"--width 0: give a width multiplier in \(0, 4\]"):
        with_overrides(transfer, width=0)
    p = with_overrides(transfer, data="imagefolder:/data/hymenoptera", width=1, archs=["resnet50"],
                       pretrained="/w/resnet50.pth")
    assert (p.data, p.width, p.archs, p.pretrained) == ("imagefolder:/data/hymenoptera", 1.0, ("resnet50",),
                                                        "/w/resnet50.pth")


# ------------------------------------------------------------------------------------------ spec and state

def test_the_custom_head_adds_exactly_its_two_layers():
    width = 0.25
    linear = specs.plan("resnet18", num_classes=2, width=width)
    custom = specs.plan("resnet18", num_classes=2, width=width, head=T.head_spec(PROTOCOL, "dropout", width))
    # fc's 128 inputs at width 0.25; the head: 128 -> 64 (256 scaled) -> ReLU -> dropout 0.5 -> 2
    assert (linear.fc.cin, custom.head_fc.cin, custom.head_fc.cout, custom.fc.cin) == (128, 128, 64, 64)
    assert specs.count_params(custom) - specs.count_params(linear) == (128 * 64 + 64) + (64 * 2 + 2) - (128 * 2 + 2)
    assert specs.head_modules(custom) == ("head_fc", "fc") and specs.head_modules(linear) == ("fc",)
    assert specs.head_of(custom) == specs.Head(64, 0.5) and specs.head_of(linear) is None
    with pytest.raises(ValueError, match="vgg16 keeps its own classifier"):
        specs.plan("vgg16", head=specs.Head(8))


def test_transfer_state_takes_the_backbone_and_keeps_the_new_head():
    src = specs.plan("resnet18", num_classes=8, width=0.0625)
    dst = specs.plan("resnet18", num_classes=2, width=0.0625, head=specs.Head(16))
    rng = np.random.default_rng(0)
    pretrained = {k: rng.normal(size=s).astype(np.float32) for k, s in neutral.expected_shapes(src).items()}
    fresh = {k: np.zeros(s, np.float32) for k, s in neutral.expected_shapes(dst).items()}
    out = T.transfer_state(pretrained, fresh, dst)
    assert set(out) == set(fresh)
    for k, v in out.items():
        expected = fresh[k] if k.split(".")[0] in ("head_fc", "fc") else pretrained[k]
        np.testing.assert_array_equal(v, expected)
    with pytest.raises(ValueError, match="trained at another width"):
        wide = specs.plan("resnet18", num_classes=8, width=0.125)
        T.transfer_state({k: np.zeros(s, np.float32) for k, s in neutral.expected_shapes(wide).items()}, fresh, dst)
    with pytest.raises(ValueError, match="lacks 5 backbone tensors"):  # the stem's conv and its BN
        T.transfer_state({k: v for k, v in pretrained.items() if not k.startswith("stem.")}, fresh, dst)


# ------------------------------------------------------------------------------------------------ the data

def test_the_target_tree_is_written_once_and_read_back_pixel_exact(tmp_path):
    cifar = data_mod.synthetic(n_train=512, n_val=128, n_test=256, seed=0)
    target = T.target_dataset(cifar, PROTOCOL, tmp_path, log=lambda m: None)
    tree = tmp_path / "tree"
    assert target.classes == ("cat", "dog")
    for split, n in (("train", 16), ("val", 8), ("test", 16)):
        for c in ("cat", "dog"):
            assert len(list((tree / split / c).glob("*.png"))) == n
    assert (len(target.train), len(target.val), len(target.test)) == (32, 16, 32)
    # PNG is lossless: every image is a CIFAR-10 image of its class, label 0 = cat (3), 1 = dog (5)
    by_name = {f"train_{i:05d}.png": (cifar.train.x[i], cifar.train.y[i]) for i in range(len(cifar.train))}
    for x, y, name in zip(target.train.x, target.train.y, target.train.names):
        original, label = by_name[Path(name).name]
        np.testing.assert_array_equal(x, original)
        assert (3, 5)[y] == label
    assert not set(target.train.names) & set(target.val.names)  # validation images are other images
    mtime = (tree / ".complete").stat().st_mtime_ns
    T.target_dataset(cifar, PROTOCOL, tmp_path, log=lambda m: None)
    assert (tree / ".complete").stat().st_mtime_ns == mtime  # kept: its files are the run's data


def test_the_source_side_holds_only_the_source_classes_renumbered():
    cifar = data_mod.synthetic(n_train=512, n_val=128, n_test=256, seed=0)
    source = T.source_dataset(cifar, PROTOCOL)
    want = np.isin(cifar.train.y, PROTOCOL.source_classes).sum()
    assert len(source.train) == want and set(np.unique(source.train.y)) == set(range(8))
    first = np.flatnonzero(cifar.train.y == 4)[0]  # class 4 is the source's fourth class: label 3
    assert source.train.y[list(source.train.names).index(cifar.train.names[first])] == 3


def test_a_protocol_mixing_source_and_target_is_refused():
    with pytest.raises(ValueError, match="must not be among the source classes"):
        T.TransferProtocol(source_classes=(0, 3), target_classes=(3, 5))


# ---------------------------------------------------------------------------------------- frozen backbone

def _frozen_train_changes_only_the_head(backend):
    cifar = data_mod.synthetic(n_train=64, n_val=16, n_test=16, seed=1, num_classes=2)
    model = backend.build("resnet18", width=0.0625, seed=0, num_classes=2, head=specs.Head(8))
    before = backend.export_state(model)
    backend.train(model, cifar, replace(SMOKE_T.recipe, epochs=1), 0, label="frozen", frozen_backbone=True)
    after = backend.export_state(model)
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    # BN running statistics are backbone state too: inference mode while frozen, in both suites
    assert changed == {"head_fc.weight", "head_fc.bias", "fc.weight", "fc.bias"}
    backend.train(model, cifar, replace(SMOKE_T.recipe, epochs=1), 0, label="all")  # then everything trains
    again = backend.export_state(model)
    assert not np.array_equal(again["stem.conv.weight"], after["stem.conv.weight"])
    assert not np.array_equal(again["stem.bn.running_mean"], after["stem.bn.running_mean"])


def test_a_frozen_backbone_trains_only_the_head_pytorch(pt_backend):
    _frozen_train_changes_only_the_head(pt_backend)


def test_a_frozen_backbone_trains_only_the_head_keras(tf_backend):
    _frozen_train_changes_only_the_head(tf_backend)


# --------------------------------------------------------------------------------------------- smoke runs

def _smoke(backend, out_dir, techniques=None, preset=SMOKE_T):
    rows = run_suite(backend, preset, out_dir, techniques=techniques, log=lambda m: None)
    assert {r["cell_id"]: r["error"] for r in rows if r["status"] != "ok"} == {}
    return {r["technique"] + json.dumps(r["settings"], sort_keys=True): r for r in rows}


@pytest.fixture(scope="module")
def pt_transfer(pt_backend, tmp_path_factory):
    out = tmp_path_factory.mktemp("transfer_pytorch")
    return out, _smoke(pt_backend, out)


def test_the_transfer_family_runs_in_smoke_pytorch(pt_transfer):
    out, rows = pt_transfer
    assert len(rows) == 9  # every planned cell once, none failed
    base, scratch, linear = rows["baseline{}"], rows['transfer{"init": "scratch"}'], rows['transfer{"head": "linear"}']
    assert base["head"] == "dropout" and base["init"] == "pretrained" and linear["head"] == "linear"
    assert base["pretrain_classes"] == list(PROTOCOL.source_classes)
    assert base["pretrain_images"] == int(np.isin(data_mod.synthetic(512, 128, 256, 0).train.y,
                                                 PROTOCOL.source_classes).sum())
    phases = base["phases"]
    assert [phases["head"]["backbone_frozen"], phases["finetune"]["backbone_frozen"]] == [True, False]
    # the two phases together take the epochs that training from scratch takes; the fine-tune at LR / 10
    assert phases["head"]["budget"]["epochs"] + phases["finetune"]["budget"]["epochs"] == scratch["budget"]["epochs"]
    assert phases["finetune"]["budget"]["peak_lr"] == pytest.approx(phases["head"]["budget"]["peak_lr"] / 10)
    assert scratch["init"] == "scratch" and "pretrained_from" not in scratch
    # the linear head's model is smaller than the baseline's by exactly the custom head's extra parameters
    # (fc's 32 inputs at width 0.0625 -> hidden 16 -> 2, against 32 -> 2)
    assert base["params_total"] - linear["params_total"] == (32 * 16 + 16) + (16 * 2 + 2) - (32 * 2 + 2)
    for r in rows.values():
        assert r["artifact"]["num_classes"] == 2
    assert rows['transfer{"head": "linear"}']["artifact"]["head"] is None
    assert rows["int8_static" + json.dumps({"calibration_images": 16, "observer": "minmax"})]["artifact"]["head"] == {
        "hidden": 16, "dropout": 0.5}


def test_the_artifacts_of_a_transfer_run_reload_with_their_heads(pt_transfer):
    import torch

    from pytorch_impl import artifacts

    out, rows = pt_transfer
    for key in ("baseline{}", 'transfer{"head": "linear"}', 'filter_uniform{"ratio": 0.5}'):
        sidecar = json.loads((out / "artifacts" / f"{rows[key]['cell_id']}.json").read_text())
        model = artifacts.load(sidecar, out / "artifacts")
        assert model(torch.zeros(3, 3, 32, 32)).shape == (3, 2)


def test_a_pretrained_file_replaces_the_pretraining(pt_backend, pt_transfer, tmp_path):
    out, _ = pt_transfer
    ckpt = next((out / "checkpoints").glob("pytorch__resnet18__pretrained__*.safetensors"))
    preset = with_overrides(SMOKE_T, pretrained=ckpt)
    rows = _smoke(pt_backend, tmp_path, techniques=["baseline"], preset=preset)
    assert rows["baseline{}"]["pretrained_from"] == str(ckpt)
    assert not list((tmp_path / "checkpoints").glob("*pretrained*"))  # nothing pretrained here


def test_the_report_has_the_transfer_table(pt_transfer):
    from shared.report import write_report

    out, _ = pt_transfer
    text = Path(write_report(out)).read_text()
    section = text.split("## Transfer learning", 1)[1].split("\n## ", 1)[0]
    names = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")][1:]
    assert names == ["from scratch (same network, same images, same epochs)", "transferred, linear head",
                     "transferred, custom head + dropout (the baseline)", "then int8 dynamic", "then int8 static",
                     "then int8 static", "then int8 QAT", "then filter-pruned", "then filter-pruned"]
    assert "Backbone: pretrained here on 410 images of the source classes" in section


def test_the_transfer_family_runs_in_smoke_keras(tf_backend, tmp_path, monkeypatch):
    # the family's own cells (the compression cells are the registry's, run on Keras in test_registry)
    # The suite's restart bound is for a suite's own process; pytest's holds every earlier test's models
    # (5.7 GiB measured in CI), so the bound would stop this run between cells, which test_runner covers.
    monkeypatch.setenv(runner.RESTART_ABOVE_ENV, "0")
    rows = _smoke(tf_backend, tmp_path, techniques=["baseline", "transfer", "int8_static"])
    assert len(rows) == 5
    base, linear = rows["baseline{}"], rows['transfer{"head": "linear"}']
    assert [base["phases"]["head"]["backbone_frozen"], base["phases"]["finetune"]["backbone_frozen"]] == [True, False]
    assert base["params_total"] - linear["params_total"] == (32 * 16 + 16) + (16 * 2 + 2) - (32 * 2 + 2)
    assert rows["int8_static" + json.dumps({"calibration_images": 16, "observer": "minmax"})]["artifact"][
        "num_classes"] == 2


# ------------------------------------------------------------------------------------- --pretrained files

def test_pretrained_files_of_every_kind(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        published.read_pretrained(tmp_path / "absent.safetensors", "resnet18")
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown kind of file"):
        published.read_pretrained(odd, "resnet18")
    pth = tmp_path / "resnet50.pth"
    pth.write_bytes(b"x")
    with pytest.raises(published.IncompatibleWeights,
                       match="python -m pytorch_impl import-weights --arch resnet50"):
        published.read_pretrained(pth, "resnet50")  # the Keras suite: no torch reader
    h5 = tmp_path / "vgg16.h5"
    h5.write_bytes(b"x")
    with pytest.raises(published.IncompatibleWeights, match="import into vgg16_imagenet only"):
        published.read_pretrained(h5, "resnet18")
    st = tmp_path / "own.safetensors"
    neutral.save({"w": np.arange(3, dtype=np.float32)}, st)
    np.testing.assert_array_equal(published.read_pretrained(st, "resnet18")["w"], [0, 1, 2])


def test_import_weights_converts_a_torchvision_file_for_either_suite(tmp_path):
    import torch
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None, num_classes=5)
    torch.save(tv.state_dict(), tmp_path / "r50.pth")
    target = tmp_path / "r50.safetensors"
    proc = subprocess.run([sys.executable, "-m", "pytorch_impl", "import-weights", "--arch", "resnet50",
                           str(tmp_path / "r50.pth"), str(target)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    state = neutral.load(target)
    from pytorch_impl.backend import TorchBackend

    direct = published.read_pretrained(tmp_path / "r50.pth", "resnet50", TorchBackend.read_torch_file)
    assert set(state) == set(direct) and all(np.array_equal(state[k], direct[k]) for k in state)
    np.testing.assert_array_equal(state["fc.weight"], tv.fc.weight.detach().numpy())


def test_a_missing_pretrained_file_is_refused_before_any_work(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "pytorch_impl", "run", "--preset", "smoke_transfer", "--out",
                           str(out), "--pretrained", str(tmp_path / "nope.safetensors")], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--pretrained" in proc.stderr and "no such file" in proc.stderr
    assert not out.exists()
