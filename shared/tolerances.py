"""Every threshold the report judges results by, defined once (the report states them beside its verdicts).

Accuracies are fractions in 0..1, so 0.01 is one percentage point.
"""

# Two frameworks training the same recipe from different random initialisations (and different augmentation
# draws, see shared.recipe.epoch_orders) land a few tenths to a couple of points apart on CIFAR-10; the
# foundation issue's goal is agreement within 3 points, so a larger gap means a framework-specific effect.
ACCURACY_TOLERANCE_INDEPENDENT = 0.03

# Controlled mode: the Keras model starts from the PyTorch fp32 weights, so only kernels, rounding and the
# compression implementation differ; more than 1 point apart then points at the implementations.
ACCURACY_TOLERANCE_CONTROLLED = 0.01

# The chosen operating point of a sweep: the most compressed setting that costs at most 1 point of
# validation accuracy against the same framework's baseline (the usual "no loss" budget of the pruning
# papers; chosen on validation, the test set is only reported).
CHOSEN_MAX_ACCURACY_DROP = 0.01

# int8_dynamic that converted under 5% of the quantizable weights did not quantize the network: PyTorch's
# dynamic quantization covers Linear layers only, which hold a few percent of a CNN's weights.
NOOP_QUANTIZED_FRACTION = 0.05

# "No measurable change" in latency has no fixed band: it is measured per group by the timing pass (a
# speedup's bootstrap CI, and the A/A spread of the baseline against a second copy of itself; see
# shared.report.latency.verdict).

# A family of speedups (a group's unstructured points at one batch size) "changed speed" only when more of its
# points left their 95% CI than chance would put outside N such intervals: P(>= k of N | Binomial(N, 5%)) below
# this. One point of 25 outside its CI is what chance gives 72% of the time (and the one such point of the
# committed quick study read 1.00x on a second pass, reports/quick/logs/retime_keras_resnet18).
FAMILY_ALPHA = 0.05
POINT_ALPHA = 0.05  # each speedup's bootstrap interval is a 95% CI (shared.timing)

# "Latency did not follow MACs": the arithmetic fell by at least 1.5x but batch-1 latency improved by less
# than 1.2x (overheads, memory traffic or dense kernels dominate).
MAC_REDUCTION_NOTABLE = 1.5
SPEEDUP_EXPECTED = 1.2
