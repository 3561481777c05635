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

`detect_phases` above sees one curve and nothing of its noise but the curve itself: its threshold
is a fixed floor or a multiple of the curve's own roughness, and it has no measurement-noise
interval. Use it for curves without per-image or per-seed data only.

Noise-aware verdicts (`phase_verdict`, issue 17). A verdict says a phase is there only when the
noise cannot explain it. The noise is measured, in one of two ways:

- images: the per-image test errors of the decoder fitted at each step (`per_image_errors`,
  steps x images, the same images in the same order at every step). The test images are
  resampled with replacement, the same indices at every step (paired: a hard image is hard at
  every step, so differences between steps are far less noisy than the levels), B = 1,000 times.
  For every pair of steps s < t the difference curve[t] - curve[s] gets a simultaneous interval:
  point +- q x (its bootstrap standard deviation), q the `confidence` quantile of the largest
  studentised deviation over all pairs (max-|t|). This captures the sampling noise of the test
  images, not the decoder's own training noise (the closed-form decoder has none) nor the
  network's seed.
- seeds: one curve per seed (`seed_curves`, >= 3 seeds). A simultaneous interval over all pairs
  has no power with 3 seeds, and picking the pair on the same seeds that measure it is biased
  (the minimum of noise is below zero: measured, 88% of flat 3-seed curves got a "decrease" that
  way). So the sizes are cross-fitted: for each seed, the pair of steps (largest fall; largest
  rise after that fall's minimum) is picked on the mean curve of the *other* seeds, and the held-
  out seed's change between those two steps is its size; the interval is the Student-t interval
  of the mean over seeds. On flat curves with Gaussian seed noise (300 simulations, 12 steps) a
  decrease or an increase was called in 8% of 3-seed and 13% of 5-seed runs (two 5% tests); a U
  with 25%/15% changes and 2% noise got three phases in 93%. The plateau uses pointwise
  t-intervals of the differences from step 0 and between its steps.

From the pairs' intervals (images) or the cross-fitted sizes (seeds), with scale = |first value| (every size is a fraction of it, so the
verdict does not change when the curve is multiplied by a constant):
- decrease (phase ii): the largest fall curve[s] - curve[t] over s < t; its interval runs from
  the largest lower end to the largest upper end over all pairs (on the event that every pair's
  interval covers, this covers the true largest fall). Present when the lower end exceeds
  `min_effect` (default 0: any fall the noise cannot explain).
- increase (phase iii): the largest rise over pairs starting at or after the decrease's minimum
  (anywhere if there is no decrease), interval and presence the same way.
- constant (phase i): the longest initial stretch, ending before the minimum, in which no pair of
  measurements differs confidently by more than `plateau_tolerance` (default 0: by anything),
  covering at least `min_constant_points` measurements; its drift (last - first value) is reported
  with its interval, and so is the tolerance the curve would need for a plateau
  (`plateau_tolerance_needed`): the paper's phase is "near constant", and how near is a choice the
  verdict states rather than hides. A curve with no confident change at all is constant
  throughout: flat, no phases.
- three phases: all three present. Only confident phases are labelled; steps between them are
  "undetermined", so figures shade only what the verdict is sure of.
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
        return PhaseResult(int(step_array[-1]), None, None, 0.0, 0.0, False, (CONSTANT,) * count, 0.0, 0.0, tolerances.min_relative_change)
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
        return PhaseResult(
            int(step_array[-1]),
            None,
            None,
            float(fit[0] - fit[minimum_index]),
            float(fit[-1] - fit[minimum_index]),
            False,
            (CONSTANT,) * count,
            float(scale),
            noise,
            float(threshold),
        )
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


# --- Noise-aware verdicts (issue 17): a phase is present only when its 95% interval excludes no change ---

NOISE_IMAGES, NOISE_SEEDS = "images", "seeds"


@dataclass(frozen=True)
class VerdictSettings:
    """The settings of `phase_verdict` (module section "Noise-aware verdicts"); printed with every verdict."""

    confidence: float = 0.95
    """Coverage of every interval (the decrease, the increase, the plateau's drift)."""
    min_effect: float = 0.0
    """Smallest change, as a fraction of the scale, that counts as a phase: the interval's lower end must
    exceed it. 0: any change the noise cannot explain counts. Printed beside every verdict."""
    bootstrap_samples: int = 1000
    """Paired bootstrap resamples of the test images (image noise only)."""
    seed: int = 0
    """Seed of the bootstrap resampling (the same resamples at every step: paired)."""
    min_constant_points: int = 2
    """Phase (i) must cover at least this many measurements (step 0 alone is not a phase)."""
    plateau_tolerance: float = 0.0
    """Phase (i) is "near constant": no pair of its measurements may differ confidently (interval
    beyond it) by more than this fraction of the scale. 0: no confident change at all, the strictest
    reading. How near is near is the reader's call, so every verdict also reports the tolerance its
    curve would need (`PhaseVerdict.plateau_tolerance_needed`)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.confidence, float) and 0.5 <= self.confidence < 1):
            raise ValueError(f"confidence must be a float in [0.5, 1), got {self.confidence!r}")
        if not (isinstance(self.min_effect, (int, float)) and math.isfinite(self.min_effect) and self.min_effect >= 0):
            raise ValueError(f"min_effect must be a finite number >= 0 (a fraction of the scale), got {self.min_effect!r}")
        if not (isinstance(self.bootstrap_samples, int) and self.bootstrap_samples >= 100):
            raise ValueError(f"bootstrap_samples must be an integer >= 100, got {self.bootstrap_samples!r}")
        if not isinstance(self.min_constant_points, int) or self.min_constant_points < 2:
            raise ValueError(f"min_constant_points must be an integer >= 2, got {self.min_constant_points!r}")
        if not (isinstance(self.plateau_tolerance, (int, float)) and math.isfinite(self.plateau_tolerance) and self.plateau_tolerance >= 0):
            raise ValueError(f"plateau_tolerance must be a finite number >= 0 (a fraction of the scale), got {self.plateau_tolerance!r}")


@dataclass(frozen=True)
class ChangeInterval:
    """A change of the curve between two measured steps, as a fraction of the scale, with its interval."""

    estimate: float
    """Point estimate (>= 0 for a decrease or increase: the size of the fall or of the rise)."""
    low: float
    """Lower end of the interval."""
    high: float
    """Upper end of the interval."""
    start_step: int | None
    """Step the change starts at (None: no such pair of steps)."""
    end_step: int | None
    """Step the change ends at."""

    def describe(self) -> str:
        return f"{self.estimate:.1%} [{self.low:.1%}, {self.high:.1%}]"


@dataclass(frozen=True)
class PhaseVerdict:
    """The phases of one curve with the measured noise: sizes with intervals, and where each phase is confident."""

    steps: tuple[int, ...]
    curve: tuple[float, ...]
    """The curve the verdict is about: mean over images (image noise) or over seeds (seed noise)."""
    curve_low: tuple[float, ...]
    """Error band: each point minus the half-width of the 95% interval of its change from step 0 (paired
    over images, or across seeds); zero width at step 0. For figures: the phases are changes."""
    curve_high: tuple[float, ...]
    noise_source: str
    """"images" (paired bootstrap over the test images) or "seeds" (t-interval across seeds)."""
    noise_units: int
    """How many test images or seeds the noise was measured from."""
    scale: float
    """|first value of the curve|: every size is a fraction of it (scale invariance)."""
    decrease: ChangeInterval
    """Phase (ii): the largest fall of the curve (start_step -> end_step, the minimum)."""
    increase: ChangeInterval
    """Phase (iii): the largest rise that starts at or after the decrease's minimum."""
    plateau: ChangeInterval
    """Phase (i): the change from step 0 to the plateau's last step (its drift; 0 when there is no plateau)."""
    plateau_tolerance_needed: float
    """The smallest `plateau_tolerance` at which the first `min_constant_points` measurements form phase
    (i) (the largest confident part of a change among them; 0 when none is confident); inf when the
    decrease or the increase starts too early for any plateau."""
    has_constant: bool
    has_decrease: bool
    has_increase: bool
    three_phases: bool
    """Phases (i), (ii) and (iii) all confident, in this order."""
    constant_end: int | None
    decrease_end: int | None
    increase_end: int | None
    labels: tuple[str, ...]
    """One of "constant", "decrease", "increase", "undetermined" per step: only confident phases are labelled."""
    settings: VerdictSettings

    @property
    def relative_decrease(self) -> float:
        return self.decrease.estimate

    @property
    def relative_increase(self) -> float:
        return self.increase.estimate

    def describe(self) -> str:
        """One line: which phases are confident, the sizes with intervals, the noise and the minimum effect."""
        parts = [
            f"constant until {self.constant_end} (drift {self.plateau.describe()})" if self.has_constant else "no constant phase",
            (
                f"decrease until {self.decrease.end_step} (largest fall from {self.decrease.start_step}) by "
                if self.has_decrease
                else "no decrease: "
            )
            + self.decrease.describe(),
            (f"increase until {self.increase.end_step} (from {self.increase.start_step}) by " if self.has_increase else "no increase: ")
            + self.increase.describe(),
        ]
        noise = f"{self.settings.confidence:.0%} intervals from {self.noise_units} " + (
            "test images (paired bootstrap)" if self.noise_source == NOISE_IMAGES else "seeds (cross-fitted t-interval)"
        )
        return (
            ("three phases: " if self.three_phases else "not three phases: ")
            + ", ".join(parts)
            + f" (fractions of the initial loss; {noise}; min_effect={self.settings.min_effect:g}, "
            f"plateau_tolerance={self.settings.plateau_tolerance:g}, needed {self.plateau_tolerance_needed:.2%})"
        )

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        for key in ("steps", "curve", "curve_low", "curve_high", "labels"):
            values[key] = list(values[key])
        return values


def phase_verdict(
    steps: Sequence[int],
    per_image_errors: np.ndarray | None = None,
    *,
    seed_curves: np.ndarray | None = None,
    settings: VerdictSettings = VerdictSettings(),
) -> PhaseVerdict:
    """The noise-aware verdict on one curve; exactly one of `per_image_errors` and `seed_curves`.

    per_image_errors: (steps, images), each row the per-image errors of the fixed decoder at that
        step on the same test images in the same order (the paired bootstrap needs the pairing).
    seed_curves: (seeds, steps), one curve per seed (at least 3 seeds).
    See the module section "Noise-aware verdicts" for the criterion.
    """
    if (per_image_errors is None) == (seed_curves is None):
        raise ValueError("give exactly one of per_image_errors (steps x images) and seed_curves (seeds x steps)")
    if per_image_errors is not None:
        errors = np.asarray(per_image_errors, dtype=np.float64)
        if errors.ndim != 2 or errors.shape[1] < 2:
            raise ValueError(f"per_image_errors must be (steps, images) with at least 2 images, got shape {errors.shape}")
        step_array, _ = _validated(steps, errors.mean(axis=1))
        if not np.all(np.isfinite(errors)):
            raise ValueError("per_image_errors must be finite")
        curve = errors.mean(axis=1)
        replicates = _paired_bootstrap(errors, settings)
        contrast = _BootstrapContrasts(curve, replicates, settings.confidence)
        source, units = NOISE_IMAGES, errors.shape[1]
    else:
        curves_array = np.asarray(seed_curves, dtype=np.float64)
        if curves_array.ndim != 2 or curves_array.shape[0] < 3:
            raise ValueError(f"seed_curves must be (seeds, steps) with at least 3 seeds, got shape {curves_array.shape}")
        step_array, _ = _validated(steps, curves_array.mean(axis=0))
        if not np.all(np.isfinite(curves_array)):
            raise ValueError("seed_curves must be finite")
        curve = curves_array.mean(axis=0)
        contrast = _SeedContrasts(curves_array, settings.confidence)
        source, units = NOISE_SEEDS, curves_array.shape[0]
    return _verdict(step_array, curve, contrast, source, units, settings)


def _paired_bootstrap(errors: np.ndarray, settings: VerdictSettings) -> np.ndarray:
    """(resamples, steps): the mean error of each resample of image indices, the same indices at every step.

    A resample is drawn as multinomial counts over the images (the ordinary bootstrap, written as
    weights), so the replicate curves are one matrix product."""
    rng = np.random.default_rng([settings.seed, 17])
    count = errors.shape[1]
    replicates = np.empty((settings.bootstrap_samples, errors.shape[0]))
    chunk = max(1, 2_000_000 // count)  # bounded memory: chunk x images counts at a time
    uniform = np.full(count, 1.0 / count)
    for start in range(0, settings.bootstrap_samples, chunk):
        stop = min(start + chunk, settings.bootstrap_samples)
        weights = rng.multinomial(count, uniform, size=stop - start).astype(np.float64)
        replicates[start:stop] = weights @ errors.T / count
    return replicates


def _best_pair(curve: np.ndarray, sign: float, first: int) -> tuple[int, int] | None:
    """The pair first <= s < t with the largest sign * (curve[t] - curve[s]) (earliest on ties)."""
    best, pair = -math.inf, None
    for s in range(first, len(curve)):
        for t in range(s + 1, len(curve)):
            change = sign * (curve[t] - curve[s])
            if change > best:
                best, pair = change, (s, t)
    return pair


class _BootstrapContrasts:
    """Simultaneous intervals for every difference curve[t] - curve[s] (max-|t| over all pairs)."""

    def __init__(self, curve: np.ndarray, replicates: np.ndarray, confidence: float) -> None:
        self.curve = curve
        differences = replicates[:, None, :] - replicates[:, :, None]  # [b, s, t] = rep[t] - rep[s]
        point = curve[None, :] - curve[:, None]
        spread = differences.std(axis=0)
        safe = np.where(spread > 0, spread, 1.0)
        studentised = np.abs(differences - point[None]) / safe[None]
        critical = float(np.quantile(studentised.reshape(len(replicates), -1).max(axis=1), confidence))
        self.low, self.high = point - critical * spread, point + critical * spread
        # Error bands: each point's paired change from step 0 (percentile bootstrap), drawn around the
        # point. The levels' own intervals are far wider (a hard test set is hard at every step) and
        # say nothing about the phases, which are changes.
        tail = (1 - confidence) / 2
        change = replicates - replicates[:, :1]
        self.curve_low = curve + np.quantile(change, tail, axis=0) - (curve - curve[0])
        self.curve_high = curve + np.quantile(change, 1 - tail, axis=0) - (curve - curve[0])

    def largest_change(self, sign: float, first: int) -> tuple[float, float, float, tuple]:
        """The largest sign * (curve[t] - curve[s]) over pairs first <= s < t, with its interval: on the
        event that every pair's simultaneous interval covers, the true largest change over any set of
        pairs lies between the largest lower end and the largest upper end over that set."""
        pair = _best_pair(self.curve, sign, first)
        if pair is None:
            return 0.0, 0.0, 0.0, (None, None)
        low, high = -math.inf, -math.inf
        for s in range(first, len(self.curve)):
            for t in range(s + 1, len(self.curve)):
                low = max(low, self.low[s, t] if sign > 0 else -self.high[s, t])
                high = max(high, self.high[s, t] if sign > 0 else -self.low[s, t])
        estimate = sign * (self.curve[pair[1]] - self.curve[pair[0]])
        return float(estimate), float(low), float(high), pair


class _SeedContrasts:
    """Seed noise: cross-fitted contrasts, each seed's change measured at the pair of steps the other
    seeds' mean curve picks, then a Student-t interval across seeds (see the module docstring)."""

    def __init__(self, curves: np.ndarray, confidence: float) -> None:
        from scipy.stats import t as student_t

        self.curves = curves
        self.seeds = curves.shape[0]
        self.curve = curves.mean(axis=0)
        self.critical = float(student_t.ppf(0.5 + confidence / 2, self.seeds - 1))
        differences = curves[:, None, :] - curves[:, :, None]
        point = differences.mean(axis=0)
        half = self.critical * differences.std(axis=0, ddof=1) / math.sqrt(self.seeds)
        self.low, self.high = point - half, point + half  # pointwise, used for the plateau only
        half_curve = half[0]  # t-interval of each point's change from step 0 across seeds (see _BootstrapContrasts)
        self.curve_low, self.curve_high = self.curve - half_curve, self.curve + half_curve

    def _others(self, seed: int) -> np.ndarray:
        return np.delete(self.curves, seed, axis=0).mean(axis=0)

    def largest_change(self, sign: float, first: int | None) -> tuple[float, float, float, tuple]:
        """`first` None: the rise after each held-out fit's own minimum (the end of its largest fall)."""
        contrasts = []
        for seed in range(self.seeds):
            others = self._others(seed)
            start = first if first is not None else _best_pair(others, -1.0, 0)[1]
            pair = _best_pair(others, sign, start)
            contrasts.append(0.0 if pair is None else sign * (self.curves[seed, pair[1]] - self.curves[seed, pair[0]]))
        contrasts = np.asarray(contrasts)
        mean = float(contrasts.mean())
        half = self.critical * float(contrasts.std(ddof=1)) / math.sqrt(self.seeds)
        full_start = first if first is not None else _best_pair(self.curve, -1.0, 0)[1]
        pair = _best_pair(self.curve, sign, full_start) or (None, None)
        return mean, mean - half, mean + half, pair


def _verdict(steps: np.ndarray, curve: np.ndarray, contrast, source: str, units: int, settings: VerdictSettings) -> PhaseVerdict:
    count = len(curve)
    scale = abs(curve[0]) if curve[0] != 0 else float(np.max(np.abs(curve)))
    scale = scale if scale > 0 else 1.0  # an all-zero curve: sizes stay 0 and nothing is significant
    effect = settings.min_effect

    def interval(estimate, low, high, pair) -> ChangeInterval:
        start, end = pair
        return ChangeInterval(
            float(estimate), float(low), float(high), None if start is None else int(steps[start]), None if end is None else int(steps[end])
        )

    def relative(change):
        estimate, low, high, pair = change
        return estimate / scale, low / scale, high / scale, pair

    fall = relative(contrast.largest_change(-1.0, 0))
    has_decrease = fall[1] > effect
    fall_end = fall[3][1]
    # The rise is searched after the fall's minimum when there is a decrease (seeds: after each
    # held-out fit's own minimum), anywhere otherwise.
    if has_decrease and fall_end >= count - 1:
        rise = (0.0, 0.0, 0.0, (None, None))
    else:
        rise_first = (None if isinstance(contrast, _SeedContrasts) else fall_end) if has_decrease else 0
        rise = relative(contrast.largest_change(1.0, rise_first))
    has_increase = rise[1] > effect and rise[3][0] is not None

    # Phase (i): the longest initial stretch in which no pair of measurements differs confidently,
    # ending before the decrease starts (or anywhere when there is no decrease: a flat start).
    def confident_part(s: int, t: int) -> float:  # how far the interval of curve[t] - curve[s] lies from 0
        return max(contrast.low[s, t], -contrast.high[s, t], 0.0) / scale

    def confident_change(s: int, t: int) -> bool:
        return confident_part(s, t) > settings.plateau_tolerance

    limit = fall_end - 1 if has_decrease else count - 1
    if has_increase:  # the plateau also ends where a confident rise starts (a rise without a decrease)
        limit = min(limit, rise[3][0])
    shortest = settings.min_constant_points
    needed = max(confident_part(s, t) for t in range(1, shortest) for s in range(t)) if shortest - 1 <= limit else math.inf
    constant_last = 0
    while constant_last + 1 <= limit and not any(confident_change(s, constant_last + 1) for s in range(constant_last + 1)):
        constant_last += 1
    has_constant = constant_last + 1 >= settings.min_constant_points
    drift_pair = (0, constant_last) if has_constant else (None, None)
    if has_constant:
        plateau = interval(
            (curve[constant_last] - curve[0]) / scale,
            contrast.low[0, constant_last] / scale,
            contrast.high[0, constant_last] / scale,
            drift_pair,
        )
    else:
        plateau = interval(0.0, 0.0, 0.0, drift_pair)

    labels = [UNDETERMINED] * count
    if has_constant:
        labels[: constant_last + 1] = [CONSTANT] * (constant_last + 1)
    if has_decrease:
        start, end = fall[3]
        first = max(start + 1, constant_last + 1 if has_constant else 0)
        labels[first : end + 1] = [DECREASE] * (end + 1 - first)
    if has_increase:
        start, end = rise[3]
        labels[start + 1 : end + 1] = [INCREASE] * (end - start)
    return PhaseVerdict(
        steps=tuple(int(step) for step in steps),
        curve=tuple(float(v) for v in curve),
        curve_low=tuple(float(v) for v in contrast.curve_low),
        curve_high=tuple(float(v) for v in contrast.curve_high),
        noise_source=source,
        noise_units=int(units),
        scale=float(scale),
        decrease=interval(*fall),
        increase=interval(*rise),
        plateau=plateau,
        plateau_tolerance_needed=float(needed),
        has_constant=bool(has_constant),
        has_decrease=bool(has_decrease),
        has_increase=bool(has_increase),
        three_phases=bool(has_constant and has_decrease and has_increase),
        constant_end=int(steps[constant_last]) if has_constant else None,
        decrease_end=int(steps[fall_end]) if has_decrease else None,
        increase_end=int(steps[rise[3][1]]) if has_increase else None,
        labels=tuple(labels),
        settings=settings,
    )
