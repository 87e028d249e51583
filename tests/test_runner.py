"""Runs write one atomic row per cell, skip finished cells, and resume after a crash or a kill.

``run_suite(backend, ...)`` calls the one driver registry (``shared.drivers.REGISTRY``) with the suite's
backend; the fakes here replace its drivers and pass a backend that only has a name."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import numpy as np

from dataclasses import replace

from shared import drivers, results, state as neutral
from shared.presets import get_preset
from shared.runner import Cell, plan_cells, run_suite
from shared.techniques import TECHNIQUES

ROOT = Path(__file__).resolve().parent.parent


class FakeBackend:
    name = "fake"

    def end_cell(self):
        pass


FAKE = FakeBackend()


# the runner's behaviour on two architectures (the smoke preset runs four; architecture counts are not the point)
SMOKE = replace(get_preset("smoke"), archs=("vgg16", "resnet18"))


@pytest.fixture
def use_drivers(monkeypatch):
    """Replace every driver of the shared registry for one test (restored afterwards)."""

    def install(driver):
        for t in TECHNIQUES:
            monkeypatch.setitem(drivers.REGISTRY, t, driver)

    return install


def fake_driver(calls, crash_on=None):
    def baseline(backend, ctx, cell):
        assert backend is FAKE and ctx.out_dir and cell.framework == "fake"
        if cell.arch == crash_on:
            raise KeyboardInterrupt  # a kill, not an error: nothing may be recorded for this cell
        calls.append(cell.arch)
        # a baseline leaves its checkpoint for later cells; a rerun checks it is still readable
        neutral.save({"w": np.zeros(2, np.float32)}, ctx.checkpoint_path(cell.framework, cell.arch, cell.seed))
        return {"test_acc": 0.5}

    return baseline


ONLY_BASELINE = {"techniques": ("baseline",)}


def test_interrupted_run_resumes_without_redoing_or_duplicating(tmp_path, use_drivers):
    preset = SMOKE
    calls = []
    use_drivers(fake_driver(calls, crash_on="resnet18"))
    with pytest.raises(KeyboardInterrupt):
        run_suite(FAKE, preset, tmp_path, **ONLY_BASELINE)
    assert calls == ["vgg16"]
    first = results.row_path(tmp_path, plan_cells("fake", preset)[0].id)
    stamp = first.stat().st_mtime_ns
    use_drivers(fake_driver(calls))
    rows = run_suite(FAKE, preset, tmp_path, **ONLY_BASELINE)
    assert calls == ["vgg16", "resnet18"] and [r["arch"] for r in rows] == ["resnet18"]
    assert first.stat().st_mtime_ns == stamp  # the finished cell was not rewritten
    all_rows = results.read_rows(tmp_path)
    assert sorted(r["arch"] for r in all_rows) == ["resnet18", "vgg16"]
    assert len({r["cell_id"] for r in all_rows}) == 2
    assert run_suite(FAKE, preset, tmp_path, **ONLY_BASELINE) == []


def test_failed_cell_is_recorded_and_retried(tmp_path, use_drivers):
    def broken(backend, ctx, cell):
        raise ValueError("boom")

    use_drivers(broken)
    rows = run_suite(FAKE, SMOKE, tmp_path, archs=("vgg16",), **ONLY_BASELINE)
    assert len(rows) == 1 and rows[0]["status"] == "failed" and "ValueError: boom" in rows[0]["error"]
    assert results.read_rows(tmp_path)[0]["status"] == "failed"
    calls = []
    use_drivers(fake_driver(calls))
    rows = run_suite(FAKE, SMOKE, tmp_path, archs=("vgg16",), **ONLY_BASELINE)
    assert calls == ["vgg16"] and len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["error"] is None


def test_a_driver_that_is_not_implemented_is_marked_missing_not_failed(tmp_path, use_drivers):
    def missing(backend, ctx, cell):
        raise NotImplementedError("not yet")

    use_drivers(missing)
    (row,) = run_suite(FAKE, SMOKE, tmp_path, archs=("vgg16",), **ONLY_BASELINE)
    assert (row["status"], row["error"]) == ("not_implemented", "not yet")


def test_rows_carry_typed_config_and_environment(tmp_path, use_drivers):
    use_drivers(fake_driver([]))
    rows = run_suite(FAKE, SMOKE, tmp_path, archs=("vgg16",),
                     environment=lambda: {"git_commit": "abc"}, command="python -m fake run", **ONLY_BASELINE)
    on_disk = json.loads(results.row_path(tmp_path, rows[0]["cell_id"]).read_text())
    assert on_disk["config"]["__type__"] == "Preset" and on_disk["config"]["name"] == "smoke"
    assert on_disk["env"] == {"git_commit": "abc"} and on_disk["command"] == "python -m fake run"
    assert (on_disk["framework"], on_disk["arch"], on_disk["technique"], on_disk["test_acc"]) == (
        "fake", "vgg16", "baseline", 0.5)


def test_cells_run_in_the_shared_order_with_the_registry_of_every_key(tmp_path, use_drivers):
    """One registry for every suite: run_suite dispatches each cell to the driver of its key, baseline first."""
    seen = []

    def record(backend, ctx, cell):
        seen.append((cell.arch, cell.technique, cell.settings))
        return {}

    use_drivers(record)
    preset = SMOKE
    rows = run_suite(FAKE, preset, tmp_path, archs=("resnet18",))
    planned = plan_cells("fake", preset, archs=("resnet18",))
    assert seen == [(c.arch, c.technique, c.settings) for c in planned]
    assert [r["cell_id"] for r in rows] == [c.id for c in planned]
    assert seen[0][1] == "baseline"
    # pruned-A is VGG-16's alone; transfer runs in the transfer presets (a new head on a pretrained backbone)
    assert {t for _, t, _ in seen} == set(TECHNIQUES) - {"filter_li_a", "transfer"}
    assert all(r["status"] == "ok" for r in rows)


def test_cell_ids_are_stable_and_settings_sensitive():
    a = Cell("pytorch", "vgg16", "baseline", 0, {"sparsity": 0.5})
    assert a.id == Cell("pytorch", "vgg16", "baseline", 0, {"sparsity": 0.5}).id
    assert a.id != Cell("pytorch", "vgg16", "baseline", 0, {"sparsity": 0.7}).id
    assert a.id.startswith("pytorch__vgg16__baseline__") and a.id.endswith("__s0")


def test_temp_files_of_a_killed_writer_are_ignored(tmp_path):
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / ".x.json.123.tmp").write_text('{"trunc')
    assert results.read_rows(tmp_path) == []


def test_killed_pytorch_run_resumes(tmp_path):
    """SIGKILL a real smoke run after its first row; the rerun finishes the rest and keeps that row."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pytorch_impl", "run", "--preset", "smoke", "--out", str(out), "--technique", "baseline",
           "--arch", "vgg16", "--arch", "resnet18"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "rows").glob("*.json")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = [p.name for p in (out / "rows").glob("*.json")]
    assert len(done) >= 1
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "rows").glob("*.json")}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("skip") == len(done)
    rows = results.read_rows(out)
    assert sorted((r["arch"], r["technique"]) for r in rows) == [("resnet18", "baseline"), ("vgg16", "baseline")]
    assert all(r["status"] == "ok" for r in rows)
    assert {n: (out / "rows" / n).stat().st_mtime_ns for n in done} == {n: stamps[n] for n in done}


# ---- configuration fingerprints: a run never reuses another configuration's rows or checkpoints ----------

def test_fingerprint_tracks_what_changes_a_result_and_ignores_which_cells_run():
    from dataclasses import replace

    from shared.presets import fingerprint

    smoke = SMOKE
    assert fingerprint(smoke) == fingerprint(SMOKE) and len(fingerprint(smoke)) == 8
    assert fingerprint(replace(smoke, seeds=(0, 1, 2))) == fingerprint(smoke)  # more seeds: same cells reused
    assert fingerprint(replace(smoke, archs=("vgg16",))) == fingerprint(smoke)
    changed = [replace(smoke, width=0.125), replace(smoke, recipe=replace(smoke.recipe, lr=0.01)),
               replace(smoke, protocol=replace(smoke.protocol, sparsities=(0.5,))),
               replace(smoke, measure=replace(smoke.measure, repeats=5)), replace(smoke, val_size=10),
               replace(smoke, name="other")]
    assert len({fingerprint(p) for p in changed} | {fingerprint(smoke)}) == len(changed) + 1


def test_quick_over_a_smoke_directory_reuses_nothing(tmp_path, use_drivers):
    """The stale-cache bug: a quick run on a directory of smoke rows skipped the quick baseline as done."""
    from shared.runner import RunContext

    smoke, quick = SMOKE, get_preset("quick")
    use_drivers(fake_driver([]))
    run_suite(FAKE, smoke, tmp_path, **ONLY_BASELINE)
    calls = []
    use_drivers(fake_driver(calls))
    rows = run_suite(FAKE, quick, tmp_path, **ONLY_BASELINE)
    assert calls == list(quick.archs) and all(r["status"] == "ok" for r in rows)  # nothing skipped
    assert len(results.read_rows(tmp_path)) == len(smoke.archs) + len(quick.archs)
    smoke_ids = {c.id for c in plan_cells("pytorch", smoke)}
    assert not smoke_ids & {c.id for c in plan_cells("pytorch", quick)}
    a, b = (RunContext(preset=p, out_dir=tmp_path).checkpoint_path("pytorch", "vgg16", 0) for p in (smoke, quick))
    assert a != b and a.parent == b.parent


def test_cell_ids_carry_the_fingerprint():
    from shared.presets import fingerprint

    (cell,) = [c for c in plan_cells("pytorch", SMOKE, techniques=("baseline",)) if c.arch == "vgg16"]
    assert cell.fingerprint == fingerprint(SMOKE)
    assert cell.id.endswith(f"__{cell.fingerprint}__s0")
    with pytest.raises(ValueError, match="fingerprint"):
        results.cell_id("pytorch", "vgg16", "baseline", {}, 0, "")


def test_duplicate_rows_of_one_cell_are_found(tmp_path, use_drivers):
    use_drivers(fake_driver([]))
    run_suite(FAKE, SMOKE, tmp_path / "a", **ONLY_BASELINE)
    import shutil

    shutil.copytree(tmp_path / "a", tmp_path / "b")
    dups = results.duplicate_rows(tmp_path)
    assert len(dups) == 2 and all(len(p) == 2 for p in dups.values())
    assert results.duplicate_rows(tmp_path / "a") == {}


# ---- corrupt files never stop a study ----------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", b'{"cell_id": "x", "stat', b"\x00\xffgarbage", b"[1, 2]"])
def test_a_corrupt_row_is_moved_aside_and_its_cell_rerun(tmp_path, use_drivers, content):
    from shared.report import write_report

    preset = SMOKE
    calls = []
    use_drivers(fake_driver(calls))
    run_suite(FAKE, preset, tmp_path, **ONLY_BASELINE)
    bad = results.row_path(tmp_path, plan_cells("fake", preset, techniques=("baseline",))[0].id)
    bad.write_bytes(content)
    with pytest.warns(results.CorruptRowWarning, match=rf"unreadable row {bad}.*moved to .*corrupt"):
        md = write_report(tmp_path).read_text()  # the report survives it
    assert (bad.parent / "corrupt" / bad.name).read_bytes() == content  # kept, not deleted
    assert f"unreadable row file `{bad.parent / 'corrupt' / bad.name}`" in md
    rows = run_suite(FAKE, preset, tmp_path, **ONLY_BASELINE)  # the rerun redoes that cell only
    assert [r["cell_id"] for r in rows] == [bad.stem] and calls == ["vgg16", "resnet18", "vgg16"]
    assert json.loads(bad.read_text())["status"] == "ok"


def test_an_unreadable_checkpoint_is_moved_aside_and_its_baseline_retrained(tmp_path, use_drivers):
    from shared.runner import RunContext

    preset = SMOKE
    calls, logs = [], []
    use_drivers(fake_driver(calls))
    run_suite(FAKE, preset, tmp_path, **ONLY_BASELINE)
    ckpt = RunContext(preset=preset, out_dir=tmp_path).checkpoint_path("fake", "resnet18", 0)
    ckpt.write_bytes(ckpt.read_bytes()[:20])  # truncated
    rows = run_suite(FAKE, preset, tmp_path, log=logs.append, **ONLY_BASELINE)
    assert [r["arch"] for r in rows] == ["resnet18"] and calls[-1] == "resnet18"
    assert any(f"checkpoint {ckpt} is unreadable: moved to" in line for line in logs)
    assert (ckpt.parent / "corrupt" / ckpt.name).stat().st_size == 20 and neutral.readable(ckpt)


def test_cell_lines_show_the_counter_the_settings_and_an_eta(tmp_path, use_drivers):
    from shared.runner import cell_label

    lines = []
    use_drivers(fake_driver([]))
    run_suite(FAKE, SMOKE, tmp_path, archs=("vgg16",), techniques=("baseline", "int8_static"),
              log=lines.append)
    assert lines[0] == "[fake] [1/5] vgg16/baseline s0: run"
    assert lines[1].startswith("[fake] [2/5] vgg16/int8_static (calibration_images=32, observer=minmax) s0: run (ETA ")
    run_suite(FAKE, SMOKE, tmp_path, archs=("vgg16",), techniques=("baseline",), log=lines.append)
    assert lines[-1] == "[fake] [1/1] vgg16/baseline s0: skip, already done"
    assert cell_label(Cell("keras", "resnet18", "fixed_point", 1, {"bits": 4})) == "resnet18/fixed_point (bits=4) s1"


def test_a_process_past_its_memory_bound_stops_between_cells_and_only_while_work_remains(
        tmp_path, use_drivers, monkeypatch):
    from shared import runner

    preset = SMOKE
    calls = []
    use_drivers(fake_driver(calls))
    monkeypatch.setattr(runner, "process_rss_mib", lambda: 5000.0)
    monkeypatch.setattr(FakeBackend, "restart_above_mib", 4096, raising=False)
    with pytest.raises(runner.RestartForMemory, match="process at 5000 MiB, above its 4096 MiB bound") as exc:
        run_suite(FAKE, preset, tmp_path, **ONLY_BASELINE)
    assert calls == ["vgg16"] and [r["arch"] for r in exc.value.rows] == ["vgg16"]
    assert results.finished(tmp_path, exc.value.rows[0]["cell_id"])  # its row was written first
    # the restarted process runs the last cell and, with nothing left to do, returns normally
    assert [r["arch"] for r in run_suite(FAKE, preset, tmp_path, **ONLY_BASELINE)] == ["resnet18"]
    assert calls == ["vgg16", "resnet18"]
    monkeypatch.setenv(runner.RESTART_ABOVE_ENV, "0")  # 0 turns the bound off
    assert runner.restart_bound(FAKE) == 0.0
    monkeypatch.setenv(runner.RESTART_ABOVE_ENV, "lots")
    with pytest.raises(ValueError, match="CNN_STUDY_RESTART_ABOVE_MIB='lots' is not a number of MiB"):
        runner.restart_bound(FAKE)


def test_seed_overrides_add_cells_to_the_same_configuration_and_travel_to_the_suites(monkeypatch, tmp_path):
    import argparse

    from shared import cli
    from shared.presets import fingerprint, get_preset, with_overrides

    quick = get_preset("quick")
    more = with_overrides(quick, seeds=[2, 1, 2])
    assert more.seeds == (1, 2) and fingerprint(more) == fingerprint(quick)  # the same cells, other seeds
    assert {c.seed for c in plan_cells("pytorch", more, ("baseline",), ("resnet18",))} == {1, 2}
    with pytest.raises(ValueError, match="--seed -1: give non-negative integers"):
        with_overrides(quick, seeds=[-1])
    sent = []
    monkeypatch.setattr(cli, "call_child", lambda cmd: sent.append(cmd) or 2)  # refused: stops after the first
    args = argparse.Namespace(command="run", preset="quick", out=tmp_path, data_dir=None, arch=None, technique=None,
                              controlled=False, data=None, pretrained=None, width=None, verbose=False,
                              framework=None, executor="local", seed=[1, 2])
    assert cli.run_all(args, "cmd") == 2
    assert sent[0][-4:] == ["--seed", "1", "--seed", "2"]
