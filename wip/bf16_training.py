"""fp32 vs bf16 training throughput, per framework and architecture, interleaved.

    python benchmarks/bf16_training.py [--width 1.0 --width 0.25] [--framework pytorch] [--arch resnet18]
        [--rounds 2] [--steps 8] [--batch 128] [--json reports/bf16_training/<host>.json]

Each measurement is a fresh process running its suite's real ``train()`` (``benchmarks/train_throughput``'s
worker: random CIFAR-shaped images, two epochs of ``--steps`` steps, the second timed) with the recipe's
``precision`` set to ``fp32`` or ``bf16``. The two precisions alternate within every round (fp32, bf16, fp32,
bf16, ...) so drift of the machine hits both alike; the ratio is of the medians over rounds. Run it on a
quiet machine: another process's threads on the same cores slow PyTorch several-fold. A benchmark, not a
test: it prints numbers and asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared import specs  # noqa: E402
from shared.precision import cpu_has_native_bf16  # noqa: E402
from shared.provenance import cpu_info, git_commit, versions  # noqa: E402

WORKER = ROOT / "benchmarks" / "train_throughput.py"


def measure(framework: str, arch: str, width: float, precision: str, batch: int, steps: int) -> float:
    cmd = [sys.executable, str(WORKER), "--worker", framework, arch, "--width", str(width), "--batch", str(batch),
           "--steps", str(steps), "--precision", precision]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if out.returncode:
        raise RuntimeError(f"{framework} {arch} {precision} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=float, action="append")
    ap.add_argument("--framework", action="append", choices=("pytorch", "keras"))
    ap.add_argument("--arch", action="append", choices=specs.ARCHS)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    info = cpu_info()
    print(f"cpu: {info['cpu']} ({info['cpu_count']} cores, native bf16: {cpu_has_native_bf16()}, flags "
          f"{' '.join(info['cpu_flags'])}); torch {versions().get('torch')}, tensorflow {versions().get('tensorflow')}; "
          f"batch {args.batch}, {args.steps} timed steps, {args.rounds} interleaved rounds", flush=True)
    print(f"{'framework':10} {'arch':9} {'width':>5} {'fp32 img/s':>11} {'bf16 img/s':>11} {'bf16/fp32':>9}", flush=True)
    results = []
    for framework in args.framework or ("pytorch", "keras"):
        for arch in args.arch or ("resnet18", "vgg16"):
            for width in args.width or (1.0, 0.25):
                runs = {"fp32": [], "bf16": []}
                for _ in range(args.rounds):
                    for precision in runs:
                        runs[precision].append(measure(framework, arch, width, precision, args.batch, args.steps))
                fp32, bf16 = (statistics.median(runs[p]) for p in ("fp32", "bf16"))
                results.append({"framework": framework, "arch": arch, "width": width, "fp32_images_per_s": runs["fp32"],
                                "bf16_images_per_s": runs["bf16"], "ratio": bf16 / fp32})
                print(f"{framework:10} {arch:9} {width:5g} {fp32:11.1f} {bf16:11.1f} {bf16 / fp32:8.2f}x", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "git_commit": git_commit(),
                                         "cpu": info, "versions": versions(), "batch": args.batch, "steps": args.steps,
                                         "rounds": args.rounds, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
