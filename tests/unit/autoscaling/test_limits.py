from __future__ import annotations

import pytest

from dlproxy.autoscaling.limits import Limits, LimitState, apply_limits


def test_desired_is_clamped_to_the_bounds() -> None:
    limits = Limits(min_instances=2, max_instances=5, down_cooldown=0.0)
    assert apply_limits(3, 9, 0.0, limits, LimitState()) == 5
    assert apply_limits(3, 0, 0.0, limits, LimitState()) == 2
    assert apply_limits(3, 4, 0.0, limits, LimitState()) == 4


def test_a_pool_outside_the_bounds_is_brought_back_even_in_a_cooldown() -> None:
    limits = Limits(min_instances=2, max_instances=5, up_cooldown=60, down_cooldown=60)
    state = LimitState(last_up=0.0, last_down=0.0)
    assert apply_limits(1, 1, 1.0, limits, state) == 2
    assert apply_limits(8, 8, 1.0, limits, state) == 5


def test_scale_up_waits_for_its_cooldown() -> None:
    limits = Limits(up_cooldown=10.0)
    state = LimitState()
    assert apply_limits(2, 4, 100.0, limits, state) == 4
    assert state.last_up == 100.0
    assert apply_limits(4, 6, 105.0, limits, state) == 4
    assert apply_limits(4, 6, 110.0, limits, state) == 6


def test_scale_down_waits_for_the_cooldown_after_any_change() -> None:
    limits = Limits(down_cooldown=15.0)
    state = LimitState()
    assert apply_limits(2, 6, 0.0, limits, state) == 6  # up: no down-cooldown needed
    assert apply_limits(6, 3, 10.0, limits, state) == 6  # too soon after the scale-up
    assert apply_limits(6, 3, 15.0, limits, state) == 3
    assert state.last_down == 15.0
    assert apply_limits(3, 2, 20.0, limits, state) == 3  # too soon after the scale-down
    assert apply_limits(3, 4, 20.0, limits, state) == 4  # scaling up is never held back by it


def test_steps_are_limited_both_ways() -> None:
    limits = Limits(max_step_up=2, max_step_down=1, down_cooldown=0.0)
    state = LimitState()
    assert apply_limits(2, 10, 0.0, limits, state) == 4
    assert apply_limits(4, 1, 1.0, limits, state) == 3


def test_no_change_leaves_the_state_alone() -> None:
    state = LimitState()
    assert apply_limits(3, 3, 5.0, Limits(), state) == 3
    assert state == LimitState()


@pytest.mark.parametrize(
    "options",
    [{"min_instances": 3, "max_instances": 2}, {"min_instances": -1}, {"max_step_up": 0}],
)
def test_invalid_limits_are_refused_by_name(options: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="Limits"):
        Limits(**options)
