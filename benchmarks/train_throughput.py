"""Training throughput per framework and architecture against this machine's fp32 matmul rate.

    python benchmarks/train_throughput.py [--width 1.0] [--batch 128] [--steps 8]

Each framework runs in its own process through its suite's real ``train()`` (the harness, not a bare
loop), on random CIFAR-shaped images, two epochs of ``--steps`` steps; the second epoch is timed so
tracing and allocator warm-up drop out. Achieved FLOP/s counts a training step as 3x the forward pass
(forward + input gradient + weight gradient), forward = 2 x MACs from the shared spec.
A benchmark, not a test: it prints numbers and asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared import specs  # noqa: E402
from shared.data import synthetic  # noqa: E402
from shared.provenance import cpu_info, versions  # noqa: E402
from shared.recipe import Recipe  # noqa: E402


def matmul_flops(n: int = 2048, repeats: int = 10) -> dict[str, float]:
    """Median fp32 GEMM rate of numpy's BLAS and of torch's (MKL can dispatch slower paths on AMD CPUs)."""
    import numpy as np
    import torch

    out = {}
    for name, a, b in (("numpy", *np.random.default_rng(0).standard_normal((2, n, n), np.float32)),
                       ("torch", torch.randn(n, n), torch.randn(n, n))):
        for _ in range(3):
            a @ b
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        out[name] = 2 * n**3 / sorted(times)[len(times) // 2]
    return out


def worker(framework: str, arch: str, width: float, batch: int, steps: int) -> dict:
    data = synthetic(n_train=batch * steps, n_val=0, n_test=10, seed=0)
    recipe = Recipe(epochs=2, batch_size=batch)
    if framework == "pytorch":
        from pytorch_impl import models
        from pytorch_impl.train import train

        model = models.build(arch, width=width)
    else:
        import tensorflow_impl  # noqa: F401
        from tensorflow_impl import models
        from tensorflow_impl.train import train

        model = models.build(arch, width=width, weight_decay=recipe.weight_decay)
    stats = train(model, data, recipe, seed=0, label=f"[bench {framework} {arch}]")
    return {"framework": framework, "arch": arch, "images_per_s": stats["history"][-1]["images_per_s"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--framework", action="append", choices=("pytorch", "keras"))
    ap.add_argument("--arch", action="append", choices=specs.ARCHS)
    ap.add_argument("--worker", nargs=2, metavar=("FRAMEWORK", "ARCH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.width, args.batch, args.steps)))
        return
    info = cpu_info()
    print(f"cpu: {info['cpu']} ({info['cpu_count']} cores, flags {' '.join(info['cpu_flags'])}); "
          f"torch {versions().get('torch')}, tensorflow {versions().get('tensorflow')}")
    rates = matmul_flops()
    peak = max(rates.values())
    print("fp32 matmul 2048^3: " + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in rates.items())
          + f" GFLOP/s; reference = the faster, {peak / 1e9:.0f} GFLOP/s")
    print(f"width {args.width}, batch {args.batch}, {args.steps} timed steps")
    print(f"{'framework':10} {'arch':9} {'img/s':>8} {'GFLOP/s':>8} {'ratio':>6}")
    for framework in args.framework or ("pytorch", "keras"):
        for arch in args.arch or specs.ARCHS:
            cmd = [sys.executable, __file__, "--worker", framework, arch, "--width", str(args.width),
                   "--batch", str(args.batch), "--steps", str(args.steps)]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            if out.returncode:
                print(f"{framework:10} {arch:9} failed:\n{out.stderr[-2000:]}")
                continue
            res = json.loads(out.stdout.strip().splitlines()[-1])
            macs = specs.count_macs(specs.plan(arch, width=args.width))
            achieved = res["images_per_s"] * 3 * 2 * macs
            print(f"{framework:10} {arch:9} {res['images_per_s']:8.1f} {achieved / 1e9:8.0f} {achieved / peak:6.2f}", flush=True)


if __name__ == "__main__":
    main()
