"""Change points and the history gate, on seeded series with known steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from infergate.history import changes
from infergate.history.changes import ALPHA, Point, alarm, find_changes

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def points(values):
    return [Point(i + 1, T0 + timedelta(days=i), f"commit{i:03d}", float(v))
            for i, v in enumerate(values)]


def noisy(n, sigma, seed, level=10.0):
    return level * np.exp(np.random.default_rng(seed).normal(0, sigma, n))


KEY = ("machine", "test_latency", "minilm_short-ort_cpu-fp32", "normalised")


@pytest.mark.parametrize("seed", range(5))
def test_a_3pct_step_is_found_where_it_was_put(seed):
    values = noisy(80, 0.007, seed)  # the noise of a steady figure; a 4-sigma step
    values[50:] *= 1.03
    found = find_changes(KEY, points(values))
    assert len(found) == 1
    step = found[0]
    assert abs(step.index - 50) <= 2 and step.p_value < ALPHA and step.regression
    assert step.delta_pct == pytest.approx(3, abs=1)
    assert step.run_id == step.index + 1 and step.commit == f"commit{step.index:03d}"


@pytest.mark.parametrize("seed", range(5))
def test_stationary_noise_has_no_change_points(seed):
    assert find_changes(KEY, points(noisy(80, 0.04, 100 + seed))) == []


def test_one_odd_night_is_not_a_step():
    values = noisy(60, 0.01, 7)
    values[30] *= 1.5
    assert find_changes(KEY, points(values)) == []


def test_a_deterministic_count_steps_at_the_noise_floor():
    key = ("machine", "test_instructions", "minilm_short-ort_cpu-fp32", "instructions")
    flat = [94.44e6] * 40
    assert find_changes(key, points(flat)) == []
    step = find_changes(key, points(flat[:25] + [94.44e6 * 1.005] * 15))
    assert [c.index for c in step] == [25] and step[0].delta_pct == pytest.approx(0.5)


def test_lower_cosine_is_the_regression():
    key = ("machine", "test_equivalence", "mlp-ort_cpu-int8", "cosine")
    values = 0.9999 + np.random.default_rng(3).normal(0, 1e-6, 40)
    values[20:] -= 0.002
    (step,) = find_changes(key, points(values))
    assert step.regression and step.index == 20 and step.after < step.before


def test_the_gate_fires_on_the_night_the_step_is_found_and_not_after():
    values = noisy(70, 0.01, 11)
    values[40:] *= 1.06
    fired = [n for n in range(30, 71) if alarm(KEY, points(values[:n]), 5.0)]
    assert fired and len(fired) == 1 and 43 <= fired[0] <= 48
    (night,) = fired
    found = alarm(KEY, points(values[:night]), 5.0)
    assert found.total_pct == pytest.approx(6, abs=1.5) and "commit040" in str(found)
    assert alarm(KEY, points(values[:night]), 8.0) is None  # beyond the threshold only


def test_the_gate_sums_a_drift_of_small_steps():
    values = noisy(90, 0.004, 5)
    values *= np.exp(np.log(1.025) / 7 * np.arange(90))  # +2.5 % a week
    nights = [n for n in range(20, 91) if alarm(KEY, points(values[:n]), 5.0)]
    assert nights, "a 2.5 %/week drift must fail some night"
    found = alarm(KEY, points(values[:nights[0]]), 5.0)
    assert found.total_pct > 5.0 and found.change.delta_pct < found.total_pct


def test_an_improvement_never_fires():
    values = noisy(60, 0.01, 2)
    values[40:] *= 0.9
    assert not any(alarm(KEY, points(values[:n]), 5.0) for n in range(30, 61))


def test_noise_sigma_ignores_a_step():
    y = np.log(noisy(200, 0.02, 9))
    stepped = y.copy()
    stepped[100:] += 0.5
    assert changes.noise_sigma(stepped, 1e-4) == pytest.approx(changes.noise_sigma(y, 1e-4),
                                                               rel=0.1)
    assert changes.noise_sigma(y, 1e-4) == pytest.approx(0.02, rel=0.2)
