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
