"""Compression protocols: every setting a technique uses, defined once for both suites.

A technique cell reads its settings from here (through the preset), never from constants of its own, so
the PyTorch and Keras suites apply literally the same protocol. Sources: Li et al. 2017 (filter pruning,
sensitivity, VGG-16-pruned-A), Zhu & Gupta 2017 (gradual cubic sparsity schedule), Blalock et al. 2020
(layer-wise and random baselines), Jacob et al. 2018 (int8 PTQ/QAT), Hinton et al. 2015 (KD).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .config import register
from .recipe import Recipe, steps_per_epoch

# Li et al. 2017, Table 1: VGG-16-pruned-A removes 50% of the filters of conv1 and conv8-conv13.
LI_PRUNED_A_RATIOS = (0.5, 0, 0, 0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5)


# LR shapes of a budget, as piecewise-linear multipliers of its peak LR (``Recipe.lr_knots``).
SCHEDULES = {"linear": ((0.0, 1.0), (1.0, 0.0)), "constant": ((0.0, 1.0), (1.0, 1.0))}

# Blalock et al. 2020 report pruning at compression ratios 2, 4, 8, 16, 32: sparsity 1 - 1/ratio.
BLALOCK_SPARSITIES = (0.5, 0.75, 0.875, 0.9375, 0.96875)


@register
@dataclass(frozen=True)
class Budget:
    """A fine-tuning budget, stated relative to the baseline recipe so that every preset scales alike.

    ``epochs_fraction`` of the baseline's epochs (rounded, at least one) over ``images`` (a fixed stratified
    subset of the training split; None: all of it), peak LR ``lr_fraction`` x the baseline's, shaped by
    ``schedule``: "linear" decays to zero, "constant" holds it (Li et al. 2017 retrain at a constant 0.001),
    "baseline" is the baseline's own warm-up and decay (KD students get the teacher's whole schedule).
    """

    epochs_fraction: float
    lr_fraction: float
    schedule: str = "linear"
    images: int | None = None

    def __post_init__(self):
        if self.schedule not in (*SCHEDULES, "baseline"):
            raise ValueError(f"unknown budget schedule {self.schedule!r}: choose from "
                             f"{', '.join((*SCHEDULES, 'baseline'))}")


@register
@dataclass(frozen=True)
class CompressionProtocol:
    # Fine-tuning budgets per technique family, the same at every operating point of a family.
    # Unstructured pruning (one-shot and gradual) and the pipelines' fine-tunes.
    prune_budget: Budget = Budget(0.25, 0.1)
    # Structured pruning: one total budget; iterative rounds split it (equal-budget rule).
    filter_budget: Budget = Budget(0.25, 0.1)
    # Quantization-aware training: a short fine-tune at a low LR (Jacob et al. 2018).
    qat_budget: Budget = Budget(0.05, 0.01, "constant")
    # Unstructured pruning (global L1, layer-wise L1, random, gradual), fraction of conv/linear weights.
    sparsities: tuple[float, ...] = BLALOCK_SPARSITIES
    # Zhu & Gupta: s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3, pruning every ``gradual_every`` steps
    # over the first ``gradual_end`` fraction of the fine-tuning steps.
    gradual_initial_sparsity: float = 0.0
    gradual_end: float = 0.75
    gradual_every: int = 10
    # BatchNorm statistics are re-estimated on this many training images (no augmentation, cumulative
    # average) after a structural prune and after an unstructured prune's final mask: the pruned network's
    # activations no longer match the statistics the baseline collected. 0 switches it off.
    bn_recalibration_images: int = 2048
    # Structured (filter) pruning by L1 norm.
    uniform_ratios: tuple[float, ...] = (0.25, 0.5)
    # Per-stage ratios: one per VGG stage (5) / per ResNet-18 residual block (8).
    stage_ratios_vgg16: tuple[float, ...] = (0.1, 0.1, 0.2, 0.3, 0.3)
    stage_ratios_resnet18: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2, 0.2, 0.2, 0.3, 0.3)
    # The custom CNNs' two pooling stages (cnn, cnn_dropout); the later, wider stage loses more, as in VGG.
    stage_ratios_cnn: tuple[float, ...] = (0.1, 0.3)
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


def budget_recipe(recipe: Recipe, budget: Budget) -> Recipe:
    """The baseline recipe with ``budget``'s epochs, peak LR and schedule (augmentation, batch, decay kept)."""
    knots = recipe.lr_knots if budget.schedule == "baseline" else SCHEDULES[budget.schedule]
    return replace(recipe, epochs=max(1, round(recipe.epochs * budget.epochs_fraction)),
                   lr=recipe.lr * budget.lr_fraction, lr_knots=knots)


def budget_steps(recipe: Recipe, budget: Budget, n_images: int) -> int:
    """Optimizer steps of ``budget`` over ``n_images`` training images (drop-last batches)."""
    resolved = budget_recipe(recipe, budget)
    return steps_per_epoch(n_images, resolved.batch_size) * resolved.epochs


def split_steps(total: int, parts: int) -> list[int]:
    """``total`` steps split into ``parts`` near-equal shares that add up to exactly ``total``
    (the equal-budget rule: iterative rounds share one budget instead of each getting a whole one)."""
    if parts < 1 or total < parts:
        raise ValueError(f"cannot split {total} fine-tuning steps into {parts} rounds of at least one step")
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def budget_figures(recipe: Recipe, budget: Budget, n_images: int, steps: int | None = None) -> dict:
    """What a row records of the fine-tuning it got: epochs, images, steps, LR and schedule."""
    resolved = budget_recipe(recipe, budget)
    total = budget_steps(recipe, budget, n_images) if steps is None else int(steps)
    return {"epochs": total / steps_per_epoch(n_images, resolved.batch_size), "images": int(n_images),
            "steps": total, "batch_size": resolved.batch_size, "peak_lr": resolved.lr,
            "schedule": budget.schedule, "lr_knots": [list(k) for k in resolved.lr_knots],
            "images_seen": total * resolved.batch_size}


def zhu_gupta_sparsity(step: int, total_steps: int, final: float, protocol: CompressionProtocol) -> float:
    """Target sparsity at fine-tuning ``step`` under the cubic schedule (reaches ``final`` at gradual_end)."""
    end = max(1, int(total_steps * protocol.gradual_end))
    progress = min(1.0, step / end)
    s_i = protocol.gradual_initial_sparsity
    return final + (s_i - final) * (1.0 - progress) ** 3


def stage_ratios(arch: str, protocol: CompressionProtocol) -> tuple[float, ...]:
    by_arch = {"vgg16": protocol.stage_ratios_vgg16, "resnet18": protocol.stage_ratios_resnet18,
               "cnn": protocol.stage_ratios_cnn, "cnn_dropout": protocol.stage_ratios_cnn}
    return by_arch[arch]


def stage_of_layer(arch: str, layer_index: int) -> int:
    """Stage of a prunable layer (index into ``specs.layer_names``): VGG pooling stage, or ResNet-18 block.

    VGG's hidden FC and ResNet's stem belong to no stage (-1): the per-stage lists do not prune them.
    """
    from .specs import PLAIN_STACKS

    if arch in PLAIN_STACKS:
        stack = PLAIN_STACKS[arch]
        return -1 if layer_index >= len(stack.conv_widths) else sum(layer_index > p for p in stack.pool_after)
    per_block = 3 if arch == "resnet50" else 2  # bottleneck / basic block convs
    return -1 if layer_index == 0 else (layer_index - 1) // per_block
