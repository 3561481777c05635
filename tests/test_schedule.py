import pytest

from kphases.config import ScheduleConfig
from kphases.schedule import doubling_schedule, explicit_schedule, is_doubling_step, is_scheduled, snapshot_steps, steps_up_to


def test_doubling_schedule_for_64():
    assert doubling_schedule(64) == [0, 2, 4, 8, 16, 32, 64]


def test_doubling_schedule_has_no_iteration_one_and_stops_below_last():
    assert doubling_schedule(1) == [0]
    assert doubling_schedule(100) == [0, 2, 4, 8, 16, 32, 64]


def test_authors_cifar10_run_has_17_points_up_to_65536():
    steps = doubling_schedule(100_487)  # 391 iterations x 257 epochs
    assert len(steps) == 17 and steps[-1] == 65_536


def test_explicit_schedule_sorted_and_checked():
    assert snapshot_steps(ScheduleConfig(kind="explicit", steps=(10, 0, 5)), 10) == [0, 5, 10]
    with pytest.raises(ValueError, match=r"\[11\] do not fit a run of 10 iterations"):
        explicit_schedule([0, 11], 10)
    with pytest.raises(ValueError, match="repeat"):
        explicit_schedule([2, 2], 10)


def test_doubling_with_steps_is_rejected():
    with pytest.raises(ValueError, match="kind='explicit'"):
        snapshot_steps(ScheduleConfig(kind="doubling", steps=(3,)), 10)


def test_membership_agrees_with_the_lists_for_runs_of_any_length():
    doubling, explicit = ScheduleConfig(), ScheduleConfig(kind="explicit", steps=(0, 3, 50, 700))
    assert [step for step in range(2100) if is_doubling_step(step)] == doubling_schedule(2099)
    for schedule in (doubling, explicit):
        assert [step for step in range(800) if is_scheduled(schedule, step)] == steps_up_to(schedule, 799)
    assert steps_up_to(explicit, 60) == [0, 3, 50] and not is_scheduled(doubling, -2)
