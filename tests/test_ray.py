"""The Ray executor (shared.ray_executor) on a real local Ray cluster: the smoke study's cells through
`python -m shared run --executor ray` give the local executor's cell ids, statuses and (PyTorch, same
threads) metrics; a worker killed mid-cell is retried and leaves one whole row; controlled Keras cells start
after the PyTorch baseline; no worker loads both frameworks. The DAG and the driver's rules as units."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared import ray_executor as rx
from shared.presets import get_preset
from shared.results import read_rows

ROOT = Path(__file__).resolve().parent.parent
SMOKE = get_preset("smoke")
TECHNIQUES = ("baseline", "prune_global")
ARCH = "cnn"


# ------------------------------------------------------------------------------------------ the DAG

def test_every_cell_waits_for_its_baseline_the_kd_pipeline_for_kd_and_controlled_keras_for_pytorch():
    tasks = rx.plan_tasks(SMOKE, ["pytorch", "keras"], ["baseline", "prune_global", "kd", "pipeline_kd_filter_int8"],
                          [ARCH], controlled=True)
    by_id = {t.cell.id: t for t in tasks}
    base = {(t.cell.framework, t.controlled): t.cell.id for t in tasks if t.cell.technique == "baseline"}
    assert set(base) == {("pytorch", False), ("keras", True)}  # the Keras suite's cells are all controlled
    assert by_id[base[("pytorch", False)]].depends == []
    assert by_id[base[("keras", True)]].depends == [base[("pytorch", False)]]
    kd = {t.cell.framework: t.cell.id for t in tasks if t.cell.technique == "kd"}
    for t in tasks:
        if t.cell.technique == "prune_global":
            assert t.depends == [base[(t.cell.framework, t.controlled)]]
        if t.cell.technique == "pipeline_kd_filter_int8":
            assert t.depends == [base[(t.cell.framework, t.controlled)], kd[t.cell.framework]]


def test_baselines_go_first_then_the_longest_cells():
    tasks = rx.plan_tasks(SMOKE, ["pytorch"], ["baseline", "prune_global", "kd"], ["cnn", "vgg16"])
    for t, cost in zip(tasks, [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 4.0, 8.0]):
        t.cost = cost
    ordered = rx.order(tasks)
    assert [t.cell.technique for t in ordered[:2]] == ["baseline", "baseline"]
    assert [t.cost for t in ordered[2:]] == sorted((t.cost for t in ordered[2:]), reverse=True)


def test_the_cost_model_ranks_a_vgg16_cell_above_the_same_cell_on_cnn():
    tasks = rx.plan_tasks(SMOKE, ["pytorch"], ["baseline", "prune_global"], ["cnn", "vgg16"])
    rx.costs(SMOKE, tasks, log=print)
    cost = {(t.cell.arch, t.cell.technique, json.dumps(t.cell.settings)): t.cost for t in tasks}
    assert all(c > 0 for c in cost.values())
    for (arch, tech, s), c in cost.items():
        if arch == "cnn":
            assert cost[("vgg16", tech, s)] > 3 * c  # 313.5 M vs 7.7 M MACs at width 1


def test_a_result_from_a_process_that_loaded_both_frameworks_is_refused(tmp_path):
    result = {"loaded": ["keras", "pytorch"], "pid": 7, "files": {"artifacts/x.pt": b"x"}, "row": {"cell_id": "c"}}
    with pytest.raises(RuntimeError, match="worker \\(pid 7\\) loaded both keras and pytorch: its row is not kept"):
        rx.keep(tmp_path, result)
    assert not any(tmp_path.iterdir())  # nothing of it written


# ------------------------------------------------------------------------------- a real local cluster

# ~2 min (a Ray cluster, 6 cells each in a fresh process, the same 6 on the local executor): `make test-all`
CLUSTER = pytest.mark.slow

def _cli(out: Path, *extra, env=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "shared", "run", "--preset", "smoke", "--out", str(out), "--arch", ARCH,
           *[a for t in TECHNIQUES for a in ("--technique", t)], "--controlled", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled", **(env or {})})


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ray") / "run"
    plan = rx.plan_tasks(SMOKE, ["pytorch", "keras"], TECHNIQUES, [ARCH], controlled=True)
    victim = next(t.cell.id for t in plan if t.cell.framework == "keras" and t.cell.technique == "prune_global")
    marker = out.parent / f"die-{victim}"
    # 2 CPUs per cell: the local suites' threads (torch's default on 2 cores, TensorFlow's protocol 2), so the
    # two executors train alike and their metrics can be compared exactly
    proc = _cli(out, "--executor", "ray", "--cpus-per-cell", "2", "--retries", "1",
                env={rx.DIE_ONCE_ENV: str(marker)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, plan, victim, marker, proc


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, ray_run):
    out = tmp_path_factory.mktemp("local") / "run"
    proc = _cli(out)  # the same command with the default executor: one process per suite
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _rows(out):
    return {r["cell_id"]: r for r in read_rows(out)}


@CLUSTER
def test_ray_gives_the_local_executors_cells_statuses_and_metrics(ray_run, local_run):
    ray_rows, local_rows = _rows(ray_run[0]), _rows(local_run)
    assert set(ray_rows) == set(local_rows) == {t.cell.id for t in ray_run[1]}
    assert {c: r["status"] for c, r in ray_rows.items()} == {c: r["status"] for c, r in local_rows.items()}
    assert all(r["status"] == "ok" for r in ray_rows.values())
    keys = ("params_total", "params_nonzero", "macs", "size_bytes", "val_acc", "test_acc")
    for cid, r in ray_rows.items():
        assert r["executor"]["name"] == "ray" and r["env"]["threads"] == 2
        assert {k: r[k] for k in keys} == {k: local_rows[cid][k] for k in keys}, cid
        assert (ray_run[0] / "artifacts" / f"{cid}.json").exists()


@CLUSTER
def test_a_worker_killed_mid_cell_is_retried_and_leaves_one_whole_row(ray_run):
    out, _, victim, marker, proc = ray_run
    assert marker.exists()  # the first worker of that cell killed itself (SIGKILL) after the cell began
    killed = int(marker.read_text())
    row = _rows(out)[victim]
    assert row["status"] == "ok" and row["executor"]["pid"] != killed
    assert sorted(p.name for p in (out / "rows").iterdir()) == sorted(f"{c}.json" for c in _rows(out))
    assert not list(out.rglob(".tmp-*")) and not list(out.rglob("*.tmp"))
    assert not (out / "rows" / "corrupt").exists()


@CLUSTER
def test_controlled_keras_cells_start_after_the_pytorch_baseline_and_no_worker_loads_both(ray_run):
    rows = _rows(ray_run[0])
    (pt_base,) = [r for r in rows.values() if r["framework"] == "pytorch" and r["technique"] == "baseline"]
    keras = [r for r in rows.values() if r["framework"] == "keras"]
    assert keras and all(r["settings"].get("controlled") for r in keras)
    assert all(r["executor"]["started"] >= pt_base["executor"]["ended"] for r in keras)
    for r in rows.values():
        assert r["executor"]["loaded"] == [r["framework"]]
    assert len({r["executor"]["pid"] for r in rows.values()}) == len(rows)  # a fresh process per cell


@CLUSTER
def test_a_rerun_on_ray_skips_every_finished_cell(ray_run):
    out = ray_run[0]
    before = {p.name: p.stat().st_mtime_ns for p in (out / "rows").iterdir()}
    proc = _cli(out, "--executor", "ray")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[ray] all 6 cells already done" in proc.stdout + proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "rows").iterdir()} == before
