"""CPU latency of Keras' TFLite variants on LiteRT: fp32, dynamic-range int8, full int8, float16.

    python benchmarks/tflite_latency.py [--width 1.0] [--archs resnet18 vgg16] [--warmup 5] [--repeats 20]
    python benchmarks/tflite_latency.py --width 0.25 --archs resnet18 \\
        --checkpoint reports/quick/checkpoints/keras__resnet18__baseline__s0.safetensors   # + test accuracy

The flatbuffers come from ``tensorflow_impl.tflite.convert`` (the suite's own conversion) and run on the
LiteRT interpreter with the suite's thread count, under three kernel configurations, so that a variant
that is slow can be traced to its kernels:

- ``xnnpack``: the interpreter's default delegate (what every suite row is measured with);
- ``xnnpack latest``: the same delegate with ``experimental_default_delegate_latest_features`` (newer
  XNNPACK paths, e.g. for dynamic-range ops, that LiteRT does not enable by default);
- ``builtin``: no delegate: TFLite's own kernels (ruy GEMM for float and int8, hybrid kernels for
  dynamic range).

Without ``--checkpoint`` the weights are random (latency depends on shapes, not values) and int8 is
calibrated on random images; with it, the checkpoint's weights are used, int8 is calibrated on the first
1000 validation images (as the suite does) and every variant's CIFAR-10 test accuracy is printed.
Each variant is timed alone (one interpreter alive at a time; see ``timed``).
A benchmark, not a test: it prints a table and asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tensorflow_impl  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from ai_edge_litert import __version__ as litert_version  # noqa: E402
from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: E402

from shared import specs  # noqa: E402
from shared import state as neutral  # noqa: E402
from shared.measure import interleaved_latency  # noqa: E402
from shared.provenance import cpu_info  # noqa: E402
from tensorflow_impl import models, tflite  # noqa: E402
from tensorflow_impl.weights import import_state  # noqa: E402

BATCH_SIZES = (1, 64)
THREADS = 2
CALIBRATION_IMAGES = 1000
WARMUP_S = 1.0
KERNELS = {
    "xnnpack": {},
    "xnnpack latest": {"experimental_default_delegate_latest_features": True},
    "builtin": {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES},
}


class Runner(tflite.LiteModel):
    """``tflite.LiteModel`` on a chosen kernel configuration."""

    def __init__(self, content: bytes, threads: int, **interpreter_kwargs):
        self.interpreter = Interpreter(model_content=content, num_threads=threads, **interpreter_kwargs)
        self.input = self.interpreter.get_input_details()[0]
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self.batch = None


def calibration(dataset) -> list[np.ndarray]:
    if dataset is None:
        rng = np.random.default_rng(0)
        return [rng.standard_normal((32, specs.INPUT_HW, specs.INPUT_HW, 3), np.float32) for _ in range(4)]
    from shared.drivers.common import calibration_batches

    return list(calibration_batches(dataset.val, CALIBRATION_IMAGES, 100))


def flatbuffers(arch: str, width: float, checkpoint, dataset) -> dict[str, bytes]:
    keras.utils.set_random_seed(0)
    model = models.build(arch, width=width)
    if checkpoint:
        import_state(model, neutral.load(checkpoint))
    return {"fp32": tflite.convert(model, "fp32"), "dynamic": tflite.convert(model, "dynamic"),
            "int8": tflite.convert(model, "int8", representative=calibration(dataset)),
            "fp16": tflite.convert(model, "fp16")}


def timed(content: bytes, kernels: str, batch_size: int, warmup: int, repeats: int) -> dict[str, float]:
    """One variant alone: its interpreter is the only one alive while it is timed. (Interleaving several
    interpreters, as the PyTorch benchmark interleaves modules, let the idle XNNPACK thread pools of the
    others spin on the same 2 cores: a width-0.25 ResNet-18's int8 b1 read 0.85 ms instead of 0.13.)"""
    runner = Runner(content, THREADS, **KERNELS[kernels])
    x = np.random.default_rng(0).standard_normal((batch_size, specs.INPUT_HW, specs.INPUT_HW, 3), np.float32)
    prepared = runner.prepare(x)  # int8 models are fed int8
    # warm up for at least a second as well: the first variant timed right after the conversions read 2x
    # slow with a few warm-up calls (12.1 ms instead of 6.5 for a full-width fp32 ResNet-18 at batch 1)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < WARMUP_S:
        runner.run(prepared)
    return interleaved_latency({"variant": lambda: runner.run(prepared)}, batch_size, warmup, repeats)["variant"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--archs", nargs="+", default=["resnet18", "vgg16"], choices=specs.ARCHS)
    ap.add_argument("--checkpoint", type=Path, help="neutral-state baseline to load (one arch); adds test accuracy")
    ap.add_argument("--data-dir", default=None, help="cifar-10-batches-py (default: $CIFAR10_DIR)")
    ap.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=list(KERNELS))
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    if args.checkpoint and len(args.archs) != 1:
        ap.error("--checkpoint holds one architecture: pass exactly one --archs")
    dataset = None
    if args.checkpoint:
        from shared.data import load_cifar10

        dataset = load_cifar10(args.data_dir)

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    info = cpu_info()
    print(f"tensorflow {tf.__version__}, ai-edge-litert {litert_version}, {THREADS} threads, {info['cpu']} "
          f"({info['cpu_count']} cores), flags: {', '.join(info['cpu_flags']) or 'none'}")
    print(f"width {args.width}, {'checkpoint ' + str(args.checkpoint) if args.checkpoint else 'random weights'}, "
          f"warm-up {args.warmup}, {args.repeats} timed rounds; b1 in ms per image, b64 in ms per batch; "
          "speedup = fp32 median on the same kernels / variant median\n")
    header = (f"{'arch':9} {'kernels':15} {'variant':8} {'b1 med':>8} {'b1 p90':>8} {'x fp32':>7} "
              f"{'b64 med':>9} {'b64 p90':>9} {'x fp32':>7} {'KiB':>7}" + (f" {'test acc':>8}" if dataset else ""))
    print(header)
    print("-" * len(header))
    for arch in args.archs:
        contents = flatbuffers(arch, args.width, args.checkpoint, dataset)
        for kernels in args.kernels:
            stats = {name: {k: v for bs in BATCH_SIZES for k, v in timed(c, kernels, bs, args.warmup, args.repeats).items()}
                     for name, c in contents.items()}
            base = stats["fp32"]
            for name, s in stats.items():
                b1, b64 = s["latency_b1_ms_median"], s["latency_b64_ms_median"]
                line = (f"{arch:9} {kernels:15} {name:8} {b1:8.2f} {s['latency_b1_ms_p90']:8.2f} "
                        f"{base['latency_b1_ms_median'] / b1:6.2f}x {b64:9.1f} {s['latency_b64_ms_p90']:9.1f} "
                        f"{base['latency_b64_ms_median'] / b64:6.2f}x {len(contents[name]) / 1024:7.0f}")
                if dataset is not None and kernels == "xnnpack":
                    accuracy = tflite.accuracy(Runner(contents[name], THREADS), dataset.test, 100)
                    line += f" {accuracy * 100:7.2f}%"
                print(line, flush=True)


if __name__ == "__main__":
    main()
