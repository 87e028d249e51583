"""Checks before any work: a run that cannot finish says so at once, in one message, and writes nothing.

Data found and every batch file parsed (shapes, label range; a bad file is named with the fix), the results
directory creatable and writable (a probe file is written and removed), free disk above the preset's
minimum, and the requested techniques' prerequisites present or planned. ``PreflightError`` carries the
message; the command lines print it and exit with status 2.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import data as data_mod
from .presets import Preset
from .results import finished

# Free disk a run needs at least: rows, checkpoints and one artifact (.pt / .keras + .tflite) per cell.
MIN_FREE_BYTES = {"synthetic": 200 * 2**20, "cifar10": 2 * 2**30}


class PreflightError(RuntimeError):
    """A run cannot start; the message names the problem and the fix."""


def check_data(preset: Preset, data_dir=None) -> data_mod.Dataset | None:
    """The run's dataset, loaded (and so every batch file parsed and checked) before any cell. A transfer
    preset's base data is checked here and its target tree written by the run (None: loaded then)."""
    from .imagefolder import ImageFolderError
    from .runner import base_dataset, load_dataset

    try:
        if preset.transfer is not None and not preset.data.startswith("imagefolder:"):
            base_dataset(preset, data_dir)
            return None
        return load_dataset(preset, data_dir)
    except ImageFolderError as exc:
        raise PreflightError(str(exc)) from None
    except (data_mod.DatasetNotFoundError, data_mod.CorruptBatchError, data_mod.ChecksumError) as exc:
        raise PreflightError(str(exc)) from None
    except OSError as exc:
        raise PreflightError(f"CIFAR-10 could not be read: {exc}. Fix: check the permissions of the data "
                             f"directory, or point --data-dir at another copy.") from None
    except ValueError as exc:  # too few images for the preset's stratified splits
        raise PreflightError(f"the data cannot hold the {preset.name} preset's splits: {exc}. Fix: point --data-dir "
                             f"at the full CIFAR-10 (50,000 training images).") from None


def check_pretrained(preset: Preset) -> None:
    from .published import KERAS_SUFFIXES, TORCH_SUFFIXES

    if preset.pretrained is None:
        return
    path = Path(preset.pretrained)
    if not path.is_file():
        raise PreflightError(f"--pretrained {path}: no such file. Fix: give the path of a weight file (.safetensors, "
                             f"a torchvision .pth or a keras.applications .h5)")
    if not path.name.lower().endswith((".safetensors", *KERAS_SUFFIXES, *TORCH_SUFFIXES)):
        raise PreflightError(f"--pretrained {path}: unknown kind of file. Fix: pass a .safetensors checkpoint of this "
                             f"project, a torchvision .pth/.pt state_dict or a keras.applications .h5 weight file")


def check_out(out_dir) -> list[Path]:
    """``out_dir`` is (or can be made) a writable directory; a directory made here for the probe is removed
    again if the probe fails, so a refused run leaves nothing behind. Returns the directories it made."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PreflightError(f"--out {out} is a file, not a directory: give a directory path (created if absent)")
    existing = out
    while not existing.exists():
        existing = existing.parent
    made = [p for p in [out, *out.parents] if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as exc:
        _remove(made)
        raise PreflightError(f"--out {out} is not writable ({exc.strerror or exc}): choose a directory you can "
                             f"write to (checked under {existing})") from None
    return made


def _remove(made: list[Path]) -> None:
    for p in sorted(made, key=lambda p: len(p.parts), reverse=True):
        if p.exists():
            p.rmdir()


def check_disk(out_dir, preset: Preset) -> None:
    need = MIN_FREE_BYTES.get(preset.data, MIN_FREE_BYTES["cifar10"])
    existing = Path(out_dir)
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < need:
        raise PreflightError(f"only {free / 2**30:.2f} GiB free under {existing}; a {preset.name} run needs at "
                             f"least {need / 2**30:.2f} GiB: free some space or give another --out")


def check_prerequisites(framework: str, preset: Preset, out_dir, techniques, archs, controlled: bool,
                        suite: str) -> None:
    """Every technique but the baseline starts from the run's baseline: it must be finished or planned."""
    from .runner import CONTROLLED_SOURCE, RunContext, plan_cells

    techniques = tuple(techniques or ())
    ctx = RunContext(preset=preset, out_dir=Path(out_dir), controlled=controlled)
    if controlled:
        for cell in plan_cells(CONTROLLED_SOURCE, preset, ("baseline",), archs):
            if not ctx.checkpoint_path(CONTROLLED_SOURCE, cell.arch, cell.seed).exists():
                raise PreflightError(f"controlled mode starts from the {CONTROLLED_SOURCE} baseline, absent for "
                                     f"{cell.arch} seed {cell.seed}: run python -m pytorch_impl run --preset "
                                     f"{preset.name} --out {out_dir} --technique baseline first")
    if not techniques or "baseline" in techniques:
        return
    for cell in plan_cells(framework, preset, ("baseline",), archs, controlled):
        if not finished(out_dir, cell.id) or not ctx.checkpoint_path(framework, cell.arch, cell.seed).exists():
            raise PreflightError(
                f"--technique {' '.join(techniques)} starts from the {cell.arch} baseline (seed {cell.seed}) of "
                f"this configuration, which {out_dir} does not have yet: add --technique baseline, or run "
                f"python -m {suite} run --preset {preset.name} --out {out_dir} --technique baseline first")


def preflight(framework: str, suite: str, preset: Preset, out_dir, *, data_dir=None, techniques=None, archs=None,
              controlled: bool = False) -> data_mod.Dataset:
    """Every check, cheapest-to-fix first and writing nothing until the data is known good; the dataset."""
    dataset = check_data(preset, data_dir)
    check_pretrained(preset)
    check_prerequisites(framework, preset, out_dir, techniques, archs, controlled, suite)
    made = check_out(out_dir)
    try:
        check_disk(out_dir, preset)
    except PreflightError:
        _remove(made)
        raise
    return dataset
