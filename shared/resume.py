"""Resume inside a long training: every finished epoch of a cell's training is checkpointed, and a rerun of
the cell continues after the last one instead of starting again.

A cell may train more than once (filter_iterative fine-tunes once per round, a pipeline prunes then
fine-tunes then quantizes); its trainings are numbered in call order, which the drivers make deterministic.
Each training's state lives in ``OUT/checkpoints/partial/<cell id>/``:

- ``t<k>.e<epoch>.safetensors``: the backend's arrays (every model variable, the optimizer's buffers, the
  framework's RNG state, a step hook's masks), named by the backend; safetensors, so a resume never unpickles.
- ``t<k>.json``: the typed record (epochs done, the history so far, the training time, the hook's schedule)
  and the training's signature; written last, so it is the commit point: a crash between the two files
  leaves the previous epoch's record pointing at the previous epoch's arrays.

The data order and augmentation are functions of (seed, epoch) (``shared.recipe``), so nothing of the
input pipeline needs saving beyond the epoch. A record whose signature differs (another recipe, budget or
seed) is ignored with a warning. The runner removes a cell's directory once its row is written.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

# Fault injection for the resume tests: the process SIGKILLs itself right after committing this epoch.
KILL_AFTER_EPOCH_ENV = "COMPRESSION_STUDY_KILL_AFTER_EPOCH"


class TrainingCheckpoint:
    """The per-epoch state of one training call (the ``k``-th of its cell)."""

    def __init__(self, directory: Path, index: int, signature: dict, log: Callable[[str], None] = print):
        self.directory, self.index, self.signature, self.log = Path(directory), index, signature, log

    @property
    def record_path(self) -> Path:
        return self.directory / f"t{self.index}.json"

    def _arrays_path(self, epoch: int) -> Path:
        return self.directory / f"t{self.index}.e{epoch}.safetensors"

    def load(self) -> tuple[int, dict[str, np.ndarray], dict] | None:
        """(epochs done, arrays, record) of the last committed epoch, or None: start from epoch 0."""
        from safetensors.numpy import load_file

        if not self.record_path.exists():
            return None
        try:
            record = json.loads(self.record_path.read_text())
            epochs = int(record["epochs_done"])
            arrays = load_file(str(self._arrays_path(epochs)))
        except Exception as exc:  # a torn or foreign file: a fresh start is always correct, only slower
            self.log(f"warning: the epoch checkpoint {self.record_path} is unreadable ({exc}); training "
                     f"from the start")
            return None
        if record.get("signature") != self.signature:
            self.log(f"warning: the epoch checkpoint {self.record_path} belongs to another training "
                     f"(recipe, budget or seed differ); training from the start")
            return None
        return epochs, arrays, record

    def save(self, epochs_done: int, arrays: dict[str, np.ndarray], record: dict) -> None:
        from safetensors.numpy import save_file

        self.directory.mkdir(parents=True, exist_ok=True)
        final = self._arrays_path(epochs_done)
        tmp = final.with_name(f".tmp-{os.getpid()}-{final.name}")
        save_file({k: np.asarray(v, order="C") for k, v in arrays.items()}, str(tmp))  # 0-d stays 0-d
        os.replace(tmp, final)
        body = json.dumps({**record, "epochs_done": epochs_done, "signature": self.signature}, sort_keys=True)
        tmp_record = self.record_path.with_name(f".tmp-{os.getpid()}-{self.record_path.name}")
        tmp_record.write_text(body)
        os.replace(tmp_record, self.record_path)  # the commit point
        for old in self.directory.glob(f"t{self.index}.e*.safetensors"):
            if old != final:
                old.unlink(missing_ok=True)
        if os.environ.get(KILL_AFTER_EPOCH_ENV) == str(epochs_done):
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


class CellCheckpoints:
    """Hands out one ``TrainingCheckpoint`` per training call of a running cell, in call order."""

    def __init__(self, directory: Path, log: Callable[[str], None] = print):
        self.directory, self.log, self.calls = Path(directory), log, 0

    def next(self, **signature) -> TrainingCheckpoint:
        self.calls += 1
        return TrainingCheckpoint(self.directory, self.calls, _jsonable(signature), self.log)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _jsonable(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def signature(recipe, seed: int, total_steps: int, n_train: int, label: str) -> dict:
    """What makes two trainings the same one: resuming is only correct into the very same schedule."""
    from .config import to_jsonable

    return {"recipe": to_jsonable(recipe), "seed": int(seed), "total_steps": int(total_steps),
            "n_train": int(n_train), "label": label}


class Resumption:
    """What a training loop needs to resume: where it starts and what it had, and how to commit an epoch.

    Built by ``begin``; with no checkpoints (a direct call, a test) or a single epoch it starts at epoch 0
    and ``commit`` does nothing, so a loop uses it unconditionally."""

    def __init__(self, checkpoint: TrainingCheckpoint | None, on_step):
        self.checkpoint, self.on_step = checkpoint, on_step
        self.epoch, self.arrays, self.history, self.train_time = 0, None, [], 0.0
        loaded = checkpoint.load() if checkpoint is not None else None
        if loaded is not None:
            self.epoch, arrays, record = loaded
            self.arrays = {k: v for k, v in arrays.items() if not k.startswith("hook/")}
            self.history, self.train_time = record["history"], float(record["train_time_s"])
            if on_step is not None and hasattr(on_step, "restore"):
                on_step.restore({k[len("hook/"):]: v for k, v in arrays.items() if k.startswith("hook/")},
                                record.get("hook", {}))
            checkpoint.log(f"{checkpoint.signature['label']} resuming after epoch {self.epoch} "
                           f"({checkpoint.record_path.parent.name})")

    def commit(self, epochs_done: int, arrays: Callable[[], dict[str, np.ndarray]], history: list,
               train_time: float) -> None:
        """Checkpoint a finished epoch; ``arrays`` is called only when there is somewhere to save them."""
        if self.checkpoint is None:
            return
        hook_arrays, hook_record = self.on_step.state() if hasattr(self.on_step, "state") else ({}, {})
        self.checkpoint.save(epochs_done, {**arrays(), **{f"hook/{k}": v for k, v in hook_arrays.items()}},
                             {"history": history, "train_time_s": train_time, "hook": hook_record})


def begin(checkpoints: CellCheckpoints | None, *, recipe, seed: int, total_steps: int, epochs: int,
          n_train: int, label: str, on_step=None) -> Resumption:
    """The ``Resumption`` of a training: checkpointed per epoch when it is longer than one epoch."""
    checkpoint = None
    if checkpoints is not None and epochs > 1:
        checkpoint = checkpoints.next(**signature(recipe, seed, total_steps, n_train, label))
    return Resumption(checkpoint, on_step)
