"""Technique keys and their operating points: the one list both suites' registries must match exactly.

Each key maps to the settings of its cells (one cell per operating point); the settings dict is part of
the cell id, so a sweep resumes point by point. Baseline first: every other technique starts from it.
"""
from __future__ import annotations

from .protocols import LI_PRUNED_A_RATIOS, CompressionProtocol, stage_ratios

# Controlled mode: a suite starts from this framework's trained baseline (imported through the neutral
# state) instead of training its own, so its compression toolchain works on identical fp32 weights and
# training differences drop out of the comparison. Its cells carry ``"controlled": true`` in their
# settings (separate cell ids and rows; the report pairs them with the source framework's cells) and keep
# their own checkpoints.
CONTROLLED_SOURCE = "pytorch"

TECHNIQUES = (
    "baseline",
    # unstructured pruning (Zhu & Gupta; Blalock et al.'s baselines)
    "prune_global", "prune_gradual", "prune_gradual_layerwise", "prune_layerwise", "prune_random",
    # structured filter pruning (Li et al. 2017)
    "filter_uniform", "filter_stagewise", "filter_li_a", "filter_iterative",
    # sensitivity analysis and the sparsity search (validation split only)
    "sensitivity", "sparsity_search",
    # quantization (Jacob et al. 2018) and reduced precision
    "int8_dynamic", "int8_static", "int8_qat", "bf16", "fixed_point",
    # ONNX Runtime's own int8 quantizer, on either framework's fp32 export (one quantizer, one runtime)
    "int8_ort",
    # knowledge distillation (Hinton et al. 2015) and its no-teacher control
    "kd", "kd_control",
    # combined pipelines, measured after every stage
    "pipeline_kd_filter_int8", "pipeline_prune_int8",
    # transfer learning (presets with a transfer protocol): from scratch and the other head, against the
    # transferred baseline
    "transfer",
)


def operating_points(technique: str, arch: str, protocol: CompressionProtocol, transfer=None) -> list[dict]:
    """The settings of each cell of ``technique`` on ``arch`` (empty: not applicable to this arch, or, for
    ``transfer``, to a preset without a ``shared.transfer.TransferProtocol``)."""
    p = protocol
    points = {
        "prune_global": [{"sparsity": s} for s in p.sparsities],
        "prune_gradual": [{"sparsity": s} for s in p.sparsities],
        "prune_gradual_layerwise": [{"sparsity": s} for s in p.sparsities],
        "prune_layerwise": [{"sparsity": s} for s in p.sparsities],
        "prune_random": [{"sparsity": s} for s in p.sparsities],
        "filter_uniform": [{"ratio": r} for r in p.uniform_ratios],
        "filter_stagewise": [{"stage_ratios": list(stage_ratios(arch, p))}],
        "filter_li_a": [{"layer_ratios": list(LI_PRUNED_A_RATIOS)}] if arch == "vgg16" else [],
        "filter_iterative": [{"rounds": p.iterative_rounds, "ratio_per_round": p.iterative_ratio_per_round}],
        "int8_static": [{"observer": o, "calibration_images": n} for o in p.observers for n in p.calibration_sizes],
        "fixed_point": [{"bits": b} for b in p.fixed_point_bits],
        "int8_ort": [{"observer": "minmax", "calibration_images": max(p.calibration_sizes)}],
        "kd": [{"temperature": p.kd_temperature, "alpha": p.kd_alpha, "student_width_factor": p.student_width_factor}],
        "kd_control": [{"student_width_factor": p.student_width_factor}],
        "pipeline_kd_filter_int8": [{"ratio": p.uniform_ratios[0], "observer": p.observers[0],
                                     "calibration_images": p.calibration_sizes[-1]}],
        "pipeline_prune_int8": [{"sparsity": p.sparsities[0], "observer": p.observers[0],
                                 "calibration_images": p.calibration_sizes[-1]}],
        "transfer": [] if transfer is None else [{"init": "scratch"}] + [
            {"head": h} for h in ("linear", "dropout") if h != transfer.baseline_head],
    }
    if technique not in TECHNIQUES:
        raise ValueError(f"unknown technique {technique!r}: choose from {', '.join(TECHNIQUES)}")
    return points.get(technique, [{}])
