"""Resume inside a long training: a baseline SIGKILLed after epoch k of n resumes at k and ends with the
weights of an uninterrupted run (bit for bit on this CPU: the data order is a function of the seed and the
epoch, every variable and optimizer buffer is restored exactly, and no layer draws random numbers)."""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from shared import resume, state as neutral
from shared.presets import fingerprint, get_preset
from shared.results import cell_id

ROOT = Path(__file__).resolve().parent.parent
SMOKE = get_preset("smoke")  # two epochs: a kill after epoch 1 leaves one to resume


def _suite(package, out, env=None):
    cmd = [sys.executable, "-m", package, "run", "--preset", "smoke", "--technique", "baseline",
           "--arch", "resnet18", "--out", str(out)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def _killed_then_resumed(package, framework, tmp_path):
    cid = cell_id(framework, "resnet18", "baseline", {}, 0, fingerprint(SMOKE))
    out = tmp_path / "interrupted"
    killed = _suite(package, out, {resume.KILL_AFTER_EPOCH_ENV: "1"})
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL: no handler, no cleanup ran
    partial = out / "checkpoints" / "partial" / cid
    record = json.loads((partial / "t1.json").read_text())
    assert record["epochs_done"] == 1 and len(record["history"]) == 1
    assert not (out / "rows" / f"{cid}.json").exists()  # the cell is unfinished

    resumed = _suite(package, out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = resumed.stdout + resumed.stderr
    assert "resuming after epoch 1" in log and "epoch 1/2" not in log and "epoch 2/2" in log
    row = json.loads((out / "rows" / f"{cid}.json").read_text())
    assert [h["epoch"] for h in row["history"]] == [1, 2]
    assert row["history"][0] == record["history"][0]  # the first epoch's record is carried, not redone
    assert not partial.exists()  # the finished row clears the cell's epoch checkpoints

    straight = _suite(package, tmp_path / "uninterrupted")
    assert straight.returncode == 0, straight.stderr[-2000:]
    name = f"{framework}__resnet18__baseline__{fingerprint(SMOKE)}__s0.safetensors"
    a = neutral.load(out / "checkpoints" / name)
    b = neutral.load(tmp_path / "uninterrupted" / "checkpoints" / name)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run's"


def test_pytorch_baseline_killed_after_epoch_1_resumes_with_identical_weights(tmp_path):
    _killed_then_resumed("pytorch_impl", "pytorch", tmp_path)


@pytest.mark.slow
def test_keras_baseline_killed_after_epoch_1_resumes_with_identical_weights(tmp_path):
    _killed_then_resumed("tensorflow_impl", "keras", tmp_path)


class _Interrupt(Exception):
    pass


def test_gradual_pruning_resumed_mid_ramp_keeps_its_masks_and_matches(pt_backend, pt_smoke_ctx, tmp_path):
    """A fine-tune whose hook raises masks: the masks and schedule so far come back with the weights."""
    from shared.drivers.common import load_baseline
    from shared.drivers.unstructured import GradualPruning
    from shared.runner import Cell

    ctx = pt_smoke_ctx
    cell = Cell("pytorch", "resnet18", "prune_gradual", 0)
    protocol = replace(ctx.preset.protocol, gradual_every=3)
    recipe = replace(ctx.preset.recipe, epochs=2, lr=0.01)  # 16 steps, masks raised at 0, 3, 6, 9 and 12

    def run(checkpoints, stop_at=None):
        model = load_baseline(pt_backend, ctx, cell)
        hook = GradualPruning(pt_backend, model, 0.8, protocol, "global")

        def on_step(step, total):
            if step == stop_at:
                raise _Interrupt
            hook(step, total)

        on_step.state, on_step.restore = hook.state, hook.restore
        stats = pt_backend.train(model, ctx.dataset, recipe, 0, label="[gradual]", on_step=on_step,
                                 checkpoints=checkpoints)
        return model, hook, stats

    directory = tmp_path / "partial"
    with pytest.raises(_Interrupt):
        run(resume.CellCheckpoints(directory), stop_at=10)  # epoch 2 of 2, after two of its mask updates
    record = json.loads((directory / "t1.json").read_text())
    assert record["epochs_done"] == 1 and [s["step"] for s in record["hook"]["schedule"]] == [0, 3, 6]
    logged = []
    model, hook, stats = run(resume.CellCheckpoints(directory, logged.append))
    assert any("resuming after epoch 1" in line for line in logged)
    ref_model, ref_hook, ref_stats = run(None)
    assert hook.schedule == ref_hook.schedule and len(hook.schedule) == 5
    assert all(np.array_equal(hook.masks[k], ref_hook.masks[k]) for k in ref_hook.masks)
    a, b = pt_backend.export_state(model), pt_backend.export_state(ref_model)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert [h["epoch"] for h in stats["history"]] == [1, 2]


def _checkpoint(tmp_path, log=None, **sig):
    sig = {"recipe": {"lr": 0.1}, "seed": 0, "total_steps": 4, "n_train": 8, "label": "[t]", **sig}
    return resume.TrainingCheckpoint(tmp_path, 1, sig, log or (lambda _: None))


def _record(history=()):
    return {"history": list(history), "train_time_s": 1.5, "hook": {}}


def test_the_json_record_is_the_commit_point(tmp_path):
    ck = _checkpoint(tmp_path)
    ck.save(1, {"w": np.arange(3, dtype=np.float32), "step": np.asarray(7, np.int64)}, _record([{"epoch": 1}]))
    epochs, arrays, record = ck.load()
    assert epochs == 1 and arrays["step"].shape == () and int(arrays["step"]) == 7  # 0-d stays 0-d
    # a crash after epoch 2's arrays were renamed in but before its record: epoch 1 is still what loads
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "t1.e2.safetensors"))
    epochs, arrays, _ = ck.load()
    assert epochs == 1 and arrays["w"].tolist() == [0.0, 1.0, 2.0]
    ck.save(2, {"w": np.ones(3, np.float32)}, _record())
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["t1.e2.safetensors"]  # older epochs go


def test_a_checkpoint_of_another_training_or_a_torn_one_starts_afresh_with_a_warning(tmp_path):
    _checkpoint(tmp_path).save(1, {"w": np.ones(2, np.float32)}, _record())
    logged = []
    assert _checkpoint(tmp_path, logged.append, seed=1).load() is None
    assert "belongs to another training" in logged[-1]
    (tmp_path / "t1.e1.safetensors").write_bytes(b"garbage")
    assert _checkpoint(tmp_path, logged.append).load() is None
    assert "unreadable" in logged[-1] and "training from the start" in logged[-1]


def test_single_epoch_trainings_write_no_epoch_checkpoints(tmp_path):
    cells = resume.CellCheckpoints(tmp_path / "p")
    resumed = resume.begin(cells, recipe=SMOKE.recipe, seed=0, total_steps=8, epochs=1, n_train=512, label="x")
    resumed.commit(1, lambda: {"w": np.ones(1, np.float32)}, [], 0.0)
    assert resumed.epoch == 0 and not (tmp_path / "p").exists() and cells.calls == 0
