"""Configs round-trip through typed JSON; the recipe's schedule and data order are fixed formulas."""
import json

import numpy as np
import pytest

from shared import config
from shared.measure import MeasureProtocol, interleaved_latency, latency_stats
from shared.presets import PRESETS, get_preset
from shared.recipe import Recipe, epoch_orders, lr_at, steps_per_epoch


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_as_typed_json(name):
    preset = PRESETS[name]
    text = config.dumps(preset)
    data = json.loads(text)
    assert data["__type__"] == "Preset" and data["recipe"]["__type__"] == "Recipe"
    back = config.loads(text)
    assert back == preset and isinstance(back.recipe.lr_knots, tuple) and isinstance(back.archs, tuple)


def test_unknown_type_and_preset_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown config type 'Evil'"):
        config.loads('{"__type__": "Evil"}')
    with pytest.raises(ValueError, match="unknown preset 'fast'.*smoke"):
        get_preset("fast")


def test_lr_schedule_golden_values():
    r = Recipe(epochs=1, lr=0.2, lr_knots=((0.0, 0.1), (0.15, 1.0), (1.0, 0.0)))
    np.testing.assert_allclose(lr_at([0, 15, 50, 100], 100, r), [0.02, 0.2, 0.2 * 50 / 85, 0.0], rtol=1e-12)


def test_epoch_orders_are_deterministic_permutations_with_drop_last():
    orders = epoch_orders(1000, 3, seed=7, batch_size=128)
    assert orders.shape == (3, steps_per_epoch(1000, 128) * 128) == (3, 896)
    assert all(len(set(o)) == 896 for o in orders)
    assert not np.array_equal(orders[0], orders[1])
    np.testing.assert_array_equal(orders, epoch_orders(1000, 3, seed=7, batch_size=128))
    assert not np.array_equal(orders, epoch_orders(1000, 3, seed=8, batch_size=128))
    with pytest.raises(ValueError, match="smaller than one batch"):
        steps_per_epoch(10, 128)


def test_latency_stats_units():
    stats = latency_stats([0.001, 0.002, 0.003, 0.004, 0.010], batch_size=64)
    assert stats == pytest.approx({"latency_b64_ms_median": 3.0, "latency_b64_ms_p90": 7.6})


def test_interleaved_latency_alternates_the_calls_and_times_only_the_repeats():
    order = []
    stats = interleaved_latency({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                                batch_size=1, warmup=2, repeats=3)
    assert order == ["a", "b"] * 5  # one call of each per round, warm-up rounds included
    assert set(stats) == {"a", "b"} and set(stats["a"]) == {"latency_b1_ms_median", "latency_b1_ms_p90"}


def test_measure_protocol_defaults_fix_threads_and_batches():
    p = MeasureProtocol()
    assert p.threads == 2 and p.latency_batch_sizes == (1, 64)
