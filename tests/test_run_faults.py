"""Runs a user can trust: one writer per results directory, and Ctrl-C that leaves no orphan behind."""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.lock import LOCK_NAME, LockedError, RunLock

ROOT = Path(__file__).resolve().parent.parent


def _holder(out: Path) -> subprocess.Popen:
    """Another live process holding ``out``'s lock."""
    code = ("import sys, time\nfrom shared.lock import RunLock\nRunLock(sys.argv[1], 'holder cmd').acquire()\n"
            "print('locked', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_on_the_same_out_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    holder = _holder(out)
    try:
        res = subprocess.run([sys.executable, "-m", "pytorch_impl", "run", "--preset", "smoke", "--out", str(out),
                              "--technique", "baseline"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2
        assert f"is in use by another run: pid {holder.pid} on {socket.gethostname()}" in res.stderr
        assert "holder cmd" in res.stderr and "another --out" in res.stderr
        assert not (out / "rows").exists()  # nothing done, nothing written
        with pytest.raises(LockedError, match=f"pid {holder.pid}"):
            RunLock(out).acquire()
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_and_released(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with RunLock(tmp_path, "me") as lock:
        assert lock.holder()["pid"] == os.getpid() and lock.holder()["command"] == "me"
    assert not (tmp_path / LOCK_NAME).exists()


def test_sigint_of_shared_run_stops_its_suite_and_leaves_no_child(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "shared", "run", "--preset", "smoke", "--out", str(out),
                             "--framework", "pytorch_impl", "--arch", "vgg16"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "rows").glob("*.json")):
        time.sleep(0.05)
    assert list((out / "rows").glob("*.json")), "the suite never wrote its first row"
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert children, "shared run has no suite child"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert [line for line in stderr.splitlines() if "Resume with" in line] == [  # one line, from shared run
        f"shared: interrupted; finished cells are kept. Resume with: python -m shared run --preset smoke --out {out} "
        f"--framework pytorch_impl --arch vgg16"]
    assert not (out / LOCK_NAME).exists()  # released on the way out
    assert all(json.loads(p.read_text())["status"] == "ok" for p in (out / "rows").glob("*.json"))


# ---- validation before any work ---------------------------------------------------------------------------

def _run(out, *extra, env=None):
    cmd = [sys.executable, "-m", "pytorch_impl", "run", "--preset", "quick", "--out", str(out), *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CIFAR10_CACHE": str(out.parent / "no-cache"), **(env or {})})


def _batches(tmp_path) -> Path:
    import numpy as np

    from shared import data

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6000, 32, 32, 3), dtype=np.uint8)  # enough for the quick preset's 5,000 val images
    return data.write_batches(x, np.arange(6000) % 10, x[:20], np.arange(20) % 10, tmp_path / "cifar-10-batches-py")


def _assert_refused(res, out, *needles):
    assert res.returncode == 2, res.stderr[-3000:]
    text = res.stderr
    assert "cannot start:" in text and "Traceback" not in text and "\\n" not in text  # readable lines, no repr
    for needle in needles:
        assert needle in text, (needle, text)
    assert not out.exists()  # nothing written


def test_missing_data_is_refused_before_any_cell(tmp_path):
    out = tmp_path / "run"
    res = _run(out, "--data-dir", str(tmp_path / "nonexistent" / "cifar"))
    _assert_refused(res, out, f"CIFAR-10 not found at {tmp_path / 'nonexistent' / 'cifar'}", "does not exist",
                    "Point it at the extracted 'cifar-10-batches-py' folder")


def test_empty_data_dir_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    _assert_refused(_run(out, "--data-dir", str(tmp_path / "empty")), out, "lacks data_batch_1")


@pytest.mark.parametrize("damage, why", [
    (lambda b: b[: len(b) // 2], "pickle data was truncated"),
    (lambda b: b"\x80\x02garbage" + b[:100], "UnicodeDecodeError"),
    (lambda b: b"", "EOFError"),
])
def test_a_damaged_batch_file_is_named_with_the_fix(tmp_path, damage, why):
    folder = _batches(tmp_path)
    bad = folder / "data_batch_3"
    bad.write_bytes(damage(bad.read_bytes()))
    out = tmp_path / "run"
    _assert_refused(_run(out, "--data-dir", str(folder)), out, f"CIFAR-10 batch {bad} is unreadable", why,
                    "Fix: re-extract cifar-10-python.tar.gz")


def test_a_file_out_is_refused_before_training(tmp_path):
    folder = _batches(tmp_path)
    as_file = tmp_path / "a-file"
    as_file.write_text("x")
    res = _run(as_file, "--data-dir", str(folder))
    assert res.returncode == 2 and "is a file, not a directory" in res.stderr and as_file.read_text() == "x"


def test_an_unwritable_out_is_refused_even_for_root(tmp_path):
    """/proc is not writable by anyone: the probe file fails there whoever runs the test."""
    folder = _batches(tmp_path)
    res = _run(Path("/proc/cnn-study-run"), "--data-dir", str(folder))
    assert res.returncode == 2 and "--out /proc/cnn-study-run is not writable" in res.stderr
    assert "choose a directory you can write to" in res.stderr


def test_a_technique_without_its_baseline_is_refused_with_the_command_that_fixes_it(tmp_path):
    folder = _batches(tmp_path)
    out = tmp_path / "run"
    res = _run(out, "--data-dir", str(folder), "--technique", "int8_static")
    _assert_refused(res, out, "starts from the vgg16 baseline (seed 0)",
                    f"python -m pytorch_impl run --preset quick --out {out} --technique baseline first")


def test_too_little_disk_is_refused_and_leaves_no_directory(tmp_path, monkeypatch):
    import shutil as sh

    from shared import preflight
    from shared.presets import get_preset

    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: sh._ntuple_diskusage(10 * 2**30, 10 * 2**30, 2**29))
    with pytest.raises(preflight.PreflightError, match=r"only 0.50 GiB free under .*a quick run needs at least 2.00 GiB"):
        preflight.preflight("pytorch", "pytorch_impl", get_preset("quick"), tmp_path / "a" / "run",
                            data_dir=_batches(tmp_path))
    assert not (tmp_path / "a").exists()


def test_shared_run_without_data_stops_at_once_and_writes_nothing(tmp_path):
    out = tmp_path / "study"
    res = subprocess.run([sys.executable, "-m", "shared", "run", "--preset", "quick", "--out", str(out),
                          "--data-dir", str(tmp_path / "nowhere")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and "CIFAR-10 not found at" in res.stderr
    assert "tensorflow_impl" not in res.stdout  # the second suite never started, no report was written
    assert not out.exists()


def test_a_suite_past_its_memory_bound_restarts_itself_between_cells_and_finishes(tmp_path):
    """A 1 MiB bound restarts the process after every cell: the run still ends with each cell run once, and
    the summary counts the cells of every process of the run."""
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "pytorch_impl", "run", "--preset", "smoke", "--out", str(out),
                          "--technique", "baseline", "--arch", "vgg16", "--arch", "resnet18"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "CNN_STUDY_RESTART_ABOVE_MIB": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    restarts = [line for line in res.stdout.splitlines() if "restarting the process" in line]
    assert len(restarts) == 1 and "above its 1 MiB bound" in restarts[0]  # after vgg16; none after the last
    assert "pytorch_impl: 2 cells run, 0 failed" in res.stdout
    rows = [json.loads(p.read_text()) for p in (out / "rows").glob("*.json")]
    assert sorted(r["arch"] for r in rows) == ["resnet18", "vgg16"] and all(r["status"] == "ok" for r in rows)
    assert not (out / LOCK_NAME).exists()


def test_a_suite_killed_by_a_signal_is_reported_as_a_crash_with_the_resume_command(tmp_path, monkeypatch, capsys):
    """A native crash (SIGABRT from heap corruption) is not exit 0: the run says so, goes on to the other
    suite and the report, and exits 128 + the signal."""
    from shared import cli

    ran = []

    def suite(cmd):
        ran.append(cmd[2])
        crash = "import os, signal; os.kill(os.getpid(), signal.SIGABRT)"
        return cli_call_child([sys.executable, "-c", crash if cmd[2] == "pytorch_impl" else "pass"])

    cli_call_child = cli.call_child
    monkeypatch.setattr(cli, "call_child", suite)
    monkeypatch.setattr(cli, "time_all", lambda args: 0)
    monkeypatch.setattr("shared.report.write_report", lambda out: f"report for {out}")
    rc = cli.run_all(argparse.Namespace(
        command="run", preset="smoke", out=tmp_path, data_dir=None, arch=None, technique=None, controlled=False,
        data=None, pretrained=None, width=None, verbose=False, framework=None, executor="local", seed=None),
        "python -m shared run --preset smoke")
    err = capsys.readouterr().err
    assert rc == 128 + signal.SIGABRT and ran == ["pytorch_impl", "tensorflow_impl"]
    assert (f"shared: pytorch_impl crashed (signal {int(signal.SIGABRT)}); finished cells are kept, the rest did "
            f"not run. Resume with: python -m shared run --preset smoke") in err
