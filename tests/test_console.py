"""The console: quiet by default (known-harmless library noise filtered in one place), verbose on request."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from shared import console

ROOT = Path(__file__).resolve().parent.parent


def test_quiet_native_hides_stderr_writes_and_replays_them_on_error(capfd):
    with console.quiet_native():
        os.write(2, b"native noise\n")
    assert "native noise" not in capfd.readouterr().err
    with pytest.raises(RuntimeError, match="boom"):
        with console.quiet_native():
            os.write(2, b"why it failed\n")
            raise RuntimeError("boom")
    assert "why it failed" in capfd.readouterr().err


def test_configure_filters_only_the_listed_warnings(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        console.configure(False)
        warnings.warn("Statistics for quantized inputs were expected, but not specified", UserWarning)
        warnings.warn("a warning that matters", UserWarning)
    assert [str(w.message) for w in seen] == ["a warning that matters"]
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert all(why for _, _, why in console.HARMLESS_WARNINGS)  # each filter says why it is harmless


def test_a_keras_process_starts_without_tensorflow_noise():
    code = ("from shared import console\nconsole.configure(False)\nwith console.quiet_native():\n"
            "    import tensorflow_impl.suite\nimport tensorflow as tf\nprint(int(tf.constant(2) * 2))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "4", out.stderr
    assert "cuInit" not in out.stderr and "oneDNN" not in out.stderr and "cudart" not in out.stderr, out.stderr


def test_list_and_plan_say_what_a_run_will_do(tmp_path, capsys):
    from shared import cli, results
    from shared.presets import fingerprint, get_preset
    from shared.runner import plan_cells

    assert cli.main(["list"]) == 0
    listing = capsys.readouterr().out
    assert f"quick  data=cifar10 width=0.25 epochs=4 batch=128 lr=0.1 seeds=[0]" in listing
    assert "quick  sparsity=0.5 | sparsity=0.75 | sparsity=0.875 | sparsity=0.9375 | sparsity=0.96875" in listing
    assert "filter_li_a" in listing and "resnet18: (not applicable)" in listing

    quick = get_preset("quick")
    first = plan_cells("pytorch", quick)[0]
    results.write_row(tmp_path, {"cell_id": first.id, "status": "ok"})
    assert cli.main(["plan", "--preset", "quick", "--out", str(tmp_path), "--no-estimate"]) == 0
    plan = capsys.readouterr().out
    n = len(plan_cells("pytorch", quick)) + len(plan_cells("keras", quick))
    assert f"pytorch_impl: {n // 2} cells, 1 already finished in {tmp_path}" in plan
    assert "[done] vgg16/baseline s0" in plan and "[todo] vgg16/int8_static (calibration_images=" in plan
    assert plan.strip().endswith(f"total: {n} cells, {n - 1} to run (preset quick, configuration {fingerprint(quick)})")
