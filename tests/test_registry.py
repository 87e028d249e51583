"""One technique registry: the keys live in shared/, and both suites register exactly those keys."""
import pytest

import tensorflow_impl  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from pytorch_impl import techniques as pt_techniques
from shared import results
from shared.presets import get_preset
from shared.protocols import CompressionProtocol
from shared.runner import run_suite
from shared.techniques import TECHNIQUES, operating_points
from tensorflow_impl import techniques as tf_techniques


def test_both_suites_register_exactly_the_shared_keys():
    assert tuple(pt_techniques.REGISTRY) == TECHNIQUES
    assert tuple(tf_techniques.REGISTRY) == TECHNIQUES


def test_operating_points_come_from_the_protocol():
    p = CompressionProtocol(sparsities=(0.5, 0.9), calibration_sizes=(8, 16), observers=("minmax",))
    assert operating_points("prune_global", "vgg16", p) == [{"sparsity": 0.5}, {"sparsity": 0.9}]
    assert operating_points("int8_static", "resnet18", p) == [
        {"observer": "minmax", "calibration_images": 8}, {"observer": "minmax", "calibration_images": 16}]
    assert operating_points("filter_li_a", "resnet18", p) == []  # Li et al.'s pruned-A is a VGG-16 config
    assert operating_points("baseline", "vgg16", p) == [{}]
    with pytest.raises(ValueError, match="unknown technique 'prune_magic'"):
        operating_points("prune_magic", "vgg16", p)


def _every_key_runs_in_smoke(framework: str, registry: dict, out_dir) -> None:
    preset = get_preset("smoke")
    rows = run_suite(framework, registry, preset, out_dir, log=lambda msg: None)
    failed = {r["cell_id"]: r["error"] for r in rows if r["status"] != "ok"}
    assert failed == {}
    ran = {(r["arch"], r["technique"]) for r in rows}
    for arch in preset.archs:
        for t in TECHNIQUES:
            if operating_points(t, arch, preset.protocol):
                assert (arch, t) in ran
    assert len(results.read_rows(out_dir)) == len(rows)


def test_every_pytorch_registry_key_runs_in_smoke(tmp_path):
    _every_key_runs_in_smoke("pytorch", pt_techniques.REGISTRY, tmp_path)


def test_every_keras_registry_key_runs_in_smoke(tmp_path):
    _every_key_runs_in_smoke("keras", tf_techniques.REGISTRY, tmp_path)
