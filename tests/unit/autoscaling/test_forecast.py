from __future__ import annotations

import pytest

from dlproxy.autoscaling.forecast import Holt


def test_follows_a_linear_ramp_without_lag() -> None:
    holt = Holt(alpha=0.5, beta=0.2)
    for t in range(200):
        holt.update(float(t), 100.0 + 5.0 * t)
    assert holt.level == pytest.approx(100.0 + 5.0 * 199, rel=1e-3)
    assert holt.trend == pytest.approx(5.0, rel=1e-3)
    assert holt.forecast(10.0) == pytest.approx(100.0 + 5.0 * 209, rel=1e-3)


def test_irregular_samples_on_a_ramp_keep_the_slope_per_second() -> None:
    holt = Holt(alpha=0.5, beta=0.2)
    t = 0.0
    for n in range(300):
        t += (0.5, 1.0, 3.0)[n % 3]
        holt.update(t, 20.0 * t)
    assert holt.trend == pytest.approx(20.0, rel=1e-2)


def test_a_late_sample_weighs_as_the_ticks_it_stands_for() -> None:
    one_step, two_steps = Holt(alpha=0.5), Holt(alpha=0.5)
    for holt in (one_step, two_steps):
        holt.update(0.0, 0.0)
    one_step.update(2.0, 100.0)
    two_steps.update(1.0, 100.0)
    two_steps.update(2.0, 100.0)
    assert one_step.level == pytest.approx(75.0)  # 1 - (1 - 0.5)^2 of the way
    assert two_steps.level == pytest.approx(one_step.level, rel=0.2)


def test_peak_is_the_level_when_falling_and_never_negative() -> None:
    holt = Holt()
    for t in range(50):
        holt.update(float(t), 1000.0 - 20.0 * t)
    assert holt.trend < 0
    assert holt.peak(30.0) == pytest.approx(holt.level)
    assert holt.forecast(1000.0) == 0.0


def test_samples_at_the_same_or_an_earlier_time_are_ignored() -> None:
    holt = Holt()
    holt.update(5.0, 10.0)
    holt.update(5.0, 1000.0)
    holt.update(4.0, 1000.0)
    assert (holt.level, holt.trend) == (10.0, 0.0)
    assert holt.fitted


@pytest.mark.parametrize("options", [{"alpha": 0.0}, {"beta": 1.5}, {"interval": 0.0}])
def test_invalid_factors_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="Holt"):
        Holt(**options)
