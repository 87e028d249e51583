"""The sparsity search both suites run (shared.pruning_rules.bisect_sparsity), on a known accuracy curve."""
from shared.protocols import CompressionProtocol
from shared.pruning_rules import bisect_sparsity


def cliff(s: float) -> float:
    """Validation accuracy 0.90 up to 60% sparsity, then one point lost per point of sparsity."""
    return 0.90 if s <= 0.6 else 0.90 - (s - 0.6)


def test_bisection_golden_probes():
    p = CompressionProtocol(search_steps=4, search_tolerance=0.01)
    best, fig = bisect_sparsity(lambda s: s, cliff, 0.90, p)
    assert [q["sparsity"] for q in fig["probes"]] == [0.5, 0.75, 0.625, 0.5625]
    assert best == 0.5625 and fig["max_sparsity"] == 0.5625 and fig["search_interval"] == [0.5625, 0.625]
    assert fig["val_acc"] == 0.90 and fig["baseline_val_acc"] == 0.90


def test_no_probe_within_tolerance_answers_the_unpruned_baseline():
    p = CompressionProtocol(search_steps=3, search_tolerance=0.01)
    best, fig = bisect_sparsity(lambda s: s, lambda s: 0.5, 0.90, p)
    assert best is None and fig["max_sparsity"] == 0.0 and fig["val_acc"] == 0.90
    assert fig["search_interval"] == [0.0, 0.125]
