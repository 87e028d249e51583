"""One technique registry: the keys live in shared/, the drivers once in shared/drivers, and every key runs
in smoke for both suites through ``run_suite``, every fine-tuned row recording the budget it got.

Each suite's whole smoke run is done once (module-scoped fixtures; the Keras one takes minutes) and every
assertion about the rows is read off those two runs.
"""
import json

import pytest

from shared import results
from shared.drivers import REGISTRY
from shared.drivers.distill import STUDENT_BUDGET
from shared.presets import get_preset
from shared.protocols import CompressionProtocol, budget_figures
from shared.runner import run_suite
from shared.techniques import TECHNIQUES, operating_points

PRESET = get_preset("smoke")
FRAMEWORKS = ("pytorch", "keras")
BUDGET_KEYS = {"epochs", "images", "steps", "peak_lr", "schedule"}
# every technique that fine-tunes (or trains a student), and the budget of the protocol it must record
_P = PRESET.protocol
FINETUNED = {
    **{t: _P.prune_budget for t in ("prune_global", "prune_gradual", "prune_gradual_layerwise", "prune_layerwise",
                                    "prune_random")},
    **{t: _P.filter_budget for t in ("filter_uniform", "filter_stagewise", "filter_li_a", "filter_iterative")},
    "int8_qat": _P.qat_budget, "kd": STUDENT_BUDGET, "kd_control": STUDENT_BUDGET,
    "pipeline_kd_filter_int8": _P.filter_budget, "pipeline_prune_int8": _P.prune_budget,
}


def test_the_driver_registry_is_the_shared_keys_in_order():
    assert tuple(REGISTRY) == TECHNIQUES
    assert len(set(TECHNIQUES)) == len(TECHNIQUES) == 23
    assert all(callable(driver) for driver in REGISTRY.values())
    assert set(FINETUNED) < set(TECHNIQUES)


def test_operating_points_come_from_the_protocol():
    p = CompressionProtocol(sparsities=(0.5, 0.9), calibration_sizes=(8, 16), observers=("minmax",))
    assert operating_points("prune_global", "vgg16", p) == [{"sparsity": 0.5}, {"sparsity": 0.9}]
    assert operating_points("prune_gradual_layerwise", "resnet18", p) == [{"sparsity": 0.5}, {"sparsity": 0.9}]
    assert operating_points("int8_static", "resnet18", p) == [
        {"observer": "minmax", "calibration_images": 8}, {"observer": "minmax", "calibration_images": 16}]
    assert operating_points("filter_li_a", "resnet18", p) == []  # Li et al.'s pruned-A is a VGG-16 config
    assert operating_points("baseline", "vgg16", p) == [{}]
    assert CompressionProtocol().sparsities == (0.5, 0.75, 0.875, 0.9375, 0.96875)  # Blalock et al.'s
    with pytest.raises(ValueError, match="unknown technique 'prune_magic'"):
        operating_points("prune_magic", "vgg16", p)


# The Keras smoke run is slow on a 2-core CPU (TFLite conversions; the two CNNs alone took 491 s on an AVX2 EPYC). By
# default it runs VGG-16 alone, on which every key has a cell; the slow test below runs all four.
KERAS_ARCHS = ("vgg16",)


def _smoke_run(backend, out_dir, archs=None):
    rows = run_suite(backend, PRESET, out_dir, archs=archs, log=lambda msg: None)
    return {"rows": rows, "out_dir": out_dir, "archs": tuple(archs or PRESET.archs)}


# The PyTorch smoke run of all four architectures takes ~9 minutes on an AVX2-only 2-core CPU; by default it
# runs three (the custom CNN's dropout variant shares every code path of `cnn` but dropout, which the Keras
# and PyTorch all-architecture runs below cover).
PYTORCH_ARCHS = ("vgg16", "resnet18", "cnn")


@pytest.fixture(scope="module")
def pytorch_run(pt_backend, tmp_path_factory):
    return _smoke_run(pt_backend, tmp_path_factory.mktemp("registry_pytorch"), archs=PYTORCH_ARCHS)


@pytest.fixture(scope="module")
def keras_run(tf_backend, tmp_path_factory):
    return _smoke_run(tf_backend, tmp_path_factory.mktemp("registry_keras"), archs=KERAS_ARCHS)


# The Keras suite's whole smoke run takes ~7 of the default suite's minutes here since every float cell also
# converts to TFLite and ONNX: it runs with `make test-all`; the Keras drivers' own tests stay in the default.
@pytest.fixture(params=[pytest.param(f, marks=pytest.mark.slow) if f == "keras" else f for f in FRAMEWORKS])
def run(request):
    """One suite's whole smoke run (computed once per module)."""
    return request.getfixturevalue(f"{request.param}_run")


def _key(row):
    return row["arch"], row["technique"], json.dumps(row["settings"], sort_keys=True)


def _check_every_cell_ran_once(run):
    rows, out_dir = run["rows"], run["out_dir"]
    failed = {r["cell_id"]: r["error"] for r in rows if r["status"] != "ok"}
    assert failed == {}
    want = sorted((a, t, json.dumps(s, sort_keys=True)) for a in run["archs"] for t in TECHNIQUES
                  for s in operating_points(t, a, PRESET.protocol))
    assert sorted(_key(r) for r in rows) == want  # each cell exactly once
    # every key has at least one cell on these archs, but ``transfer``: a transfer preset's (tests/test_transfer.py)
    assert {t for _, t, _ in want} == set(TECHNIQUES) - {"transfer"}
    on_disk = results.read_rows(out_dir)
    assert len(on_disk) == len(rows) == len({r["cell_id"] for r in rows})
    assert {r["cell_id"] for r in on_disk} == {r["cell_id"] for r in rows}


def test_every_registry_key_runs_in_smoke_without_a_failed_cell(run):
    _check_every_cell_ran_once(run)


@pytest.mark.slow
def test_every_keras_registry_key_runs_on_every_arch(tf_backend, tmp_path):
    _check_every_cell_ran_once(_smoke_run(tf_backend, tmp_path))


@pytest.mark.slow
def test_every_pytorch_registry_key_runs_on_every_arch(pt_backend, tmp_path):
    _check_every_cell_ran_once(_smoke_run(pt_backend, tmp_path))


def test_every_finetuned_row_records_its_budget(run):
    n_train = PRESET.synthetic_sizes[0]
    recipe = PRESET.recipe
    checked = set()
    for row in run["rows"]:
        if row["technique"] not in FINETUNED:
            assert "budget" not in row, row["cell_id"]  # nothing fine-tuned, nothing to record
            continue
        budget = row["budget"]
        assert BUDGET_KEYS <= budget.keys(), row["cell_id"]
        want = budget_figures(recipe, FINETUNED[row["technique"]], n_train)
        assert {k: budget[k] for k in want} == want, row["cell_id"]
        history = row.get("finetune_history", row.get("history"))
        if history is not None:  # pipeline_prune_int8 keeps its budget, its stages are the pipeline's
            assert sum(h["steps"] for h in history) == budget["steps"], row["cell_id"]
        checked.add(row["technique"])
    assert checked == set(FINETUNED)
    # the smoke preset's promise: every fine-tune is one epoch of 8 steps of 64 over the 512 images
    for row in run["rows"]:
        if row["technique"] in FINETUNED and row["technique"] not in ("kd", "kd_control"):
            assert (row["budget"]["epochs"], row["budget"]["steps"], row["budget"]["images"]) == (1.0, 8, 512)
        elif row["technique"] in ("kd", "kd_control"):  # the teacher's whole recipe
            assert (row["budget"]["epochs"], row["budget"]["steps"], row["budget"]["schedule"]) == (
                recipe.epochs, 16, "baseline")
            assert row["budget"]["peak_lr"] == recipe.lr


def test_structured_techniques_get_one_budget_iterative_rounds_included(run):
    rows = {(r["arch"], r["technique"]): r for r in run["rows"] if r["technique"] in ("filter_uniform",
                                                                                       "filter_iterative")}
    for arch in run["archs"]:
        iterative = rows[(arch, "filter_iterative")]
        assert iterative["budget"]["steps"] == rows[(arch, "filter_uniform")]["budget"]["steps"] == 8
        assert sum(iterative["budget"]["round_steps"]) == iterative["budget"]["steps"]
        assert len(iterative["budget"]["round_steps"]) == PRESET.protocol.iterative_rounds


def test_kd_and_its_control_record_the_recipes_label_smoothing(run):
    rows = [r for r in run["rows"] if r["technique"] in ("kd", "kd_control")]
    assert len(rows) == 2 * len(run["archs"])
    for row in rows:
        assert row["label_smoothing"] == PRESET.recipe.label_smoothing == 0.1
    assert {r["alpha"] for r in rows if r["technique"] == "kd_control"} == {0.0}
    assert {r["alpha"] for r in rows if r["technique"] == "kd"} == {PRESET.protocol.kd_alpha}


def test_int8_rows_carry_their_activation_bits(run):
    if run["rows"][0]["framework"] == "pytorch":
        from pytorch_impl.quantization import activation_bits

        static_bits = activation_bits()  # 8 on a VNNI CPU, else the x86 default's 7
    else:
        static_bits = 8  # TFLite's int8 activations
    int8 = ("int8_static", "int8_qat", "pipeline_kd_filter_int8", "pipeline_prune_int8")
    seen = set()
    for row in run["rows"]:
        if row["technique"] in int8:
            assert row["activation_bits"] == static_bits, row["cell_id"]
        elif row["technique"] == "int8_dynamic":
            assert "activation_bits" in row and row["activation_bits"] is None, row["cell_id"]
        else:
            continue
        seen.add(row["technique"])
    assert seen == {*int8, "int8_dynamic"}


@pytest.mark.slow  # needs the Keras smoke run (see ``run``)
def test_both_suites_record_the_same_budgets(pytorch_run, keras_run):
    torch_rows = {_key(r): r for r in pytorch_run["rows"] if r["arch"] in keras_run["archs"]}
    keras_rows = {_key(r): r for r in keras_run["rows"]}
    assert torch_rows.keys() == keras_rows.keys()
    for key, row in torch_rows.items():
        assert row.get("budget") == keras_rows[key].get("budget"), key


# ---- artifacts and the timing pass over a whole smoke run -------------------------------------------------

QUANTIZED_KERAS = {"int8_dynamic", "int8_static", "int8_qat", "bf16", "pipeline_kd_filter_int8",
                   "pipeline_prune_int8"}


# the rows whose model is TFLite's full-integer int8 (also converted to ONNX) or PyTorch's quantized graphs
KERAS_FULL_INT8 = {"int8_static", "int8_qat", "pipeline_kd_filter_int8", "pipeline_prune_int8"}
PYTORCH_NOT_FLOAT = QUANTIZED_KERAS  # the same techniques: x86 int8, dynamic int8, bf16 autocast


def _expected_runtimes(row) -> set[str]:
    tech = row["technique"]
    if tech == "sensitivity":
        return set()  # an analysis: no model, nothing to time
    if tech == "fixed_point":
        return {"none"}  # simulated: saved, never timed
    if tech == "int8_ort":
        return {"onnxruntime"}  # ORT's own int8 model runs on ORT only
    if row["framework"] == "pytorch":  # every float network is also exported to ONNX
        return {"pytorch-eager"} if tech in PYTORCH_NOT_FLOAT else {"pytorch-eager", "onnxruntime"}
    if tech in KERAS_FULL_INT8:
        return {"litert", "onnxruntime"}
    return {"litert"} if tech in QUANTIZED_KERAS else {"tensorflow", "litert", "onnxruntime"}


def test_every_measured_row_saved_its_model_as_an_artifact(run):
    adir = run["out_dir"] / "artifacts"
    for row in run["rows"]:
        if row["technique"] == "sensitivity":  # an analysis: no model of its own
            assert "artifact" not in row
            continue
        sidecar = json.loads((adir / f"{row['cell_id']}.json").read_text())
        assert sidecar == row["artifact"] and sidecar["widths"] == row["widths"], row["cell_id"]
        assert set(sidecar["runtimes"]) == _expected_runtimes(row), row["cell_id"]
        assert all((adir / e["file"]).stat().st_size > 0 for e in sidecar["runtimes"].values())


def test_the_artifact_is_the_measured_model(run):
    """Reloaded from its files alone, the artifact scores the row's own test accuracy (a Keras float model's
    fp32 flatbuffer within two test images of it: TFLite's kernels round differently)."""
    import torch

    from shared.runner import load_dataset

    test = load_dataset(PRESET).test
    adir = run["out_dir"] / "artifacts"
    checked = 0
    for row in run["rows"]:
        if row["technique"] not in ("baseline", "prune_global", "int8_static", "filter_uniform"):
            continue
        runtimes = row["artifact"]["runtimes"]
        if row["framework"] == "pytorch":
            from pytorch_impl import artifacts as pa
            from pytorch_impl.train import evaluate

            acc = evaluate(pa.load(row["artifact"], adir), test, 128, device=torch.device("cpu"))[1]
            assert acc == pytest.approx(row["test_acc"], abs=1e-9), row["cell_id"]
        else:
            from tensorflow_impl import artifacts as ka, tflite
            from tensorflow_impl.train import evaluate

            lite = tflite.accuracy(ka.runner(row["artifact"], "litert", adir, threads=2).lite, test, 128)
            if "tensorflow" in runtimes:
                keras_model = ka.KerasRunner(adir / runtimes["tensorflow"]["file"]).model
                assert evaluate(keras_model, test, 128)[1] == pytest.approx(row["test_acc"], abs=1e-9)
                assert abs(lite - row["test_acc"]) <= 2 / len(test) + 1e-9, row["cell_id"]
            else:
                assert lite == pytest.approx(row["test_acc"], abs=1e-9), row["cell_id"]
        checked += 1
    assert checked >= 6


def test_the_timing_pass_times_every_artifact_against_its_baseline(run, quiet_meter):
    from shared import timing
    from shared.measure import MeasureProtocol

    framework = run["rows"][0]["framework"]
    if framework == "pytorch":
        from pytorch_impl.suite import timing_backend
    else:
        from tensorflow_impl.suite import timing_backend
    quiet = {"others_cpu": 0.0, "loadavg_1m": 0.0, "study_processes": [], "cpu_count": 2}
    protocol = MeasureProtocol(warmup=1, repeats=3, latency_batch_sizes=(1, 8))
    timing.run_timing(timing_backend(2), run["out_dir"], protocol, log=lambda _: None, load_probe=lambda: quiet)
    timings = timing.read_timings(run["out_dir"])
    for row in run["rows"]:
        for runtime in _expected_runtimes(row) - {"none"}:
            entry = timings[row["cell_id"]]["runtimes"][runtime]
            assert entry["reference"] == row["artifact"]["reference"], row["cell_id"]
            assert entry["speedup_b8"] > 0 and entry["latency_b1_ms_median"] > 0 and not entry["contended"]
            lo, hi = entry["speedup_b8_ci95"]
            assert lo <= entry["speedup_b8"] <= hi
        if row["technique"] == "baseline":
            assert all(e["speedup_b1"] == 1.0 for e in timings[row["cell_id"]]["runtimes"].values())
