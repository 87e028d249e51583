"""The timing pass (shared.timing): interleaved rounds, paired bootstrap CIs, the A/A noise pair, a refused
busy machine, resumable groups; and each runtime's call (float in, float out, input quantization timed)."""
import json
import time

import numpy as np
import pytest

from shared import artifacts, timing
from shared.measure import MeasureProtocol

QUIET = {"others_cpu": 0.01, "loadavg_1m": 0.1, "study_processes": [], "cpu_count": 2}

PROTOCOL = MeasureProtocol(warmup=2, repeats=6, latency_batch_sizes=(1, 4))


# ---- statistics ----------------------------------------------------------------------------------------

def test_speedup_ci_golden_values():
    ref = np.array([2.0, 2.0, 2.0, 2.0])
    assert timing.speedup_ci(ref, ref / 2) == {"speedup": 2.0, "ci95": [2.0, 2.0]}
    noisy = np.array([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.02])
    stats = timing.speedup_ci(noisy, noisy[::-1])
    assert stats["speedup"] == pytest.approx(1.0)
    lo, hi = stats["ci95"]
    assert lo < 1.0 < hi and hi - lo < 0.2
    with pytest.raises(ValueError, match="equal-length"):
        timing.speedup_ci([1.0, 2.0], [1.0])


def test_rounds_interleave_every_runner_in_a_fresh_order_and_time_only_the_repeats():
    calls = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def make_input(self, x):
            calls.append(("input", self.name, x.shape))
            return x

        def __call__(self, x):
            calls.append(("call", self.name))

    runners = {n: Recorder(n) for n in "abc"}
    times = timing.timed_rounds(runners, 4, warmup=2, repeats=5, seed=0)
    assert [c for c in calls if c[0] == "input"] == [("input", n, (4, 32, 32, 3)) for n in "abc"]
    made = [c[1] for c in calls if c[0] == "call"]
    assert made[:6] == list("abcabc")  # warm-up: untimed, in order
    rounds = [made[6 + 3 * i: 9 + 3 * i] for i in range(5)]
    assert all(sorted(r) == list("abc") for r in rounds)  # every round calls each once
    assert len({tuple(r) for r in rounds}) > 1  # in a shuffled order
    assert {k: len(v) for k, v in times.items()} == {"a": 5, "b": 5, "c": 5}


# ---- the pass over a results directory (fake runtime) ----------------------------------------------------

class SleepRunner:
    def __init__(self, seconds):
        self.seconds = seconds

    def make_input(self, x):
        return x

    def __call__(self, x):
        # batch 4 sleeps twice as long as batch 1: a margin that OS sleep jitter on a loaded CI runner
        # (observed: +0.25 ms) cannot flip, where a 5% difference did
        time.sleep(self.seconds * (1 + (len(x) - 1) / 3))


class FakeTiming:
    """Models sleep for a duration set per technique: the baseline 4 ms, 'fast' 1 ms, 'same' 4 ms."""
    name = "fake"
    SECONDS = {"baseline": 0.004, "fast": 0.001, "same": 0.004}

    def __init__(self):
        self.loaded = []

    def runner(self, sidecar, runtime, artifacts_dir, threads):
        self.loaded.append((sidecar["cell_id"], runtime))
        return SleepRunner(self.SECONDS[sidecar["technique"]])

    def threads(self):
        return {"intra_op": 2}

    def environment(self):
        return {"git_commit": "abc"}


def write_sidecars(out, techniques=("baseline", "fast", "same"), arch="vgg16"):
    ref = f"fake__{arch}__baseline__x__fp__s0"
    for tech in techniques:
        cid = f"fake__{arch}__{tech}__x__fp__s0"
        sidecar = {"cell_id": cid, "framework": "fake", "arch": arch, "technique": tech, "settings": {},
                   "seed": 0, "fingerprint": "fp", "controlled": False, "reference": ref,
                   "runtimes": {"rt": {"file": f"{cid}.bin", "form": "x", "precision": "fp32"}}}
        path = artifacts.sidecar_path(out, cid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(sidecar))
    return ref


def test_a_real_speedup_is_measured_against_the_reference_with_an_aa_pair(tmp_path, quiet_meter):
    ref = write_sidecars(tmp_path)
    backend = FakeTiming()
    counts = timing.run_timing(backend, tmp_path, PROTOCOL, log=lambda _: None, load_probe=lambda: QUIET)
    assert counts == {"timed": 3, "skipped": 0, "contended": 0}
    # every artifact loaded twice (two independent copies in the same rounds), the reference's second is the A/A
    assert sorted(backend.loaded) == sorted(2 * [(f"fake__vgg16__{t}__x__fp__s0", "rt")
                                                 for t in ("baseline", "fast", "same")])
    got = timing.read_timings(tmp_path)
    fast = got["fake__vgg16__fast__x__fp__s0"]["runtimes"]["rt"]
    same = got["fake__vgg16__same__x__fp__s0"]["runtimes"]["rt"]
    assert fast["reference"] == ref and fast["repeats"] == 6 and fast["threads"] == {"intra_op": 2}
    assert fast["speedup_b1"] > 2.5 and fast["speedup_b1_ci95"][0] > 2.0
    assert same["speedup_b1_ci95"][0] < 1.3 and same["speedup_b1_ci95"][1] > 0.8
    assert set(fast["noise"]) == {"b1", "b4"} and 0.7 < fast["noise"]["b1"]["speedup"] < 1.4
    assert fast["latency_b4_ms_median"] > fast["latency_b1_ms_median"] and not fast["contended"]
    copies = fast["copies"]["b1"]
    assert copies["agree"] and fast["copies_per_artifact"] == 2
    assert fast["speedup_b1"] == pytest.approx((copies["first"]["speedup"] + copies["second"]["speedup"]) / 2)
    assert fast["speedup_b1_ci95"] == [min(copies["first"]["ci95"][0], copies["second"]["ci95"][0]),
                                       max(copies["first"]["ci95"][1], copies["second"]["ci95"][1])]
    # a rerun finds the group done; --retime times it again
    assert timing.run_timing(backend, tmp_path, PROTOCOL, log=lambda _: None, load_probe=lambda: QUIET)["skipped"] == 3
    assert timing.run_timing(backend, tmp_path, PROTOCOL, retime=True, log=lambda _: None,
                             load_probe=lambda: QUIET)["timed"] == 3


def test_two_loads_of_one_artifact_that_disagree_get_no_verdict(tmp_path, quiet_meter):
    """An artifact whose second load runs 3x slower than its first (as two loads of one LiteRT model once
    did at b1): each copy alone reads a clear speedup or slowdown, the entry's CI spans both, so the report
    calls it no measurable change."""
    from shared.report.latency import NO_CHANGE, verdict

    class SecondLoadSlow(FakeTiming):
        # 4 ms and 1 ms: margins that a loaded runner's sleep jitter (+0.25 ms seen) cannot flip
        SECONDS = {"baseline": 0.004, "fast": 0.001, "same": 0.004}

        def runner(self, sidecar, runtime, artifacts_dir, threads):
            loads = [cid for cid, _ in self.loaded].count(sidecar["cell_id"])
            inner = super().runner(sidecar, runtime, artifacts_dir, threads)
            if sidecar["technique"] == "fast" and loads == 1:
                inner.seconds *= 12  # the second copy: 12 ms, 3x slower than the baseline
            return inner

    write_sidecars(tmp_path)
    timing.run_timing(SecondLoadSlow(), tmp_path, PROTOCOL, log=lambda _: None, load_probe=lambda: QUIET)
    fast = timing.read_timings(tmp_path)["fake__vgg16__fast__x__fp__s0"]["runtimes"]["rt"]
    copies = fast["copies"]["b1"]
    assert copies["first"]["ci95"][0] > 1.5 and copies["second"]["ci95"][1] < 0.5 and not copies["agree"]
    assert copies["between"]["speedup"] == pytest.approx(1 / 12, rel=0.2)  # first copy's time / second's
    lo, hi = fast["speedup_b1_ci95"]
    assert lo < 1 < hi and verdict(fast["speedup_b1"], lo, hi, 0.0) == NO_CHANGE


def test_an_imagenet_group_is_timed_on_its_own_input_size(tmp_path, quiet_meter):
    shapes = []

    class ShapeRecorder(FakeTiming):
        def runner(self, sidecar, runtime, artifacts_dir, threads):
            inner = super().runner(sidecar, runtime, artifacts_dir, threads)

            def make_input(x):
                shapes.append(x.shape)
                return x
            inner.make_input = make_input
            return inner

    write_sidecars(tmp_path, arch="resnet50")
    timing.run_timing(ShapeRecorder(), tmp_path, PROTOCOL, log=lambda _: None, load_probe=lambda: QUIET)
    assert sorted(set(shapes)) == [(1, 224, 224, 3), (4, 224, 224, 3)]


def test_the_timing_pass_refuses_a_busy_machine(tmp_path, quiet_meter):
    write_sidecars(tmp_path)
    busy = dict(QUIET, others_cpu=0.6)
    with pytest.raises(timing.MachineBusy, match=r"other processes used 60% of the CPU \(limit 10%"):
        timing.run_timing(FakeTiming(), tmp_path, PROTOCOL, load_probe=lambda: busy)
    study = dict(QUIET, study_processes=["pid 42: python -m pytorch_impl run --preset quick"])
    with pytest.raises(timing.MachineBusy, match="pid 42: python -m pytorch_impl run"):
        timing.run_timing(FakeTiming(), tmp_path, PROTOCOL, load_probe=lambda: study)
    assert not (tmp_path / timing.TIMINGS_DIR).exists()  # nothing recorded
    counts = timing.run_timing(FakeTiming(), tmp_path, PROTOCOL, force=True, log=lambda _: None,
                               load_probe=lambda: busy)
    assert counts["contended"] == 3
    entries = [r["runtimes"]["rt"] for r in timing.read_timings(tmp_path).values()]
    assert all(e["contended"] and e["load_before"]["others_cpu"] == 0.6 for e in entries)


def test_busy_reason():
    p = MeasureProtocol()
    assert timing.busy_reason(QUIET, p) is None
    assert "limit 10%" in timing.busy_reason(dict(QUIET, others_cpu=0.5), p)


def test_the_cpu_meter_sees_another_process():
    import subprocess
    import sys

    from pathlib import Path

    if not Path("/proc/stat").exists():
        pytest.skip("no /proc/stat: the load cannot be measured on this OS")
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
    try:
        time.sleep(0.5)
        meter = timing.CpuMeter().start()
        time.sleep(1.0)
        share = meter.stop()
    finally:
        busy.kill()
        busy.wait()
    assert share > 0.3  # one of two cores spinning: ~50% of the machine


def test_a_group_without_its_baseline_is_skipped_not_timed_against_something_else(tmp_path):
    write_sidecars(tmp_path, techniques=("fast", "same"))
    logs = []
    counts = timing.run_timing(FakeTiming(), tmp_path, PROTOCOL, log=logs.append, load_probe=lambda: QUIET)
    assert counts == {"timed": 0, "skipped": 2, "contended": 0}
    assert any("no artifact of the baseline" in line for line in logs)


def test_cli_exits_2_on_a_busy_machine_and_names_the_fix(tmp_path, monkeypatch, capsys):
    import argparse

    from shared import cli

    write_sidecars(tmp_path)
    for path in artifacts.artifact_dir(tmp_path).glob("*.json"):  # PyTorch's sidecars, as far as grouping goes
        path.write_text(path.read_text().replace('"framework": "fake"', '"framework": "pytorch"'))
    monkeypatch.setattr(timing, "machine_load", lambda: dict(QUIET, others_cpu=0.9))
    status = cli.suite_time("pytorch_impl", argparse.Namespace(out=tmp_path, force=False, retime=False))
    err = capsys.readouterr().err
    assert status == 2
    assert "not timing on a busy machine: other processes used 90% of the CPU" in err
    assert f"python -m shared time {tmp_path}" in err and "--force" in err
    assert not (tmp_path / timing.TIMINGS_DIR).exists()
