"""CPU latency of PyTorch's reduced-precision variants: fp32, static int8, dynamic int8, bf16 autocast.

    python benchmarks/pt_quant_latency.py [--width 1.0] [--archs resnet18 vgg16] [--warmup 3] [--repeats 10]

The variants are built by ``pytorch_impl.quantization`` (the suite's own code path), from random weights:
latency depends on shapes, not values, and int8 is calibrated on random images for the same reason.
Static int8 is timed twice, on channels_last input (what the suite feeds every model) and on contiguous
NCHW input, to show which layout the int8 kernels prefer. The variants are timed in interleaved rounds
(one call of each per round) so that load from other processes on a shared machine hits all of them alike.
A benchmark, not a test: it prints a table and asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from pytorch_impl import models, quantization  # noqa: E402
from shared import specs  # noqa: E402
from shared.measure import interleaved_latency  # noqa: E402
from shared.provenance import cpu_info  # noqa: E402

BATCH_SIZES = (1, 64)
THREADS = 2


def variants(arch: str, width: float) -> dict[str, tuple[torch.nn.Module, bool]]:
    """name -> (model, channels_last input?)."""
    torch.manual_seed(0)
    fp32 = models.build(arch, width=width).eval()
    calibration = [torch.randn(32, 3, specs.INPUT_HW, specs.INPUT_HW) for _ in range(2)]
    int8 = quantization.quantize_static(fp32, "minmax", calibration)
    return {
        "fp32": (fp32, True),
        "int8 static": (int8, True),
        "int8 static, NCHW input": (int8, False),
        "bf16 autocast": (quantization.Autocast(fp32), True),
        "int8 dynamic (linear)": (quantization.quantize_dynamic_linear(fp32), True),
    }


@torch.inference_mode()
def timed(models_: dict, batch_size: int, warmup: int, repeats: int) -> dict[str, dict]:
    x = torch.randn(batch_size, 3, specs.INPUT_HW, specs.INPUT_HW)
    inputs = {True: x.contiguous(memory_format=torch.channels_last), False: x.contiguous()}
    calls = {name: (lambda m=model, cl=channels_last: m(inputs[cl])) for name, (model, channels_last) in models_.items()}
    return interleaved_latency(calls, batch_size, warmup, repeats)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--archs", nargs="+", default=["resnet18", "vgg16"], choices=specs.ARCHS)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args(argv)

    torch.set_num_threads(THREADS)
    info = cpu_info()
    print(f"torch {torch.__version__}, quantized engine {torch.backends.quantized.engine}, {THREADS} threads, "
          f"{info['cpu']} ({info['cpu_count']} cores), flags: {', '.join(info['cpu_flags']) or 'none'}")
    print(f"width {args.width}, warm-up {args.warmup}, {args.repeats} timed rounds; "
          "b1 in ms per image, b64 in ms per batch; speedup = fp32 median / variant median\n")
    header = f"{'arch':9} {'variant':26} {'b1 med':>8} {'b1 p90':>8} {'x fp32':>7} {'b64 med':>9} {'b64 p90':>9} {'x fp32':>7}"
    print(header)
    print("-" * len(header))
    for arch in args.archs:
        models_ = variants(arch, args.width)
        stats = {}
        for bs in BATCH_SIZES:
            for name, s in timed(models_, bs, args.warmup, args.repeats).items():
                stats.setdefault(name, {}).update(s)
        base = stats["fp32"]
        for name, s in stats.items():
            cells = []
            for bs in BATCH_SIZES:
                med, p90 = s[f"latency_b{bs}_ms_median"], s[f"latency_b{bs}_ms_p90"]
                cells.append(f"{med:8.2f} {p90:8.2f} {base[f'latency_b{bs}_ms_median'] / med:6.2f}x"
                             if bs == 1 else
                             f"{med:9.1f} {p90:9.1f} {base[f'latency_b{bs}_ms_median'] / med:6.2f}x")
            print(f"{arch:9} {name:26} {' '.join(cells)}", flush=True)


if __name__ == "__main__":
    main()
