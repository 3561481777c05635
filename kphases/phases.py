"""Phase detection: label the three phases of a reconstruction-loss curve.

Serves the paper's central claim (Schneider & Prabhushankar 2024, PROTOCOL.md section 1): over
training, the reconstruction loss of the input from a layer's output is (i) near constant, then
(ii) decreases, then (iii) increases. The curve is measured on the doubling schedule
0, 2, 4, ..., 2^k, so consecutive measurements are equally spaced in log-step; the criterion works
on the order of the measurements and never interpolates between steps. The theory's tests
(`tests/theory`) use this detector on simulated runs, and the figures use it on measured ones.

The criterion, with every threshold a field of `PhaseTolerances`:

1. Scale. Values are divided by `scale` = |first value| (the loss of the initial network), so the
   result is invariant to multiplying the curve by a positive constant. If the first value is 0
   the scale is max |value| instead; an all-zero curve is flat.
2. Noise level. `noise_level` is a robust estimate of the measurement noise of the scaled curve:
   1.4826 * median |u_i - (u_{i-1} + u_{i+1}) / 2| / sqrt(1.5), the median absolute deviation of
   the second differences, scaled so that i.i.d. Gaussian noise of standard deviation s gives s.
   A few kinks (the phase boundaries) do not move the median; smooth curvature raises it, which
   errs towards reporting fewer phases.
3. Threshold. A change counts only if it is at least
   `threshold` = max(min_relative_change, noise_multiple * noise_level). Smaller changes are noise.
4. Shape. The scaled curve is smoothed by the best valley-shaped fit (least squares; non-increasing
   up to some point, non-decreasing after it; isotonic regression on both sides of every
   candidate turning point). Its lowest fitted level marks the minimum; `decrease_end` is the step
   of the smallest measured value inside that lowest level (so it is always a measured step).
5. Phase (i): the longest initial stretch whose fitted values stay within
   max(constant_tolerance, noise_multiple * noise_level) of the first fitted value, ending before
   the minimum, and covering at least `min_constant_points` measurements. Otherwise absent.
6. Phase (ii): present if the fitted value at the start of the decrease (the end of phase (i), or
   the first step without phase (i)) exceeds the minimum by at least `threshold`.
7. Phase (iii): present if the fitted value at the last step exceeds the minimum by at least
   `threshold`; it then runs from after the minimum to the last step.
8. Three phases: all of (i), (ii) and (iii) present. Measurements outside every detected phase
   are labelled "undetermined": the detector does not invent a phase where the data do not show one.

A curve that rises again after phase (iii) and falls (not the paper's shape) is still summarised by
the valley fit: the increase is measured to the last step.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import isotonic_regression

CONSTANT, DECREASE, INCREASE, UNDETERMINED = "constant", "decrease", "increase", "undetermined"

# Converts the median absolute second difference of i.i.d. Gaussian noise (std s) back into s:
# u_i - (u_{i-1} + u_{i+1}) / 2 has std s * sqrt(1.5), and 1.4826 * MAD estimates a Gaussian std.
_MAD_TO_STD = 1.4826 / math.sqrt(1.5)


@dataclass(frozen=True)
class PhaseTolerances:
    """Every threshold of the criterion in the module docstring (relative to the scale)."""

    min_relative_change: float = 0.05
    """Smallest decrease or increase, as a fraction of the scale, that counts as a phase (5%)."""
    noise_multiple: float = 3.0
    """A change must also be at least this many estimated noise levels (3 sigma)."""
    constant_tolerance: float = 0.05
    """Phase (i) may drift this far (fraction of the scale) from its initial fitted value."""
    min_constant_points: int = 2
    """Phase (i) must cover at least this many measurements (step 0 alone is not a phase)."""

    def __post_init__(self) -> None:
        for name in ("min_relative_change", "noise_multiple", "constant_tolerance"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.min_constant_points, int) or self.min_constant_points < 2:
            raise ValueError(f"min_constant_points must be an integer >= 2, got {self.min_constant_points!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PhaseResult:
    """The detected phases of one curve; steps are the caller's measurement steps."""

    constant_end: int | None
    """Last step of phase (i) (None: not detected)."""
    decrease_end: int | None
    """Step of the minimum that ends phase (ii) (None: no decrease detected)."""
    increase_end: int | None
    """Last step of phase (iii) (None: no increase detected)."""
    relative_decrease: float
    """(fitted value at the start of the decrease - minimum) / scale."""
    relative_increase: float
    """(fitted value at the last step - minimum) / scale."""
    three_phases: bool
    """True when phases (i), (ii) and (iii) are all detected, in that order."""
    labels: tuple[str, ...]
    """One of "constant", "decrease", "increase", "undetermined" per input step."""
    scale: float = 1.0
    """The value that relative sizes are divided by (|first value|, see the module docstring)."""
    noise_level: float = 0.0
    """Estimated measurement noise of the scaled curve."""
    threshold: float = 0.0
    """The smallest relative change that counted as a phase for this curve."""

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["labels"] = list(self.labels)
        return values


def _validated(steps: Sequence[int], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    steps_list, values_list = list(steps), list(values)
    if len(steps_list) != len(values_list):
        raise ValueError(f"steps and values must have equal lengths, got {len(steps_list)} steps and {len(values_list)} values")
    if len(steps_list) < 3:
        raise ValueError(f"phase detection needs at least 3 measurements, got {len(steps_list)}")
    for step in steps_list:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"steps must be non-negative integers, got {step!r} in {steps_list}")
    for previous, current in zip(steps_list, steps_list[1:]):
        if current == previous:
            raise ValueError(f"steps must not repeat: step {current} appears twice in {steps_list}")
        if current < previous:
            raise ValueError(f"steps must be sorted increasingly: {current} follows {previous} in {steps_list}")
    array = np.asarray(values_list, dtype=np.float64)
    for index, value in enumerate(array):
        if not math.isfinite(value):
            raise ValueError(f"values must be finite: value {float(value)!r} at step {steps_list[index]} (index {index})")
    return np.asarray(steps_list, dtype=np.int64), array


def _noise_level(scaled: np.ndarray) -> float:
    second_differences = scaled[1:-1] - 0.5 * (scaled[:-2] + scaled[2:])
    return float(_MAD_TO_STD * np.median(np.abs(second_differences)))


def _valley_fit(scaled: np.ndarray) -> np.ndarray:
    """Least-squares fit that is non-increasing up to some index and non-decreasing after it."""
    best_fit, best_error = None, math.inf
    for turn in range(len(scaled)):
        left = isotonic_regression(scaled[: turn + 1], increasing=False).x
        right = isotonic_regression(scaled[turn + 1 :], increasing=True).x if turn + 1 < len(scaled) else np.empty(0)
        fit = np.concatenate([left, right])
        error = float(np.sum((fit - scaled) ** 2))
        # Strictly better only: among equal fits the earliest turning point wins (deterministic).
        if error < best_error - 1e-15:
            best_fit, best_error = fit, error
    return best_fit


def detect_phases(steps: Sequence[int], values: Sequence[float], tolerances: PhaseTolerances = PhaseTolerances()) -> PhaseResult:
    """Label the phases (i) constant, (ii) decrease, (iii) increase of a curve measured at `steps`.

    See the module docstring for the criterion. Raises ValueError for unequal lengths, fewer than
    3 points, unsorted, repeated or negative steps, and non-finite values.
    """
    step_array, value_array = _validated(steps, values)
    count = len(value_array)
    scale = abs(value_array[0]) if value_array[0] != 0 else float(np.max(np.abs(value_array)))
    if scale == 0.0:  # all zero: a flat curve, every point constant
        return PhaseResult(int(step_array[-1]), None, None, 0.0, 0.0, False, (CONSTANT,) * count, 0.0, 0.0,
                           tolerances.min_relative_change)
    scaled = value_array / scale
    noise = _noise_level(scaled)
    threshold = max(tolerances.min_relative_change, tolerances.noise_multiple * noise)
    constant_band = max(tolerances.constant_tolerance, tolerances.noise_multiple * noise)
    fit = _valley_fit(scaled)

    lowest = fit.min()
    bottom = np.flatnonzero(np.isclose(fit, lowest, rtol=0.0, atol=1e-12))
    minimum_index = int(bottom[np.argmin(scaled[bottom])])

    # Phase (i): the initial fitted values within the band of the first one.
    constant_last = 0
    while constant_last + 1 < count and abs(fit[constant_last + 1] - fit[0]) <= constant_band:
        constant_last += 1
    if constant_last == count - 1:  # the whole curve stays in the band: flat, nothing else to find
        return PhaseResult(int(step_array[-1]), None, None, float(fit[0] - fit[minimum_index]),
                           float(fit[-1] - fit[minimum_index]), False, (CONSTANT,) * count, float(scale), noise, float(threshold))
    has_constant = constant_last + 1 >= tolerances.min_constant_points

    # Phase (ii): from the end of phase (i) (or the first step) down to the minimum. When the
    # minimum lies inside phase (i), the curve never left the band downwards: no decrease.
    decrease_start = constant_last if has_constant else 0
    relative_decrease = float(fit[decrease_start] - fit[minimum_index]) if minimum_index > decrease_start else 0.0
    has_decrease = minimum_index > constant_last and relative_decrease >= threshold
    # Phase (iii): from after the minimum (or after phase (i), if that ends later) to the last step.
    relative_increase = float(fit[-1] - fit[minimum_index])
    has_increase = relative_increase >= threshold
    increase_first = max(minimum_index, constant_last if has_constant else 0) + 1

    labels = [UNDETERMINED] * count
    if has_constant:
        labels[: constant_last + 1] = [CONSTANT] * (constant_last + 1)
    if has_decrease:
        first = constant_last + 1 if has_constant else 0
        labels[first : minimum_index + 1] = [DECREASE] * (minimum_index + 1 - first)
    if has_increase:
        labels[increase_first:] = [INCREASE] * (count - increase_first)

    return PhaseResult(
        constant_end=int(step_array[constant_last]) if has_constant else None,
        decrease_end=int(step_array[minimum_index]) if has_decrease else None,
        increase_end=int(step_array[-1]) if has_increase else None,
        relative_decrease=relative_decrease,
        relative_increase=relative_increase,
        three_phases=bool(has_constant and has_decrease and has_increase),
        labels=tuple(labels),
        scale=float(scale),
        noise_level=noise,
        threshold=float(threshold),
    )
