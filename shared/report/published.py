"""Published numbers the report sets ours beside, quoted from the papers (never computed)."""
from __future__ import annotations

# Li, Kadav, Durdanovic, Samet, Graf, "Pruning Filters for Efficient ConvNets", ICLR 2017, Table 1
# (CIFAR-10, VGG-16 with BN; FLOPs are multiply-accumulates of conv and FC layers, as in shared.specs).
LI2017_SOURCE = "Li et al. 2017, Pruning Filters for Efficient ConvNets (ICLR), Table 1"
LI2017_TABLE1 = (
    {"model": "VGG-16", "error_pct": 6.75, "flops": 3.13e8, "flops_pruned_pct": None,
     "params": 1.50e7, "params_pruned_pct": None},
    {"model": "VGG-16-pruned-A", "error_pct": 6.60, "flops": 2.06e8, "flops_pruned_pct": 34.2,
     "params": 5.40e6, "params_pruned_pct": 64.0},
)
# The paper's networks are full width; ours are scaled by the preset's width multiplier.
LI2017_WIDTH = 1.0
