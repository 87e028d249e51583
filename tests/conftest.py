import os

# Idle OpenMP threads sleep instead of spinning: test processes share 2 cores with each other and with
# other work, and spinning threads that fight for cores slowed the suite several-fold here.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

# torch's optimizers import torch._dynamo lazily, which loads triton's native library; loading it after
# TensorFlow (which bundles its own LLVM) segfaults. The suites never share a process (`python -m shared
# run` starts one per framework), but the parity tests do, so triton is loaded first here.
import torch._dynamo  # noqa: F401

import pytest  # noqa: E402


def _smoke_ctx(backend, out_dir):
    from shared.drivers.baseline import baseline
    from shared.presets import get_preset
    from shared.runner import Cell, RunContext

    ctx = RunContext(preset=get_preset("smoke"), out_dir=out_dir)
    for arch in ctx.preset.archs:
        baseline(backend, ctx, Cell(backend.name, arch, "baseline", 0))
    return ctx


@pytest.fixture(scope="session")
def pt_backend():
    from pytorch_impl.backend import TorchBackend

    return TorchBackend()


@pytest.fixture(scope="session")
def tf_backend():
    import tensorflow_impl  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
    from shared.presets import get_preset
    from tensorflow_impl.backend import KerasBackend

    return KerasBackend(get_preset("smoke").recipe.weight_decay)


@pytest.fixture(scope="session")
def pt_smoke_ctx(pt_backend, tmp_path_factory):
    """A smoke-preset RunContext whose PyTorch baselines (both archs, seed 0) are trained and saved."""
    return _smoke_ctx(pt_backend, tmp_path_factory.mktemp("pt_smoke"))


@pytest.fixture(scope="session")
def tf_smoke_ctx(tf_backend, tmp_path_factory):
    """A smoke-preset RunContext whose Keras baselines (both archs, seed 0) are trained and saved."""
    return _smoke_ctx(tf_backend, tmp_path_factory.mktemp("tf_smoke"))


class _QuietMeter:
    """A CpuMeter that reports a quiet machine: for tests about what the timing pass times, not about the
    load check (tests/test_timing.py checks the real meter against a real second process)."""

    def start(self):
        return self

    def stop(self):
        return 0.0


@pytest.fixture
def quiet_meter(monkeypatch):
    from shared import timing

    monkeypatch.setattr(timing, "CpuMeter", _QuietMeter)
