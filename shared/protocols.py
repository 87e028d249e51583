"""Compression protocols: every setting a technique uses, defined once for both suites.

A technique cell reads its settings from here (through the preset), never from constants of its own, so
the PyTorch and Keras suites apply literally the same protocol. Sources: Li et al. 2017 (filter pruning,
sensitivity, VGG-16-pruned-A), Zhu & Gupta 2017 (gradual cubic sparsity schedule), Blalock et al. 2020
(layer-wise and random baselines), Jacob et al. 2018 (int8 PTQ/QAT), Hinton et al. 2015 (KD).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .config import register
from .recipe import Recipe

# Li et al. 2017, Table 1: VGG-16-pruned-A removes 50% of the filters of conv1 and conv8-conv13.
LI_PRUNED_A_RATIOS = (0.5, 0, 0, 0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5)


@register
@dataclass(frozen=True)
class CompressionProtocol:
    # Fine-tuning: the same budget at every operating point (epochs over the training split, linear decay).
    finetune_epochs: int = 1
    finetune_lr: float = 0.01
    finetune_images: int | None = None  # a fixed stratified subset of the training split (None: all of it)
    # Unstructured pruning (global L1, layer-wise L1, random, gradual), fraction of conv/linear weights.
    sparsities: tuple[float, ...] = (0.5, 0.7, 0.9, 0.95)
    # Zhu & Gupta: s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3, pruning every ``gradual_every`` steps
    # over the first ``gradual_end`` fraction of the fine-tuning steps.
    gradual_initial_sparsity: float = 0.0
    gradual_end: float = 0.75
    gradual_every: int = 10
    # Structured (filter) pruning by L1 norm.
    uniform_ratios: tuple[float, ...] = (0.25, 0.5)
    # Per-stage ratios: one per VGG stage (5) / per ResNet-18 residual block (8).
    stage_ratios_vgg16: tuple[float, ...] = (0.1, 0.1, 0.2, 0.3, 0.3)
    stage_ratios_resnet18: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2, 0.2, 0.2, 0.3, 0.3)
    iterative_rounds: int = 3
    iterative_ratio_per_round: float = 0.2  # of the remaining filters, per round, each round fine-tuned
    # Sensitivity (Li et al. Fig. 2): each conv alone, no fine-tuning, validation accuracy.
    sensitivity_ratios: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    search_tolerance: float = 0.02  # largest global sparsity within 2 points of the baseline (val)
    search_steps: int = 7
    # Quantization.
    calibration_sizes: tuple[int, ...] = (128, 1024)  # images from the validation split
    observers: tuple[str, ...] = ("minmax", "histogram")
    fixed_point_bits: tuple[int, ...] = (8, 6, 4)
    # Knowledge distillation (Hinton et al. 2015): alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE.
    kd_temperature: float = 4.0
    kd_alpha: float = 0.9
    student_width_factor: float = 0.5  # student = the same architecture at half the teacher's width


def finetune_recipe(recipe: Recipe, protocol: CompressionProtocol) -> Recipe:
    """The baseline recipe with the fine-tuning budget: fewer epochs, a low LR decaying linearly to zero."""
    return replace(recipe, epochs=protocol.finetune_epochs, lr=protocol.finetune_lr,
                   lr_knots=((0.0, 1.0), (1.0, 0.0)))


def zhu_gupta_sparsity(step: int, total_steps: int, final: float, protocol: CompressionProtocol) -> float:
    """Target sparsity at fine-tuning ``step`` under the cubic schedule (reaches ``final`` at gradual_end)."""
    end = max(1, int(total_steps * protocol.gradual_end))
    progress = min(1.0, step / end)
    s_i = protocol.gradual_initial_sparsity
    return final + (s_i - final) * (1.0 - progress) ** 3


def stage_ratios(arch: str, protocol: CompressionProtocol) -> tuple[float, ...]:
    return protocol.stage_ratios_vgg16 if arch == "vgg16" else protocol.stage_ratios_resnet18


def stage_of_layer(arch: str, layer_index: int) -> int:
    """Stage of a prunable layer (index into ``specs.layer_names``): VGG pooling stage, or ResNet-18 block.

    VGG's hidden FC and ResNet's stem belong to no stage (-1): the per-stage lists do not prune them.
    """
    from .specs import VGG16_CONV_WIDTHS, VGG16_POOL_AFTER

    if arch == "vgg16":
        return -1 if layer_index >= len(VGG16_CONV_WIDTHS) else sum(layer_index > p for p in VGG16_POOL_AFTER)
    return -1 if layer_index == 0 else (layer_index - 1) // 2
