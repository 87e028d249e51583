"""The timing pass: every artifact of a run timed on a quiet machine, interleaved with its fp32 reference.

Training cells record no latency (they may run beside other work). ``python -m shared time OUT`` (also the
last step of ``shared run``) starts one process per framework; each times, per (architecture, seed,
configuration) and runtime, every artifact together with its reference (the fp32 baseline saved for the
same runtime) and a second, separately loaded copy of the reference (an A/A pair whose "speedup" is pure
noise), in rounds: every round calls each model once, in a fresh random order, after warm-up. A speedup is
the reference's median over the model's, with a paired bootstrap 95% CI over rounds; the A/A pair gives the
spread that identical models show, which the report uses as its threshold for "measurable".

No latency is recorded under contention: the pass refuses to start when other processes use the CPU
(or another study process runs), and marks a group ``contended`` when others' CPU use during its timing
exceeded the protocol's limit. Written once here; a suite supplies only ``TimingBackend``.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from . import artifacts, specs
from .artifacts import write_atomic
from .lock import ancestors
from .measure import MeasureProtocol, latency_stats

TIMINGS_DIR = "timings"
REFERENCE_AGAIN = "__reference_again__"  # the A/A copy's name inside a group
SECOND_COPY = "__second_copy"  # appended to a cell id: its artifact's second load inside a group
BOOTSTRAP_RESAMPLES = 2000
# Processes whose presence means the machine is not quiet, whatever the CPU sample says (a study between
# two cells, a test session between two tests).
STUDY_MARKERS = ("pytorch_impl run", "tensorflow_impl run", "shared run", "pytest", "shared time")


class MachineBusy(RuntimeError):
    """The machine is not quiet enough to time on; the message names what is running and the fix."""


class Runner(Protocol):
    def make_input(self, x: np.ndarray): ...  # untimed: normalised NHWC float32 -> what the call takes

    def __call__(self, prepared): ...  # timed: one inference, float in, float logits out


class TimingBackend(Protocol):
    name: str  # the framework of the rows it times

    def runner(self, sidecar: dict, runtime: str, artifacts_dir: Path, threads: int) -> Runner: ...

    def threads(self) -> dict: ...  # the pinned thread settings, recorded with every timing

    def environment(self) -> dict: ...


# --- is the machine quiet? -------------------------------------------------------------------------------

def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot (``/proc/stat``). Busy is user + nice + system + irq +
    softirq: steal (time the hypervisor gave other VMs) is not a process of this machine, and it rises with
    this process's own load on a VM (measured here: 56 of 427 ticks, 13%, over 2 s of LiteRT on 2 threads)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    fields += [0] * (8 - len(fields))
    user, nice, system, _idle, _iowait, irq, softirq, _steal = fields[:8]
    return user + nice + system + irq + softirq, sum(fields[:8])


def _own_ticks() -> int:
    """utime + stime of this process, all threads (``/proc/self/stat``)."""
    stat = Path("/proc/self/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


class CpuMeter:
    """Other processes' share of the machine's CPU time between ``start`` and ``stop`` (0..1); None where
    ``/proc`` is missing (not Linux): then nothing can be checked and the load is recorded as unknown."""

    def start(self) -> "CpuMeter":
        try:
            self._busy, self._total = _cpu_ticks()
            self._own = _own_ticks()
        except (OSError, ValueError, IndexError):
            self._total = None
        return self

    def stop(self) -> float | None:
        if self._total is None:
            return None
        busy, total = _cpu_ticks()
        own = _own_ticks() - self._own
        elapsed = total - self._total
        return None if elapsed <= 0 else max(0.0, (busy - self._busy - own) / elapsed)


def study_processes() -> list[str]:
    """Command lines of other study or test processes (this process and its parents excluded)."""
    mine, out = ancestors(), []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if int(entry.name) in mine:
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError):
            continue
        if any(marker in cmd for marker in STUDY_MARKERS):
            out.append(f"pid {entry.name}: {cmd[:160]}")
    return out


def machine_load(sample_s: float = 1.0) -> dict:
    """What else the machine is doing now: others' CPU share over ``sample_s``, the 1-minute load average,
    and other study processes."""
    meter = CpuMeter().start()
    time.sleep(sample_s)
    others = meter.stop()
    try:
        loadavg = os.getloadavg()[0]
    except OSError:
        loadavg = None
    return {"others_cpu": others, "loadavg_1m": loadavg, "study_processes": study_processes() if others is not None
            else [], "cpu_count": os.cpu_count()}


def busy_reason(load: dict, protocol: MeasureProtocol) -> str | None:
    if load.get("study_processes"):
        return "other study or test processes are running: " + "; ".join(load["study_processes"])
    others = load.get("others_cpu")
    if others is not None and others > protocol.max_other_cpu:
        return (f"other processes used {others:.0%} of the CPU (limit {protocol.max_other_cpu:.0%}, "
                f"load average {load.get('loadavg_1m')})")
    return None


# --- timing ----------------------------------------------------------------------------------------------

def timed_rounds(runners: dict[str, Runner], batch_size: int, warmup: int, repeats: int,
                 seed: int = 0, input_hw: int = specs.INPUT_HW) -> dict[str, np.ndarray]:
    """Seconds per call of every runner: ``warmup`` untimed calls each, then ``repeats`` rounds, each round
    one timed call of every runner in a fresh random order (so drift and other load hit all alike).
    ``input_hw``: the networks' input side (one group is one architecture)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, input_hw, input_hw, specs.INPUT_CHANNELS), np.float32)
    names = list(runners)
    inputs = {name: runners[name].make_input(x) for name in names}
    for _ in range(warmup):
        for name in names:
            runners[name](inputs[name])
    times = {name: np.empty(repeats) for name in names}
    for r in range(repeats):
        for i in rng.permutation(len(names)):
            name = names[i]
            t0 = time.perf_counter()
            runners[name](inputs[name])
            times[name][r] = time.perf_counter() - t0
    return times


def speedup_ci(reference: np.ndarray, times: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
               seed: int = 0) -> dict:
    """Median(reference) / median(times) and its paired bootstrap 95% CI (rounds resampled together:
    both were timed in the same rounds)."""
    reference, times = np.asarray(reference, float), np.asarray(times, float)
    if reference.shape != times.shape or reference.ndim != 1 or len(reference) < 2:
        raise ValueError("a speedup CI needs two equal-length series of at least two rounds")
    idx = np.random.default_rng(seed).integers(0, len(times), size=(resamples, len(times)))
    ratios = np.median(reference[idx], axis=1) / np.median(times[idx], axis=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return {"speedup": float(np.median(reference) / np.median(times)), "ci95": [float(lo), float(hi)]}


def timing_path(out_dir, cid: str) -> Path:
    return Path(out_dir) / TIMINGS_DIR / f"{cid}.json"


def read_timings(out_dir) -> dict[str, dict]:
    """cell id -> its timing record (every runtime it was timed on); unreadable files are skipped."""
    out = {}
    for path in sorted(Path(out_dir).rglob(f"{TIMINGS_DIR}/*.json")):
        if path.name.startswith("."):
            continue
        try:
            record = json.loads(path.read_text())
            out[record["cell_id"]] = record
        except (OSError, ValueError, KeyError):
            continue
    return out


def _groups(sidecars: list[dict], framework: str) -> dict[tuple, list[dict]]:
    groups = defaultdict(list)
    for s in sidecars:
        if s.get("framework") == framework and "error" not in s:
            groups[(s["arch"], s["seed"], s["fingerprint"], s.get("controlled", False))].append(s)
    return groups


def _done(out_dir, members: list[str], runtime: str) -> bool:
    for cid in members:
        path = timing_path(out_dir, cid)
        if not path.exists():
            return False
        try:
            entry = json.loads(path.read_text())["runtimes"][runtime]
        except (OSError, ValueError, KeyError):
            return False
        if sorted(entry.get("group", [])) != sorted(members):
            return False
    return True


def _write_entry(out_dir, cid: str, runtime: str, entry: dict) -> None:
    path = timing_path(out_dir, cid)
    record = {"cell_id": cid, "runtimes": {}}
    if path.exists():
        try:
            record = json.loads(path.read_text())
        except ValueError:
            pass
    record["runtimes"][runtime] = entry
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1, sort_keys=True)))


def second_copy(cid: str) -> str:
    """The name, inside a group's rounds, of an artifact's second independently loaded copy."""
    return f"{cid}{SECOND_COPY}"


def copies_agree(first: dict, second: dict) -> bool:
    """Two copies of one artifact agree when their speedup CIs overlap."""
    return first["ci95"][0] <= second["ci95"][1] and second["ci95"][0] <= first["ci95"][1]


def time_group(backend: TimingBackend, out_dir: Path, reference: dict, members: list[dict], runtime: str,
               protocol: MeasureProtocol, seed: int) -> dict[str, dict]:
    """Time ``members`` (the reference among them) on ``runtime``; return cell id -> timing entry.

    Every artifact is loaded twice and both copies run in the same rounds: two cells holding the same int8
    model (same size, calibration and accuracy) once read 0.18 and 0.76 ms at b1 in one LiteRT pass, a spread between
    loads that one copy's round-to-round CI cannot see. Each copy's speedup is taken against its own copy of the reference; the
    entry's speedup is their mean and its CI spans both copies' CIs, so a verdict must hold for both loads.
    """
    adir = artifacts.artifact_dir(out_dir)
    ref = reference["cell_id"]
    runners = {}
    for s in members:
        runners[s["cell_id"]] = backend.runner(s, runtime, adir, protocol.threads)
        twin = REFERENCE_AGAIN if s["cell_id"] == ref else second_copy(s["cell_id"])
        runners[twin] = backend.runner(s, runtime, adir, protocol.threads)
    meter = CpuMeter().start()
    started = time.perf_counter()
    hw = specs.input_hw(reference["arch"])
    per_bs = {bs: timed_rounds(runners, bs, protocol.warmup, protocol.repeats, seed=seed + bs, input_hw=hw)
              for bs in protocol.latency_batch_sizes}
    others = meter.stop()
    contended = others is not None and others > protocol.max_other_cpu
    noise = {f"b{bs}": speedup_ci(t[ref], t[REFERENCE_AGAIN]) for bs, t in per_bs.items()}
    common = {
        "runtime": runtime, "reference": ref, "group": sorted(s["cell_id"] for s in members),
        "noise": noise, "others_cpu": others, "contended": contended, "threads": backend.threads(),
        "warmup": protocol.warmup, "repeats": protocol.repeats, "seconds": time.perf_counter() - started,
        "timed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "env": backend.environment(),
        "copies_per_artifact": 2,
    }
    out = {}
    for s in members:
        cid, entry = s["cell_id"], dict(common)
        twin = REFERENCE_AGAIN if cid == ref else second_copy(cid)
        entry["copies"] = {}
        for bs, t in per_bs.items():
            entry.update(latency_stats(np.concatenate([t[cid], t[twin]]), bs))
            first, second = speedup_ci(t[ref], t[cid]), speedup_ci(t[REFERENCE_AGAIN], t[twin])
            entry["copies"][f"b{bs}"] = {"first": first, "second": second, "agree": copies_agree(first, second),
                                        "between": speedup_ci(t[cid], t[twin])}
            entry[f"speedup_b{bs}"] = (first["speedup"] + second["speedup"]) / 2
            entry[f"speedup_b{bs}_ci95"] = [min(first["ci95"][0], second["ci95"][0]),
                                            max(first["ci95"][1], second["ci95"][1])]
        out[cid] = entry
    return out


def run_timing(backend: TimingBackend, out_dir, protocol: MeasureProtocol | None = None, *, force: bool = False,
               retime: bool = False, log: Callable[[str], None] = print,
               load_probe: Callable[[], dict] | None = None) -> dict[str, int]:
    """Time every untimed (group, runtime) of ``backend``'s framework under ``out_dir``.

    Raises ``MachineBusy`` before timing anything when the machine is not quiet (unless ``force``: then
    the entries record the load and are marked contended). ``protocol``: the rows' own by default.
    """
    out_dir = Path(out_dir)
    sidecars = artifacts.read_sidecars(out_dir)
    for bad in (s["error"] for s in sidecars if "error" in s):
        log(f"[{backend.name} time] skipped an unreadable sidecar: {bad}")
    groups = _groups(sidecars, backend.name)
    if not groups:
        log(f"[{backend.name} time] no {backend.name} artifacts under {artifacts.artifact_dir(out_dir)}")
        return {"timed": 0, "skipped": 0, "contended": 0}
    load = (load_probe or machine_load)()
    reason = busy_reason(load, protocol or MeasureProtocol())
    if reason and not force:
        raise MachineBusy(f"not timing on a busy machine: {reason}. Wait until it is quiet and run "
                          f"`python -m shared time {out_dir}` again (or pass --force: timings are then marked "
                          f"contended and the report gives them no verdict).")
    counts = {"timed": 0, "skipped": 0, "contended": 0}
    for (arch, seed, fp, controlled), members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        ref_id = members[0]["reference"]
        reference = next((s for s in members if s["cell_id"] == ref_id), None)
        if reference is None:
            log(f"[{backend.name} time] {arch} s{seed} ({fp}): no artifact of the baseline {ref_id}; its "
                f"{len(members)} models have no reference to be timed against (run the baseline cell)")
            counts["skipped"] += len(members)
            continue
        p = protocol or _protocol_of(out_dir, ref_id)
        for runtime, ref_entry in reference["runtimes"].items():
            if runtime == "none" or "reason" in ref_entry:  # not timed, and the sidecar says why
                continue
            timed = [s for s in members if "reason" not in s["runtimes"].get(runtime, {"reason": "absent"})]
            ids = [s["cell_id"] for s in timed]
            if not retime and _done(out_dir, ids, runtime):
                counts["skipped"] += len(ids)
                continue
            log(f"[{backend.name} time] {arch} s{seed}{' controlled' if controlled else ''} on {runtime}: "
                f"{len(ids)} models + an A/A copy of the baseline, batch sizes {list(p.latency_batch_sizes)}, "
                f"{p.repeats} interleaved rounds")
            entries = time_group(backend, out_dir, reference, timed, runtime, p, seed)
            contended = next(iter(entries.values()))["contended"] or bool(reason)  # forced on a busy machine
            for cid, entry in entries.items():
                entry.update(load_before=load, contended=contended)
                _write_entry(out_dir, cid, runtime, entry)
            counts["timed"] += len(entries)
            counts["contended"] += len(entries) if contended else 0
            if contended:
                log(f"[{backend.name} time] warning: other processes used the CPU while timing {arch} on {runtime}; "
                    f"those timings are marked contended (rerun with --retime on a quiet machine)")
    return counts


def protocol_of_run(out_dir) -> MeasureProtocol:
    """The measurement protocol of the first row under ``out_dir`` (a run has one), else the default."""
    from .results import ROWS_DIR

    for path in sorted(Path(out_dir).glob(f"{ROWS_DIR}/*.json")):
        return _protocol_of(Path(out_dir), path.stem)
    return MeasureProtocol()


def _protocol_of(out_dir: Path, cid: str) -> MeasureProtocol:
    """The measurement protocol of the run that produced ``cid`` (from its row's typed config)."""
    from .config import from_jsonable
    from .results import row_path

    try:
        return from_jsonable(json.loads(row_path(out_dir, cid).read_text())["config"]).measure
    except (OSError, ValueError, KeyError, TypeError):
        return MeasureProtocol()
