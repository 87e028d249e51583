"""Every technique's driver, once, for both suites: key (``shared.techniques``) -> driver(backend, ctx, cell).

A driver implements the protocol of its technique against ``shared.backend.Backend`` and returns the row's
metrics; the suites provide only the backend. The registry is this one dict, so both suites run exactly
the same keys.
"""
from __future__ import annotations

from ..techniques import TECHNIQUES
from . import distill, pipelines, quantization, structured, transfer, unstructured
from .baseline import baseline

_FOUND = {"baseline": baseline, **unstructured.REGISTRY, **structured.REGISTRY, **quantization.REGISTRY,
          **distill.REGISTRY, **pipelines.REGISTRY, **transfer.REGISTRY}
if set(_FOUND) != set(TECHNIQUES):  # a key without a driver, or a driver without a key, is a bug here
    raise RuntimeError(f"drivers {sorted(set(_FOUND) ^ set(TECHNIQUES))} do not match shared.techniques")

# the shared key order (baseline first: the other techniques start from its checkpoint)
REGISTRY = {key: _FOUND[key] for key in TECHNIQUES}
