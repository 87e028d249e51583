"""PyTorch compiled by Inductor: the runtime of PyTorch's int8 rows and of its float rows' compiled timings.

Why freezing: ``torch._inductor.config.freezing`` lets Inductor treat weights as constants and prepack them
for oneDNN. Without it the torchao int8 ResNet-18 ran at 9.72 ms at batch 1 here, no faster than eager fp32
(7.78 ms); with it, 1.38 ms (issue 15's measurement). Freezing only applies to inference, so every call runs
under ``inference_mode``. It is set process-wide when a model is compiled: nothing in the suites compiles a model
that trains.

Why ``dynamic=True`` and two warm-up calls: one graph serves every batch size of at least 2 (the batch is
symbolic), and batch 1, which dynamo specialises, gets its own. Both are compiled before anything is timed,
so no compilation (or its compiler subprocesses) ever falls inside a timed call.
"""
from __future__ import annotations

import itertools
import types

import torch
import torch._dynamo.config as dynamo_config
import torch._inductor.config as inductor_config
from torch import nn

RUNTIME = "pytorch-inductor"
WARM_BATCHES = (1, 2)  # batch 1 (specialised by dynamo) and one symbolic batch for every larger size
_ids = itertools.count()


def _own_forward(module: nn.Module):
    """``module.forward`` bound through a code object of its own. Dynamo caches compiled graphs on the code
    object, so every instance of one class shares a cache of at most ``recompile_limit`` (8) entries: the
    fourth ResNet compiled in one process (two graphs each) silently ran eagerly (measured). A distinct code
    object per model gives each its own cache, and no model's guards are checked on another's calls."""
    fn = type(module).forward
    code = fn.__code__.replace(co_name=f"{fn.__code__.co_name}_compiled_{next(_ids)}")
    return types.MethodType(types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__,
                                               fn.__closure__), module)


class Compiled(nn.Module):
    """``module`` compiled with Inductor (freezing, dynamic batch), called in inference.

    The compiled callable is kept outside the module tree, so ``state_dict``/``to`` see ``module`` once.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        inductor_config.freezing = True
        dynamo_config.fail_on_recompile_limit_hit = True  # never fall back to eager without saying so
        module.eval()  # an exported program's patched eval() returns None, so not chained
        self.module = module
        object.__setattr__(self, "_compiled", torch.compile(_own_forward(module), dynamic=True))

    def train(self, mode: bool = True) -> "Compiled":
        # inference only (freezing): the compiled module stays in eval mode whatever evaluate() toggles
        self.training = mode
        return self

    def forward(self, x):
        # one grad mode for every call (evaluation runs under no_grad, the timing pass under inference
        # mode): dynamo guards on it, and a mismatch would recompile inside a timed round
        with torch.inference_mode():
            return self._compiled(x)

    def warm_up(self, example: torch.Tensor) -> "Compiled":
        """Compile every graph the runtime will use, from one example input (its batch is resized)."""
        for b in WARM_BATCHES:
            self(example[:1].expand(b, *example.shape[1:]).contiguous(memory_format=torch.channels_last))
        return self


# The int8 kernels oneDNN runs for torchao's X86InductorQuantizer graphs once Inductor lowers them
# (``torch.ops.onednn.qconv_pointwise`` / ``qconv2d_pointwise`` and ``qlinear_pointwise``, with fused
# binary post-ops for the residual add).
INT8_KERNELS = ("onednn.qconv", "onednn.qlinear")


def int8_kernel_calls(code: str) -> int:
    return sum(code.count(k) for k in INT8_KERNELS)
