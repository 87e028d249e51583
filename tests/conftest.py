import os

# Idle OpenMP threads sleep instead of spinning: test processes share 2 cores with each other and with
# other work, and spinning threads that fight for cores slowed the suite several-fold here.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

# torch's optimizers import torch._dynamo lazily, which loads triton's native library; loading it after
# TensorFlow (which bundles its own LLVM) segfaults. The suites never share a process (`python -m shared
# run` starts one per framework), but the parity tests do, so triton is loaded first here.
import torch._dynamo  # noqa: F401

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def pt_smoke_ctx(tmp_path_factory):
    """A smoke-preset RunContext whose PyTorch baselines (both archs, seed 0) are trained and saved."""
    from pytorch_impl import techniques
    from shared.presets import get_preset
    from shared.runner import Cell, RunContext

    ctx = RunContext(preset=get_preset("smoke"), out_dir=tmp_path_factory.mktemp("pt_smoke"))
    for arch in ctx.preset.archs:
        techniques.baseline(ctx, Cell("pytorch", arch, "baseline", 0))
    return ctx


@pytest.fixture(scope="session")
def tf_smoke_ctx(tmp_path_factory):
    """A smoke-preset RunContext whose Keras baselines (both archs, seed 0) are trained and saved."""
    import tensorflow_impl  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
    from shared.presets import get_preset
    from shared.runner import Cell, RunContext
    from tensorflow_impl import techniques

    ctx = RunContext(preset=get_preset("smoke"), out_dir=tmp_path_factory.mktemp("tf_smoke"))
    for arch in ctx.preset.archs:
        techniques.baseline(ctx, Cell("keras", arch, "baseline", 0))
    return ctx
