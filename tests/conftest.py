# torch's optimizers import torch._dynamo lazily, which loads triton's native library; loading it after
# TensorFlow (which bundles its own LLVM) segfaults. The suites never share a process (`python -m shared
# run` starts one per framework), but the parity tests do, so triton is loaded first here.
import torch._dynamo  # noqa: F401
