"""The framework-neutral weight state: ``{canonical name: numpy array}``.

Names are the spec's layer paths plus PyTorch's parameter suffixes; layouts are PyTorch's (conv OIHW,
linear (out, in)); see ``conventions.py``. BN carries weight, bias, running_mean, running_var. Saved with
safetensors, so loading a checkpoint never unpickles anything.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import specs

BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var")


def expected_shapes(plan) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for c in specs.convs_of(plan):
        shapes[f"{c.name}.weight"] = (c.cout, c.cin, c.kernel, c.kernel)
        if c.bias:
            shapes[f"{c.name}.bias"] = (c.cout,)
        if c.bn_name:
            shapes.update({f"{c.bn_name}.{s}": (c.cout,) for s in BN_SUFFIXES})
    for lin in specs.linears_of(plan):
        shapes[f"{lin.name}.weight"] = (lin.cout, lin.cin)
        shapes[f"{lin.name}.bias"] = (lin.cout,)
        if lin.bn_name:
            shapes.update({f"{lin.bn_name}.{s}": (lin.cout,) for s in BN_SUFFIXES})
    return shapes


def _flatten_geometry(lin) -> tuple[int, int]:
    hw = int(round(lin.spatial ** 0.5))
    c = lin.cin // lin.spatial
    if hw * hw != lin.spatial or c * lin.spatial != lin.cin:
        raise ValueError(f"{lin.name}: spatial {lin.spatial} is not a square map dividing {lin.cin} inputs")
    return hw, c


def flatten_dense_to_neutral(kernel, lin) -> np.ndarray:
    """An NHWC framework's Dense kernel (H*W*C, out) over a flattened map -> neutral (out, C*H*W)."""
    hw, c = _flatten_geometry(lin)
    w = np.asarray(kernel).reshape(hw, hw, c, lin.cout).transpose(3, 2, 0, 1).reshape(lin.cout, lin.cin)
    return np.ascontiguousarray(w)


def flatten_dense_to_nhwc(weight, lin) -> np.ndarray:
    """Neutral (out, C*H*W) -> an NHWC framework's Dense kernel (H*W*C, out); inverse of the above."""
    hw, c = _flatten_geometry(lin)
    k = np.asarray(weight).reshape(lin.cout, c, hw, hw).transpose(2, 3, 1, 0).reshape(lin.cin, lin.cout)
    return np.ascontiguousarray(k)


def validate(state: dict, plan) -> None:
    """Raise one error listing every missing, unexpected or mis-shaped tensor."""
    want = expected_shapes(plan)
    problems = [f"missing {k} {v}" for k, v in want.items() if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in want]
    problems += [
        f"{k}: shape {tuple(np.shape(state[k]))} != expected {v}"
        for k, v in want.items()
        if k in state and tuple(np.shape(state[k])) != v
    ]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; … {len(problems) - 8} more" if len(problems) > 8 else "")
        raise ValueError(f"state does not match the architecture spec: {shown}")


def save(state: dict, path) -> None:
    """Atomic: written to a temp file and renamed, so a crash never leaves a truncated checkpoint."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # unique per process: two writers never share it
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}, str(tmp))
    os.replace(tmp, path)


def load(path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def readable(path) -> bool:
    """Whether ``path`` is a complete safetensors file (every tensor read back; a truncated or garbage file
    is not)."""
    try:
        load(path)
        return True
    except Exception:  # safetensors raises its own SafetensorError (and OSError, ValueError) on a bad file
        return False


def quarantine(path) -> Path:
    """Move an unreadable checkpoint to ``corrupt/`` beside it (never deleted); return the new path."""
    path = Path(path)
    target = path.parent / "corrupt" / path.name
    target.parent.mkdir(exist_ok=True)
    os.replace(path, target)
    return target
