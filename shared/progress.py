"""Progress display for long work: a live line on a terminal, one line per epoch otherwise (CI, logs)."""
from __future__ import annotations

import sys
import time


class EpochProgress:
    def __init__(self, label: str, epochs: int, steps_per_epoch: int, stream=None):
        self.label, self.epochs, self.steps = label, epochs, steps_per_epoch
        self.stream = stream or sys.stderr
        self.live = getattr(self.stream, "isatty", lambda: False)()
        self._last = 0.0

    def step(self, epoch: int, step: int, loss: float | None = None) -> None:
        now = time.perf_counter()
        if not self.live or now - self._last < 0.25:
            return
        self._last = now
        loss_txt = f" loss {loss:.3f}" if loss is not None else ""
        self.stream.write(f"\r{self.label} epoch {epoch + 1}/{self.epochs} step {step + 1}/{self.steps}{loss_txt}\033[K")
        self.stream.flush()

    def epoch_end(self, row: dict) -> None:
        val = f" val_acc {row['val_acc'] * 100:5.2f}%" if row.get("val_acc") is not None else ""
        line = (
            f"{self.label} epoch {row['epoch']}/{self.epochs} loss {row['train_loss']:.3f} "
            f"acc {row['train_acc'] * 100:5.2f}%{val} lr {row['lr']:.4f} "
            f"{row['epoch_time_s']:.1f}s {row['images_per_s']:.0f} img/s"
        )
        self.stream.write(("\r" if self.live else "") + line + ("\033[K\n" if self.live else "\n"))
        self.stream.flush()
