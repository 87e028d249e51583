"""torchvision weight files into this suite's networks: read with ``torch.load(..., weights_only=True)`` (no
code unpickled), renamed and checked by ``shared.published``."""
from __future__ import annotations

from pathlib import Path

import torch

from shared import published

from . import models
from .weights import import_state


def read_torchvision_file(path) -> dict:
    """A torchvision ``state_dict`` file (``torch.save(model.state_dict(), path)``, or a downloaded
    ``resnet50-*.pth``) as numpy arrays."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weight file at {path}")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or EOFError on a bad file
        raise ValueError(f"{path}: not a readable torch state_dict file ({type(exc).__name__}: {exc}); "
                         f"pass a file written by torch.save(model.state_dict(), path)") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state_dict of tensors")
    return {k: v.detach().float().numpy() for k, v in state.items()}


def load_torchvision(arch: str, path) -> torch.nn.Module:
    """This suite's ``arch`` (resnet50 / vgg16_imagenet) carrying a torchvision weight file's weights."""
    tensors = read_torchvision_file(path)
    state = published.from_torchvision(arch, tensors)
    model = models.build(arch, num_classes=published.num_classes_of(arch, tensors))
    return import_state(model, state).eval()
