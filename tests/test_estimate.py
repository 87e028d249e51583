"""The plan's time estimate: a dry run of the real drivers over the counting backend, priced by a
calibration. Golden values from a stated calibration; the calibration itself is measured by the suites."""
import json

import pytest

from shared import cli, specs
from shared.estimate import CountingBackend, estimate, load_calibration, sized_dataset
from shared.presets import get_preset
from shared.runner import plan_cells

SMOKE = get_preset("smoke")
QUICK = get_preset("quick")


def stated(framework="pytorch", preset=SMOKE, step=0.01, per_call=0.5, image=1e-4):
    """A hand-written calibration: per_call + step per training step at the preset width, 60% of it at
    the student width; images evaluated at ``image`` s; fixed conversion and artifact costs."""
    nets = {}
    for arch in preset.archs:
        teacher = specs.count_macs(specs.plan(arch, width=preset.width))
        student = specs.count_macs(specs.plan(arch, width=preset.width * preset.protocol.student_width_factor))
        nets[arch] = [
            {"width": preset.width / 2, "macs": student, "first_eval_s": 0.0,
             "train_step": {"per_call_s": per_call, "per_unit_s": 0.6 * step},
             "eval_image": {"per_call_s": 0.0, "per_unit_s": 0.6 * image}},
            {"width": preset.width, "macs": teacher, "first_eval_s": 0.0,
             "train_step": {"per_call_s": per_call, "per_unit_s": step},
             "eval_image": {"per_call_s": 0.0, "per_unit_s": image}},
        ]
    int8 = {a: {"convert_s": 2.0, "eval_image_s": 2 * image, "prepare_qat_s": 1.0,
                "qat_step": {"per_call_s": per_call, "per_unit_s": 3 * step},
                "artifact_float_s": 0.25, "artifact_int8_s": 0.125} for a in preset.archs}
    return {"framework": framework, "preset": preset.name, "networks": nets, "int8": int8}


def test_a_baseline_costs_its_steps_its_evaluations_and_its_artifact():
    cells = plan_cells("pytorch", SMOKE, ("baseline",), ("vgg16",))
    (seconds,) = estimate(SMOKE, stated(), cells, lambda c: True).values()
    n_train, n_val, n_test = SMOKE.synthetic_sizes
    steps = SMOKE.recipe.epochs * (n_train // SMOKE.recipe.batch_size)
    want = (0.5 + 0.01 * steps  # the training call
            + SMOKE.recipe.epochs * n_val * 1e-4  # validation after every epoch
            + (n_test + n_val) * 1e-4  # the row's test and validation accuracy
            + 0.25)  # the artifact
    assert seconds == pytest.approx(want)


def test_int8_static_costs_calibration_conversion_quantized_evaluation_and_artifact():
    cells = plan_cells("pytorch", SMOKE, ("baseline", "int8_static"), ("vgg16",))
    cost = estimate(SMOKE, stated(), cells, lambda c: c.technique == "int8_static")
    _, n_val, n_test = SMOKE.synthetic_sizes
    for cell in cells[1:]:
        n_cal = cell.settings["calibration_images"]
        want = n_cal * 1e-4 + 2.0 + (n_test + n_val) * 2e-4 + n_test * 1e-4 + 0.125  # + the fp32 test accuracy
        assert cost[cell.id] == pytest.approx(want)
    assert len(cost) == len(cells) - 1  # only counted cells are reported


def test_a_pruned_network_is_priced_between_the_calibrated_ones_by_macs():
    backend = CountingBackend(stated())
    model = backend.build("vgg16", width=SMOKE.width)
    from shared.filter_rule import uniform_layer_ratios

    pruned, _ = backend.prune_filters(model, uniform_layer_ratios("vgg16", 0.25))
    lo, hi = (p["macs"] for p in stated()["networks"]["vgg16"])
    assert lo < pruned.macs < hi  # 25% of the filters go; the student has half of every width
    full, half = backend._interp("vgg16", hi, "train_step", 10), backend._interp("vgg16", lo, "train_step", 10)
    assert full == pytest.approx(0.5 + 0.1) and half == pytest.approx(0.5 + 0.06)
    t = (pruned.macs - lo) / (hi - lo)
    assert backend._interp("vgg16", pruned.macs, "train_step", 10) == pytest.approx(max(half + t * (full - half), 0))


def test_every_new_model_pays_its_first_training_call_once():
    """A fine-tune trains a model its cell has just built: the calibration's first_train_s (the smallest of the
    calibrated networks', the first one measured also paying the process's warm-up) is added once per model."""
    cal = stated()
    for i, net in enumerate(cal["networks"]["vgg16"]):
        net["first_train_s"] = 3.0 + 4.0 * i
    cells = plan_cells("pytorch", SMOKE, ("baseline",), ("vgg16",))
    (seconds,) = estimate(SMOKE, cal, cells, lambda c: True).values()
    (without,) = estimate(SMOKE, stated(), cells, lambda c: True).values()
    assert seconds - without == pytest.approx(3.0)
    backend = CountingBackend(cal)
    model = backend.build("vgg16", width=SMOKE.width)
    data = sized_dataset(SMOKE)
    costs = []
    for m in (model, model, backend.build("vgg16", width=SMOKE.width)):
        before = backend.seconds
        backend.train(m, data, SMOKE.recipe, 0, label="x", steps=10)
        costs.append(backend.seconds - before)
    assert costs[0] - costs[1] == pytest.approx(3.0) and costs[2] == pytest.approx(costs[0])


def test_building_a_network_and_setting_its_weights_are_priced_per_model():
    cal = stated()
    for net in cal["networks"]["vgg16"]:
        net["build_s"], net["import_state_s"] = 0.5 + net["width"] * 4, 0.25
    backend = CountingBackend(cal)
    model = backend.build("vgg16", width=SMOKE.width)
    mean_build = 0.5 + 4 * (SMOKE.width / 2 + SMOKE.width) / 2
    assert backend.seconds == pytest.approx(mean_build)
    backend.import_state(model, backend.export_state(model))
    assert backend.seconds == pytest.approx(mean_build + 0.25)
    assert CountingBackend(stated()).build("vgg16", width=SMOKE.width).arch == "vgg16"  # older files: free


@pytest.mark.parametrize("framework", ["pytorch", "keras"])
def test_every_quick_cell_dry_runs_through_the_real_drivers(framework):
    cells = plan_cells(framework, QUICK)
    cost = estimate(QUICK, stated(framework, QUICK), cells, lambda c: True)
    assert len(cost) == len(cells) == 189 and all(s > 0 for s in cost.values())
    by = {c.technique: cost[c.id] for c in cells}
    # the protocol's shape: a baseline trains 4 epochs, a KD student as long plus the teacher's forward
    # passes, a one-shot prune fine-tunes 2 epochs over 10k images, a conversion trains nothing
    assert by["kd"] > by["kd_control"] > by["prune_global"] > by["int8_dynamic"]
    assert by["baseline"] > by["prune_global"]


def test_plan_prints_each_cells_estimate_and_the_total(tmp_path, capsys):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(stated()))
    assert cli.main(["plan", "--preset", "smoke", "--framework", "pytorch_impl", "--calibration", str(path),
                     "--arch", "vgg16", "--technique", "int8_dynamic"]) == 0
    out = capsys.readouterr().out
    # the baseline is dry-run (the cell loads its checkpoint) but not counted: it is not in the plan
    assert "pytorch_impl: 1 cells, about 0m02s to run" in out
    assert "[todo] vgg16/int8_dynamic s0  ~0m02s" in out
    assert "estimated wall time on this machine: 0m02s" in out


def test_a_file_that_is_not_a_calibration_is_refused_with_the_command_that_writes_one(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="python -m pytorch_impl calibrate --preset P"):
        load_calibration(path)


@pytest.mark.slow  # ~40 s: the calibration's step counts are sized for real presets
def test_the_pytorch_calibration_measures_every_network_the_estimate_prices(pt_backend):
    from shared.estimate import calibrate

    cal = calibrate(pt_backend, SMOKE, log=lambda _: None)
    assert cal["framework"] == "pytorch" and set(cal["networks"]) == set(SMOKE.archs) == set(cal["int8"])
    for arch, nets in cal["networks"].items():
        widths = [n["width"] for n in nets]
        assert widths == [SMOKE.width * SMOKE.protocol.student_width_factor, SMOKE.width]
        assert [n["macs"] for n in nets] == [specs.count_macs(specs.plan(arch, width=w)) for w in widths]
        assert all(n["train_step"]["per_unit_s"] > 0 and n["eval_image"]["per_unit_s"] > 0 for n in nets)
        assert all(n["first_train_s"] >= 0 and n["first_eval_s"] >= 0 for n in nets)
        assert all(n["build_s"] > 0 and n["import_state_s"] > 0 for n in nets)
        int8 = cal["int8"][arch]
        assert int8["convert_s"] > 0 and int8["eval_image_s"] > 0 and int8["artifact_float_s"] > 0
    json.dumps(cal)  # what --calibration reads back
