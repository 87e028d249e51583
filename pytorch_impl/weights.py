"""PyTorch <-> framework-neutral state (shared.state). Module paths already are the canonical names."""
from __future__ import annotations

import numpy as np
import torch

from shared import state as neutral


def export_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {
        k: v.detach().float().cpu().numpy().copy()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")  # a PyTorch-only counter, not part of the network
    }


def import_state(model: torch.nn.Module, state: dict) -> torch.nn.Module:
    neutral.validate(state, model.plan)
    own = model.state_dict()
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(torch.from_numpy(np.asarray(v)).to(own[k].dtype))
    return model
