"""Does the deeper, dropout-regularised CIFAR CNN beat the small one given a longer schedule? The seed's
network went from ~62% to ~74%; the quick preset's 4 epochs over 10,000 images do not show it (dropout
costs 6 points at width 0.25, and gains 0.3 at width 1).

    CIFAR10_DIR=... python benchmarks/cnn_dropout_schedule.py [--epochs 15] [--width 1] [--seed 0 ...]
        [--out reports/cnn_dropout_schedule]

Trains both baselines through the PyTorch suite (its recipe: SGD Nesterov, label smoothing 0.1, crop + flip,
the quick preset's LR shape) on the whole 45,000-image training pool for ``--epochs``; the rows land in
``--out`` like any run's (resumable; the configuration fingerprint names the schedule). Prints validation and
test accuracy per architecture and seed.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--seed", type=int, action="append", default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "cnn_dropout_schedule")
    args = parser.parse_args()

    from pytorch_impl import suite
    from shared.presets import fingerprint, get_preset

    quick = get_preset("quick")
    preset = replace(quick, width=args.width, train_subset=None, archs=("cnn", "cnn_dropout"),
                     seeds=tuple(args.seed or (0,)), recipe=replace(quick.recipe, epochs=args.epochs))
    command = " ".join([Path(sys.executable).name, *sys.argv])
    suite.run(preset, args.out, techniques=["baseline"], command=command)
    from shared.results import read_rows

    rows = [r for r in read_rows(args.out) if r["fingerprint"] == fingerprint(preset) and r["status"] == "ok"]
    for r in sorted(rows, key=lambda r: (r["arch"], r["seed"])):
        print(f"{r['arch']:12s} s{r['seed']}: val {100 * r['val_acc']:.2f}%  test {100 * r['test_acc']:.2f}%  "
              f"({r['train_time_s'] / 60:.1f} min, {args.epochs} epochs, width {args.width:g}, "
              f"configuration {r['fingerprint']})")


if __name__ == "__main__":
    main()
