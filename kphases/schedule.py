"""Snapshot schedules: the iterations at which a run is frozen and measured.

The authors measure at global iterations 0, 2, 4, 8, ..., 2^k (no iteration 1), each time
*before* that iteration's update, so iteration 0 is the initial network and iteration s holds the
weights after s updates (docs/protocol.md, "The snapshot schedule").
"""

from __future__ import annotations

from collections.abc import Sequence

from kphases.config import ScheduleConfig


def doubling_schedule(last_iteration: int) -> list[int]:
    """0, 2, 4, 8, ..., 2^k with 2^k <= last_iteration. `doubling_schedule(64)` is [0, 2, 4, 8, 16, 32, 64]."""
    if last_iteration < 0:
        raise ValueError(f"last_iteration must be >= 0, got {last_iteration}")
    steps = [0]
    power = 2
    while power <= last_iteration:
        steps.append(power)
        power *= 2
    return steps


def explicit_schedule(steps: Sequence[int], last_iteration: int) -> list[int]:
    """The given iterations, sorted; each must lie in [0, last_iteration] and appear once."""
    values = [int(step) for step in steps]
    if not values:
        raise ValueError("an explicit schedule needs at least one step")
    bad = [step for step in values if not 0 <= step <= last_iteration]
    if bad:
        raise ValueError(f"schedule steps {bad} do not fit a run of {last_iteration} iterations (valid: 0..{last_iteration})")
    if len(set(values)) != len(values):
        raise ValueError(f"schedule steps repeat: {values}")
    return sorted(values)


def snapshot_steps(schedule: ScheduleConfig, last_iteration: int) -> list[int]:
    """The snapshot iterations of a schedule config for a run of `last_iteration` updates."""
    if schedule.kind == "doubling":
        if schedule.steps:
            raise ValueError(f"a doubling schedule takes no explicit steps, got {schedule.steps}; use kind='explicit'")
        return doubling_schedule(last_iteration)
    if schedule.kind == "explicit":
        return explicit_schedule(schedule.steps, last_iteration)
    raise ValueError(f"unknown schedule kind {schedule.kind!r}; valid kinds: 'doubling', 'explicit'")


def is_doubling_step(step: int) -> bool:
    """Whether `step` is in the doubling schedule (0, 2, 4, 8, ...) of a run long enough to reach it."""
    return step == 0 or (step >= 2 and step & (step - 1) == 0)


def steps_up_to(schedule: ScheduleConfig, last_iteration: int) -> list[int]:
    """The schedule's iterations up to `last_iteration`, for a run whose end is not known yet (a
    `kphases.SnapshotCallback` inside `model.fit`): an explicit schedule may go beyond it."""
    if schedule.kind == "doubling":
        return doubling_schedule(last_iteration)
    return [step for step in schedule.steps if step <= last_iteration]


def is_scheduled(schedule: ScheduleConfig, step: int) -> bool:
    """Whether the schedule freezes the run at `step`, however long the run."""
    if step < 0:
        return False
    return is_doubling_step(step) if schedule.kind == "doubling" else step in schedule.steps
