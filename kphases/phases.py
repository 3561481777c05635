"""Phase verdicts: is a reconstruction-loss curve near constant, then decreasing, then increasing?

Serves the paper's central claim (Schneider & Prabhushankar 2024; `docs/protocol.md`, "The claim
under test"): over training, the reconstruction loss of the input from a layer's output is (i) near
constant, then (ii) decreases, then (iii) increases. The curve is measured on the doubling schedule
0, 2, 4, ..., 2^k; the verdict works on the order of the measurements and never interpolates.
`phase_verdict` is the one verdict of the suite: the figures, `kphases.plot_phases`, the tables of
`kphases.verdict_tables`, the monitor and the theory's simulated curves all call it with the
defaults of `VerdictSettings`.

Sizes. Every change is a fraction of the scale = |first value of the curve| (the initial loss), so
multiplying the curve by a positive constant changes nothing.

Phase (i), "near constant", is an equivalence test. The plateau holds up to step j when the change
from the first point to every step up to j, with its two-sided interval at the verdict's
confidence, lies inside +-`plateau_margin` (two one-sided tests at (1 - confidence) / 2 each). A
claim "constant up to j" is the intersection of the claims for each step, so pointwise intervals
suffice (the intersection-union principle: no multiplicity correction), and the first step that is
truly outside the margin must itself pass for an error, so the longest passing stretch keeps the
level. The plateau is the longest such initial stretch ending before the decrease's minimum; it is
a phase when it covers at least `min_constant_points` measurements, and its last step is reported
(`constant_end`). More test images narrow the intervals, so they can only lengthen a true plateau.

The margin is 2% of the initial loss: fixed before looking at the curve (a margin that scaled
with the decrease that follows would make the plateau depend on an estimate of the fall and give a
flat curve no margin at all), a small fraction of the decrease in the authors' published reference
run (`reproduce/reference_run.py`) and in the suite's runs, and the same for the networks and the
theory. A verdict also reports the margin its first measurements would
need (`plateau_margin_needed`), so a reader who prefers another margin can read the answer off.

Phases (ii) and (iii) keep superiority tests: the largest fall before the decrease's minimum
(over pairs of steps s < t up to it) and the largest rise after that minimum are present when the
lower end of their interval exceeds `min_effect`. Its default equals the plateau margin: a change the plateau calls "near constant"
cannot at the same time be a phase of its own, and a slow drift that more test images make
significant does not cut a true plateau short. Three phases: all three present. Only these are
labelled; steps between them are "undetermined".

Several dips. The paper's shape has one minimum, between the fall and the rise; a measured curve
can dip more than once (the authors' README run taken to 65,536 iterations falls to iteration 256,
rises, dips again near its end and rises once more: `paper_figures/authors_length.csv`). The
decrease's minimum is the first trough the curve leaves for good: troughs are the lowest points of
the valleys the curve forms when only reversals larger than `min_effect` count (a rise smaller than
a phase does not end a valley), and the minimum is the first trough after which no point of the
curve lies more than `min_effect` below it. So a shallow early dip that a deeper one follows is part
of the fall, a later dip that stays above the first minimum (or below it by less than a phase) is
part of the rise, and of two dips within `min_effect` of each other the first is the minimum: the
paper reads its curves in time order, and noise between near-equal dips should not decide which
one counts. The largest fall over all pairs would take a later, larger dip inside phase (iii); the
global minimum would let noise choose between near-equal dips. On a curve with one valley the
minimum is its lowest point, the end of its largest fall. The minimum is picked from the point
estimates of the curve; one seed's intervals are simultaneous over every pair of steps, and with
several seeds each seed is measured at the minimum the other seeds' mean curve picks, so the
intervals hold for the steps the data chose.

The noise the intervals carry (`per_image_errors` of shape steps x images, seeds x steps x images
or seeds x replicates x steps x images; or `seed_curves`, seeds x steps):

- One seed: test-image noise, resampled with replacement B times with the same image indices at
  every step (paired: a hard image is hard at every step, so changes are far less noisy than
  levels); with replicate decoder fits (refits on halves of the train features), the replicates
  are resampled too, before the images, so the decoder's own fitting noise, shared by every image
  at a step, enters (`refit_replicates` turns a measurement's refits into replicates). Every
  pair's difference gets a simultaneous interval (max-|t| over pairs); the largest fall's interval
  runs from the largest lower to the largest upper end over pairs.
  The verdict says "one seed: test-image noise only" (or "and decoder refits"): seed-to-seed
  variation is not in it.
- Three or more seeds: hierarchical intervals, seeds, then (within each seed) replicates and test
  images, for every size. Picking the pair of steps on the seeds that then measure it is biased
  (the largest fall of pure noise is positive), so each seed's change is measured between the
  steps the mean curve of the other seeds picks (cross-fitting). The spread of the mean of those
  changes is that of the ideal (infinitely many resamples) hierarchical bootstrap, computed in
  closed form; its seed part is rescaled by seeds / (seeds - 1) and the interval uses Student's
  t with seeds - 1 degrees of freedom, because a bootstrap over 3 seeds has 10 distinct resamples
  and its spread is too small by that factor. The images resampled inside each seed count the
  within-seed noise a second time (the seed-to-seed spread contains it already): conservative.
- `seed_curves` without images: the same with no within-seed part, i.e. the Student-t interval
  over seeds (the theory's simulated curves, whose noise is the simulator's seeds).
Two seeds are refused: one degree of freedom gives no usable interval.

`scipy.stats.bootstrap` resamples one level along one axis; it cannot resample images inside
resampled replicates, nor give the joint distribution of all pairs' differences under one set of
resamples that the simultaneous interval needs, so the resampling is written out here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t

CONSTANT, DECREASE, INCREASE, UNDETERMINED = "constant", "decrease", "increase", "undetermined"
NOISE_IMAGES, NOISE_SEEDS = "images", "seeds"
PLATEAU_MARGIN = 0.02
"""The default equivalence margin of phase (i) and smallest effect of phases (ii) and (iii): 2% of the initial loss."""


def _is_fraction(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


@dataclass(frozen=True)
class VerdictSettings:
    """The settings of `phase_verdict` (module docstring); printed with every verdict."""

    confidence: float = 0.95
    """Coverage of every two-sided interval (the plateau's changes, the decrease, the increase)."""
    plateau_margin: float = PLATEAU_MARGIN
    """Phase (i): every change from the first point, with its interval, lies inside +- this fraction of the initial loss."""
    min_effect: float = PLATEAU_MARGIN
    """Phases (ii) and (iii): the interval's lower end must exceed this fraction of the initial loss."""
    bootstrap_samples: int = 1000
    """Resamples of the test images (and replicate fits) of one seed."""
    seed: int = 0
    """Seed of the resampling (the same resamples at every step: paired)."""
    min_constant_points: int = 2
    """Phase (i) must cover at least this many measurements (step 0 alone is not a phase)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.confidence, float) and 0.5 <= self.confidence < 1):
            raise ValueError(f"confidence must be a float in [0.5, 1), got {self.confidence!r}")
        if not _is_fraction(self.plateau_margin) or self.plateau_margin == 0:
            raise ValueError(f"plateau_margin must be a finite number > 0 (a fraction of the initial loss), got {self.plateau_margin!r}")
        if not _is_fraction(self.min_effect):
            raise ValueError(f"min_effect must be a finite number >= 0 (a fraction of the initial loss), got {self.min_effect!r}")
        if not (isinstance(self.bootstrap_samples, int) and self.bootstrap_samples >= 100):
            raise ValueError(f"bootstrap_samples must be an integer >= 100, got {self.bootstrap_samples!r}")
        if not isinstance(self.min_constant_points, int) or self.min_constant_points < 2:
            raise ValueError(f"min_constant_points must be an integer >= 2, got {self.min_constant_points!r}")

    def describe(self) -> str:
        return (
            f"{self.confidence:.0%} intervals; plateau within +-{self.plateau_margin:.1%}, "
            f"decrease and increase beyond {self.min_effect:.1%} of the initial loss"
        )


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
    """The curve the verdict is about: the mean over seeds, replicate fits and test images."""
    curve_low: tuple[float, ...]
    """Error band: each point's change from step 0, with its interval, drawn around the point (zero width
    at step 0). For figures: the phases are changes; the levels' own intervals are far wider."""
    curve_high: tuple[float, ...]
    noise_source: str
    """"images" (one seed: test images, and replicate fits if any) or "seeds" (hierarchical over seeds)."""
    seeds: int
    replicates: int
    """Decoder fits per seed and step (1: no refits, the decoder's fitting noise is not in the intervals)."""
    images: int
    """Test images per curve (0: seed curves without per-image errors)."""
    scale: float
    """|first value of the curve|: every size is a fraction of it (scale invariance)."""
    decrease: ChangeInterval
    """Phase (ii): the largest fall before the decrease's minimum (start_step -> end_step, the minimum; no
    steps when the minimum is the first measurement)."""
    increase: ChangeInterval
    """Phase (iii): the largest rise that starts at or after the decrease's minimum."""
    plateau: ChangeInterval
    """Phase (i): the change from step 0 to the plateau's last step (0 when there is no plateau)."""
    plateau_margin_needed: float
    """The smallest margin at which the first `min_constant_points` measurements are a plateau (the largest
    |end| of their changes' intervals); inf when the decrease's minimum comes too early for any plateau."""
    has_constant: bool
    has_decrease: bool
    has_increase: bool
    three_phases: bool
    """Phases (i), (ii) and (iii) all confident, in this order."""
    constant_end: int | None
    """The plateau's last step."""
    decrease_end: int | None
    increase_end: int | None
    labels: tuple[str, ...]
    """One of "constant", "decrease", "increase", "undetermined" per step: only confident phases are labelled."""
    settings: VerdictSettings

    @property
    def in_words(self) -> str:
        """The verdict in the words every figure states it in: "three phases" or "not three phases"."""
        return "three phases" if self.three_phases else "not three phases"

    @property
    def relative_decrease(self) -> float:
        return self.decrease.estimate

    @property
    def relative_increase(self) -> float:
        return self.increase.estimate

    @property
    def noise(self) -> str:
        """Which noise the intervals carry, in words."""
        if self.noise_source == NOISE_IMAGES:
            refits = f" and {self.replicates} decoder refits" if self.replicates > 1 else ""
            return f"one seed: test-image noise only{refits} ({self.images} images, paired bootstrap)"
        if self.images == 0:
            return f"{self.seeds} seeds (seed curves; t-interval)"
        refits = f" x {self.replicates} decoder refits" if self.replicates > 1 else ""
        return f"{self.seeds} seeds{refits} x {self.images} test images (hierarchical, cross-fitted)"

    def describe_plateau(self) -> str:
        if self.has_constant:
            return f"constant until {self.constant_end} (change {self.plateau.describe()} within +-{self.settings.plateau_margin:.1%})"
        needed = "no room before the minimum" if math.isinf(self.plateau_margin_needed) else f"needs {self.plateau_margin_needed:.2%}"
        return f"no constant phase within +-{self.settings.plateau_margin:.1%} ({needed})"

    def describe(self) -> str:
        """One line: which phases are confident, the sizes with intervals, the noise and the margins."""
        if self.decrease.end_step is None:
            decrease = "no decrease (the minimum is the first measurement)"
        else:
            decrease = (
                f"decrease until {self.decrease.end_step} (from {self.decrease.start_step}) by " if self.has_decrease else "no decrease: "
            ) + self.decrease.describe()
        increase = (
            f"increase until {self.increase.end_step} (from {self.increase.start_step}) by " if self.has_increase else "no increase: "
        ) + self.increase.describe()
        return (
            f"{self.in_words}: "
            + ", ".join([self.describe_plateau(), decrease, increase])
            + f" (fractions of the initial loss; {self.settings.describe()}; {self.noise})"
        )

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        for key in ("steps", "curve", "curve_low", "curve_high", "labels"):
            values[key] = list(values[key])
        return values


def refit_replicates(errors: np.ndarray, refits: np.ndarray) -> np.ndarray:
    """(replicates, steps, images) for `phase_verdict` from one seed's errors (steps, images) and its decoder
    refits' errors (refits, steps, images; `kphases.measurement.refit_errors`).

    Replicate r is errors + sqrt(R) (refit r - mean of the refits): the refits' spread is the fitting noise
    of the decoder the curve comes from (fits on halves: the delete-half jackknife), and the verdict reads
    the replicate axis as R fits whose mean is the curve, whose spread is R times smaller than one fit's,
    hence sqrt(R). The mean over replicates is `errors`: the refits widen the intervals and move no point
    of the curve (their own level, from half the train images, is higher and is not used)."""
    errors, refits = np.asarray(errors, dtype=np.float64), np.asarray(refits, dtype=np.float64)
    if errors.ndim != 2 or refits.ndim != 3 or refits.shape[1:] != errors.shape or refits.shape[0] < 2:
        raise ValueError(
            f"refit_replicates needs errors (steps, images) and refits (refits >= 2, steps, images) of the same steps and images, "
            f"got {errors.shape} and {refits.shape}"
        )
    deviations = refits - refits.mean(axis=0, keepdims=True)
    return errors[None] + math.sqrt(refits.shape[0]) * deviations


def _validated_steps(steps: Sequence[int], count: int) -> np.ndarray:
    steps_list = list(steps)
    if len(steps_list) != count:
        raise ValueError(f"steps and values must have equal lengths, got {len(steps_list)} steps and {count} values")
    if len(steps_list) < 3:
        raise ValueError(f"a phase verdict needs at least 3 measurements, got {len(steps_list)}")
    for step in steps_list:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"steps must be non-negative integers, got {step!r} in {steps_list}")
    for previous, current in zip(steps_list, steps_list[1:]):
        if current <= previous:
            raise ValueError(f"steps must increase strictly: {current} follows {previous} in {steps_list}")
    return np.asarray(steps_list, dtype=np.int64)


def _nested_errors(per_image_errors, seed_curves) -> tuple[np.ndarray, int]:
    """(seeds, replicates, steps, images) errors, and the number of test images (0: seed curves only)."""
    if (per_image_errors is None) == (seed_curves is None):
        raise ValueError(
            "give exactly one of per_image_errors (steps x images, seeds x steps x images, ...) and seed_curves (seeds x steps)"
        )
    if per_image_errors is not None:
        errors = np.asarray(per_image_errors, dtype=np.float64)
        if errors.ndim not in (2, 3, 4) or errors.shape[-1] < 2:
            raise ValueError(
                "per_image_errors must be (steps, images), (seeds, steps, images) or (seeds, replicates, steps, images) "
                f"with at least 2 images, got shape {errors.shape}"
            )
        nested = errors[None, None] if errors.ndim == 2 else errors[:, None] if errors.ndim == 3 else errors
        images = errors.shape[-1]
    else:
        curves = np.asarray(seed_curves, dtype=np.float64)
        if curves.ndim != 2 or curves.shape[0] < 3:
            raise ValueError(f"seed_curves must be (seeds, steps) with at least 3 seeds, got shape {curves.shape}")
        nested, images = curves[:, None, :, None], 0
    if nested.shape[0] == 2:
        raise ValueError("2 seeds give a seed-level interval with 1 degree of freedom; give 1 seed (image noise only) or at least 3")
    if not np.all(np.isfinite(nested)):
        raise ValueError("per_image_errors and seed_curves must be finite")
    return nested, images


def phase_verdict(
    steps: Sequence[int],
    per_image_errors: np.ndarray | None = None,
    *,
    seed_curves: np.ndarray | None = None,
    settings: VerdictSettings = VerdictSettings(),
) -> PhaseVerdict:
    """The verdict on one curve; exactly one of `per_image_errors` and `seed_curves`.

    per_image_errors: the per-image test errors of the decoder fitted at each step, the same test
        images in the same order at every step (the pairing): (steps, images) for one seed,
        (seeds, steps, images) for several, (seeds, replicates, steps, images) with replicate
        decoder fits (refits on resamples or halves of the train features) per seed and step.
    seed_curves: (seeds, steps), one curve per seed (at least 3 seeds).
    See the module docstring for the rule.
    """
    errors, images = _nested_errors(per_image_errors, seed_curves)
    step_array = _validated_steps(steps, errors.shape[2])
    first = float(errors[:, :, 0, :].mean())
    scale = abs(first) if first != 0 else float(np.max(np.abs(errors.mean(axis=(0, 1, 3)))))
    scale = scale if scale > 0 else 1.0  # an all-zero curve: every size stays 0
    relative = errors / scale  # sizes are fractions of the initial loss from here on: scale invariance
    if errors.shape[0] == 1:
        contrast = _BootstrapContrasts(relative[0], settings)
    else:
        contrast = _SeedContrasts(relative, settings)
    return _verdict(step_array, contrast, scale, errors.shape[:2], images, settings)


class _BootstrapContrasts:
    """One seed: simultaneous intervals for every difference curve[t] - curve[s] (max-|t| over all pairs)
    from the paired bootstrap over images (and replicate fits)."""

    source = NOISE_IMAGES

    def __init__(self, errors: np.ndarray, settings: VerdictSettings) -> None:
        self.curve = errors.mean(axis=(0, 2))
        replicates = _resampled_curves(errors, settings)
        differences = replicates[:, None, :] - replicates[:, :, None]  # [b, s, t] = rep[t] - rep[s]
        point = self.curve[None, :] - self.curve[:, None]
        spread = differences.std(axis=0)
        safe = np.where(spread > 0, spread, 1.0)
        studentised = np.abs(differences - point[None]) / safe[None]
        critical = float(np.quantile(studentised.reshape(len(replicates), -1).max(axis=1), settings.confidence))
        self.low, self.high = point - critical * spread, point + critical * spread
        tail = (1 - settings.confidence) / 2
        change = replicates - replicates[:, :1]
        self.first_low = np.quantile(change, tail, axis=0)  # pointwise interval of each change from step 0
        self.first_high = np.quantile(change, 1 - tail, axis=0)

    def change_from_first(self, index: int) -> tuple[float, float, float]:
        return float(self.curve[index] - self.curve[0]), float(self.first_low[index]), float(self.first_high[index])

    def largest_change(self, sign: float, first: int | None, last: int | None) -> tuple[float, float, float, tuple]:
        """The largest sign * (curve[t] - curve[s]) over pairs first <= s < t <= last, with its interval: on
        the event that every pair's simultaneous interval covers, the true largest change over any set of
        pairs (chosen from the data or not) lies between the largest lower end and the largest upper end
        over that set."""
        pair = _best_pair(self.curve, sign, first, last)
        if pair is None:
            return 0.0, 0.0, 0.0, (None, None)
        count = len(self.curve)
        upper = np.triu(np.ones((count, count), dtype=bool), 1)
        upper[:first] = False
        upper[:, last + 1 :] = False
        lows, highs = (self.low, self.high) if sign > 0 else (-self.high, -self.low)
        estimate = sign * (self.curve[pair[1]] - self.curve[pair[0]])
        return float(estimate), float(lows[upper].max()), float(highs[upper].max()), pair


def _resampled_curves(errors: np.ndarray, settings: VerdictSettings) -> np.ndarray:
    """(resamples, steps): mean curves of resamples of one seed's (replicates, steps, images) errors, the
    same image indices at every step and in every replicate (paired).

    An image resample is drawn as multinomial counts (the ordinary bootstrap, written as weights), so the
    curves are one matrix product. Replicate fits are resampled too, their deviations from their mean
    widened by sqrt(R / (R - 1)) first: a bootstrap over R replicates has R - 1 / R of their variance."""
    rng = np.random.default_rng([settings.seed, 17])
    replicate_count, steps, count = errors.shape
    if replicate_count > 1:
        mean = errors.mean(axis=0, keepdims=True)
        errors = mean + math.sqrt(replicate_count / (replicate_count - 1)) * (errors - mean)
    flat = errors.reshape(replicate_count * steps, count)
    curves = np.empty((settings.bootstrap_samples, steps))
    chunk = max(1, 2_000_000 // (count * replicate_count))  # bounded memory: chunk x images counts at a time
    uniform = np.full(count, 1.0 / count)
    for start in range(0, settings.bootstrap_samples, chunk):
        stop = min(start + chunk, settings.bootstrap_samples)
        weights = rng.multinomial(count, uniform, size=stop - start).astype(np.float64)
        by_replicate = (weights @ flat.T / count).reshape(stop - start, replicate_count, steps)
        if replicate_count == 1:
            curves[start:stop] = by_replicate[:, 0]
        else:
            picks = rng.multinomial(replicate_count, np.full(replicate_count, 1.0 / replicate_count), size=stop - start)
            curves[start:stop] = np.einsum("br,brt->bt", picks / replicate_count, by_replicate)
    return curves


def _best_pair(curve: np.ndarray, sign: float, first: int, last: int) -> tuple[int, int] | None:
    """The pair first <= s < t <= last with the largest sign * (curve[t] - curve[s]) (earliest on ties)."""
    best, pair = -math.inf, None
    for s in range(first, last + 1):
        for t in range(s + 1, last + 1):
            change = sign * (curve[t] - curve[s])
            if change > best:
                best, pair = change, (s, t)
    return pair


def _decrease_minimum(curve: np.ndarray, threshold: float) -> int:
    """Index of the decrease's minimum: the first trough after which the curve never lies more than
    `threshold` below it (module docstring, "Several dips").

    Troughs come from a zigzag of the curve that counts only reversals larger than `threshold`: a valley
    ends when the curve rises more than `threshold` above its lowest point (earliest on ties), which is
    the trough; a peak ends when the curve falls more than `threshold` below its highest point. A curve
    that ends inside a valley adds that valley's lowest point as the last trough, which nothing later
    undercuts, so the search always ends."""
    troughs, lowest, highest, in_valley = [], 0, 0, True
    for index in range(1, len(curve)):
        if in_valley and curve[index] < curve[lowest]:
            lowest = index
        elif in_valley and curve[index] > curve[lowest] + threshold:
            troughs.append(lowest)
            highest, in_valley = index, False
        elif not in_valley and curve[index] > curve[highest]:
            highest = index
        elif not in_valley and curve[index] < curve[highest] - threshold:
            lowest, in_valley = index, True
    if in_valley:
        troughs.append(lowest)
    return next(trough for trough in troughs if not np.any(curve[trough + 1 :] < curve[trough] - threshold))


def _within_seed_variance(errors: np.ndarray, pair: tuple[int, int]) -> float:
    """Variance of one seed's change between `pair` under the ideal bootstrap of its replicates and images
    (images shared by the replicates): replicate, image and interaction parts of the (replicates, images)
    table of changes, each divided by how many units its mean is over."""
    table = errors[:, pair[1], :] - errors[:, pair[0], :]
    replicate_count, count = table.shape
    grand = table.mean()
    by_replicate, by_image = table.mean(axis=1) - grand, table.mean(axis=0) - grand
    interaction = table - grand - by_replicate[:, None] - by_image[None, :]
    return float(
        np.mean(by_replicate**2) / replicate_count + np.mean(by_image**2) / count + np.mean(interaction**2) / (count * replicate_count)
    )


class _SeedContrasts:
    """Three or more seeds: cross-fitted changes (each seed's change between the steps the other seeds'
    mean curve picks) with the closed-form hierarchical interval (module docstring)."""

    source = NOISE_SEEDS

    def __init__(self, errors: np.ndarray, settings: VerdictSettings) -> None:
        self.errors = errors
        self.seeds = errors.shape[0]
        self.seed_curves = errors.mean(axis=(1, 3))
        self.curve = self.seed_curves.mean(axis=0)
        self.critical = float(student_t.ppf(0.5 + settings.confidence / 2, self.seeds - 1))
        self.threshold = settings.min_effect

    def _interval(self, pairs: list[tuple[int, int] | None], sign: float) -> tuple[float, float, float]:
        changes, within = [], []
        for seed, pair in enumerate(pairs):
            if pair is None:
                changes.append(0.0)
                within.append(0.0)
                continue
            changes.append(sign * (self.seed_curves[seed, pair[1]] - self.seed_curves[seed, pair[0]]))
            within.append(_within_seed_variance(self.errors[seed], pair))
        changes = np.asarray(changes)
        mean = float(changes.mean())
        half = self.critical * math.sqrt((float(changes.var(ddof=1)) + float(np.mean(within))) / self.seeds)
        return mean, mean - half, mean + half

    def change_from_first(self, index: int) -> tuple[float, float, float]:
        return self._interval([(0, index)] * self.seeds, 1.0) if index > 0 else (0.0, 0.0, 0.0)

    def largest_change(self, sign: float, first: int | None, last: int | None) -> tuple[float, float, float, tuple]:
        """`first` or `last` None: the decrease's minimum (`_decrease_minimum`) of each held-out fit's own
        curve, and of the mean curve for the steps reported."""
        pairs = [self._pair(np.delete(self.seed_curves, seed, axis=0).mean(axis=0), sign, first, last) for seed in range(self.seeds)]
        mean, low, high = self._interval(pairs, sign)
        return mean, low, high, self._pair(self.curve, sign, first, last) or (None, None)

    def _pair(self, curve: np.ndarray, sign: float, first: int | None, last: int | None) -> tuple[int, int] | None:
        minimum = _decrease_minimum(curve, self.threshold) if first is None or last is None else None
        return _best_pair(curve, sign, minimum if first is None else first, minimum if last is None else last)


def _interval(change: tuple, steps: np.ndarray) -> ChangeInterval:
    estimate, low, high, (start, end) = change
    return ChangeInterval(
        float(estimate), float(low), float(high), None if start is None else int(steps[start]), None if end is None else int(steps[end])
    )


def _plateau(contrast, limit: int, settings: VerdictSettings) -> tuple[int, float, tuple]:
    """(last index of the plateau, the margin the first `min_constant_points` need, the change to the last index)."""
    margin = settings.plateau_margin
    bounds = [contrast.change_from_first(index) for index in range(limit + 1)]
    reach = [max(abs(low), abs(high)) for _, low, high in bounds]
    shortest = settings.min_constant_points
    needed = max(reach[1:shortest]) if shortest - 1 <= limit else math.inf
    last = 0
    while last + 1 <= limit and reach[last + 1] < margin:
        last += 1
    return last, needed, bounds[last]


def _labels(count: int, constant_last: int | None, fall: tuple | None, rise: tuple | None) -> tuple[str, ...]:
    labels = [UNDETERMINED] * count
    after_plateau = 0 if constant_last is None else constant_last + 1
    if constant_last is not None:
        labels[:after_plateau] = [CONSTANT] * after_plateau
    if fall is not None:
        start, end = fall
        labels[max(start + 1, after_plateau) : end + 1] = [DECREASE] * (end + 1 - max(start + 1, after_plateau))
    if rise is not None:
        start, end = rise
        labels[max(start + 1, after_plateau) : end + 1] = [INCREASE] * (end + 1 - max(start + 1, after_plateau))
    return tuple(labels)


def _verdict(steps: np.ndarray, contrast, scale: float, shape: tuple, images: int, settings: VerdictSettings) -> PhaseVerdict:
    count = len(steps)
    # Seeds: each held-out fit's own minimum (None), so that no seed measures the steps it chose.
    held_out = contrast.source == NOISE_SEEDS
    fall = contrast.largest_change(-1.0, 0, None if held_out else _decrease_minimum(contrast.curve, settings.min_effect))
    fall_end = fall[3][1]
    has_decrease = fall[1] > settings.min_effect and fall_end is not None
    # The rise is searched after the decrease's minimum when there is a decrease, anywhere otherwise.
    if has_decrease and fall_end >= count - 1:
        rise = (0.0, 0.0, 0.0, (None, None))
    else:
        rise_first = (None if held_out else fall_end) if has_decrease else 0
        rise = contrast.largest_change(1.0, rise_first, count - 1)
    has_increase = rise[1] > settings.min_effect and rise[3][0] is not None

    limit = fall_end - 1 if has_decrease else count - 1
    constant_last, needed, drift = _plateau(contrast, limit, settings)
    has_constant = constant_last + 1 >= settings.min_constant_points
    plateau = (*drift, (0, constant_last)) if has_constant else (0.0, 0.0, 0.0, (None, None))
    band = [contrast.change_from_first(index) for index in range(count)]
    curve = contrast.curve
    return PhaseVerdict(
        steps=tuple(int(step) for step in steps),
        curve=tuple(float(value * scale) for value in curve),
        curve_low=tuple(float((curve[index] + low - change) * scale) for index, (change, low, _) in enumerate(band)),
        curve_high=tuple(float((curve[index] + high - change) * scale) for index, (change, _, high) in enumerate(band)),
        noise_source=contrast.source,
        seeds=int(shape[0]),
        replicates=int(shape[1]),
        images=int(images),
        scale=float(scale),
        decrease=_interval(fall, steps),
        increase=_interval(rise, steps),
        plateau=_interval(plateau, steps),
        plateau_margin_needed=float(needed),
        has_constant=bool(has_constant),
        has_decrease=bool(has_decrease),
        has_increase=bool(has_increase),
        three_phases=bool(has_constant and has_decrease and has_increase),
        constant_end=int(steps[constant_last]) if has_constant else None,
        decrease_end=int(steps[fall_end]) if has_decrease else None,
        increase_end=int(steps[rise[3][1]]) if has_increase else None,
        labels=_labels(
            count, constant_last if has_constant else None, fall[3] if has_decrease else None, rise[3] if has_increase else None
        ),
        settings=settings,
    )
