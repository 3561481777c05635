"""kphases.phases: known answers for the phase detector (synthetic curves and the authors' reference run)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kphases.phases import PhaseResult, PhaseTolerances, detect_phases

DOUBLING = [0] + [2**power for power in range(1, 17)]  # 17 points, 0..65536, like the CIFAR-10 run

# PROTOCOL.md, "Reference run": VGG-8, CIFAR-10, penultimate layer, linear decoder.
REFERENCE_STEPS = [0, 8, 32, 128, 512, 1024, 4096, 8192, 65536]
REFERENCE_RECONSTRUCTION = [46.71, 45.62, 43.48, 40.32, 41.72, 41.12, 48.69, 54.74, 62.18]


def three_phase_curve(constant_end: int, minimum: int, depth: float, rise: float, noise: float, seed: int) -> np.ndarray:
    """Level 1 up to index constant_end, linear (in log-step) down by depth to index minimum,
    linear up by rise to the last index, plus Gaussian noise of standard deviation `noise`."""
    index = np.arange(len(DOUBLING), dtype=float)
    last = len(DOUBLING) - 1
    clean = np.where(
        index <= constant_end,
        1.0,
        np.where(
            index <= minimum,
            1.0 - depth * (index - constant_end) / (minimum - constant_end),
            1.0 - depth + rise * (index - minimum) / (last - minimum),
        ),
    )
    return clean + noise * np.random.default_rng(seed).standard_normal(len(index))


def test_reference_run_has_three_phases_with_the_minimum_at_128():
    result = detect_phases(REFERENCE_STEPS, REFERENCE_RECONSTRUCTION)
    assert result.three_phases
    # 0 -> 8 moves 2.3% (inside the 5.9% band: 3 x the estimated noise of 2.0%), 32 is 6.9% down.
    assert result.constant_end == 8
    # The minimum is at 128, not 1024: the valley fit pools 512 and 1024 (41.72 then 41.12 is a rise
    # followed by a 0.6 dip, 1.3% of the scale, far below the 5.9% threshold), so the lowest fitted
    # level is the single measurement 40.32 at 128 -- the point the authors mark "(min)".
    assert result.decrease_end == 128
    assert result.increase_end == 65536
    assert result.relative_decrease == pytest.approx((45.62 - 40.32) / 46.71)
    assert result.relative_increase == pytest.approx((62.18 - 40.32) / 46.71)
    assert result.labels == ("constant", "constant", "decrease", "decrease", "increase", "increase", "increase", "increase", "increase")
    assert result.scale == 46.71


@given(
    constant_end=st.integers(1, 6),
    decrease_length=st.integers(2, 4),
    increase_room=st.integers(0, 4),
    depth=st.floats(0.3, 0.6),
    rise=st.floats(0.3, 0.8),
    noise=st.floats(0.0, 0.01),
    seed=st.integers(0, 10_000),
)
def test_noisy_three_phase_curves_recover_their_boundaries_within_one_schedule_point(
    constant_end, decrease_length, increase_room, depth, rise, noise, seed
):
    minimum = constant_end + decrease_length + increase_room // 2  # stays <= 14, so the rise spans >= 2 points
    minimum = min(minimum, len(DOUBLING) - 3)
    values = three_phase_curve(constant_end, minimum, depth, rise, noise, seed)
    result = detect_phases(DOUBLING, values)
    assert result.three_phases
    assert abs(DOUBLING.index(result.constant_end) - constant_end) <= 1
    assert abs(DOUBLING.index(result.decrease_end) - minimum) <= 1
    assert result.increase_end == DOUBLING[-1]
    assert result.relative_decrease == pytest.approx(depth, abs=0.1)
    assert result.relative_increase == pytest.approx(rise, abs=0.06)


def test_labels_follow_the_phases_in_order():
    result = detect_phases(DOUBLING, three_phase_curve(3, 8, 0.4, 0.5, 0.0, 0))
    assert result.labels == ("constant",) * 4 + ("decrease",) * 5 + ("increase",) * 8
    assert (result.constant_end, result.decrease_end, result.increase_end) == (8, 256, 65536)


@given(
    shape=st.sampled_from(["linear", "exponential", "late"]),
    depth=st.floats(0.1, 0.8),
    noise=st.floats(0.0, 0.01),
    seed=st.integers(0, 10_000),
)
def test_monotone_decreasing_curves_have_no_increase(shape, depth, noise, seed):
    index = np.arange(len(DOUBLING), dtype=float)
    clean = {
        "linear": 1 - depth * index / 16,
        "exponential": 1 - depth * (1 - np.exp(-index / 4)),
        "late": 1 - depth * np.clip(index - 8, 0, None) / 8,
    }[shape]
    values = clean + noise * np.random.default_rng(seed).standard_normal(len(index))
    result = detect_phases(DOUBLING, values)
    assert not result.three_phases
    assert result.increase_end is None
    if depth >= 0.3:  # a shallower slow decrease may sit inside the 5% bands of phase (i) and of noise
        assert result.decrease_end is not None and result.relative_decrease >= 0.05


@given(
    shape=st.sampled_from(["linear", "exponential", "late"]),
    rise=st.floats(0.1, 0.8),
    noise=st.floats(0.0, 0.01),
    seed=st.integers(0, 10_000),
)
def test_monotone_increasing_curves_have_no_decrease(shape, rise, noise, seed):
    index = np.arange(len(DOUBLING), dtype=float)
    clean = {
        "linear": 1 + rise * index / 16,
        "exponential": 1 + rise * (1 - np.exp(-index / 4)),
        "late": 1 + rise * np.clip(index - 8, 0, None) / 8,
    }[shape]
    values = clean + noise * np.random.default_rng(seed).standard_normal(len(index))
    result = detect_phases(DOUBLING, values)
    assert not result.three_phases
    assert result.decrease_end is None
    if rise >= 0.3:
        assert result.increase_end == DOUBLING[-1]


@given(level=st.floats(0.01, 1000.0), noise=st.floats(0.0, 0.01), seed=st.integers(0, 10_000))
def test_flat_noisy_curves_are_constant_throughout(level, noise, seed):
    # 1% noise is a fifth of the 5% tolerance. (At 1.5% the valley fit of 17 noisy points can span
    # 5%: then the tail is "undetermined", but still no phase is reported.)
    values = level * (1 + noise * np.random.default_rng(seed).standard_normal(len(DOUBLING)))
    result = detect_phases(DOUBLING, values)
    assert not result.three_phases
    assert (result.decrease_end, result.increase_end) == (None, None)
    assert result.constant_end == DOUBLING[-1]
    assert set(result.labels) == {"constant"}


def test_decrease_then_increase_without_a_plateau_has_no_phase_one():
    # Falls 10% per schedule point from step 0 (twice the constant tolerance), minimum at 64, then rises.
    index = np.arange(len(DOUBLING), dtype=float)
    values = np.where(index <= 6, 1 - 0.1 * index, 0.4 + 0.05 * (index - 6))
    result = detect_phases(DOUBLING, values)
    assert result.constant_end is None
    assert result.decrease_end == 64
    assert result.increase_end == 65536
    assert not result.three_phases
    assert result.labels[0] == "decrease"


def test_changes_below_the_tolerance_are_not_phases():
    # A 3% dip and 3% recovery: below min_relative_change = 5%, so the curve is flat.
    dip = detect_phases(DOUBLING, three_phase_curve(3, 8, 0.03, 0.03, 0.0, 0))
    assert (dip.decrease_end, dip.increase_end, dip.three_phases) == (None, None, False)
    # The same shape at 30% is three phases; lowering the tolerance to 1% makes the 3% dip count.
    assert detect_phases(DOUBLING, three_phase_curve(3, 8, 0.3, 0.3, 0.0, 0)).three_phases
    loose = PhaseTolerances(min_relative_change=0.01, constant_tolerance=0.005)
    assert detect_phases(DOUBLING, three_phase_curve(3, 8, 0.03, 0.03, 0.0, 0), loose).three_phases


def test_noise_raises_the_threshold():
    # A clean 10% dip is three phases; buried in 5% noise it is not (threshold 3 x noise, about 15%).
    clean = three_phase_curve(3, 8, 0.1, 0.1, 0.0, 0)
    assert detect_phases(DOUBLING, clean).three_phases
    noisy = detect_phases(DOUBLING, three_phase_curve(3, 8, 0.1, 0.1, 0.05, 1))
    assert noisy.noise_level == pytest.approx(0.05, rel=0.6)
    assert noisy.threshold > 0.1
    assert not noisy.three_phases


@given(
    constant_end=st.integers(1, 6),
    minimum=st.integers(9, 13),
    depth=st.floats(0.0, 0.6),
    rise=st.floats(0.0, 0.8),
    noise=st.floats(0.0, 0.03),
    seed=st.integers(0, 10_000),
    factor=st.one_of(st.sampled_from([2.0**-10, 0.5, 4.0, 2.0**20]), st.floats(1e-3, 1e3)),
)
def test_scaling_the_values_by_a_positive_constant_changes_nothing(constant_end, minimum, depth, rise, noise, seed, factor):
    values = three_phase_curve(constant_end, minimum, depth, rise, noise, seed)
    original, scaled = detect_phases(DOUBLING, values), detect_phases(DOUBLING, factor * values)
    assert scaled.labels == original.labels
    assert (scaled.constant_end, scaled.decrease_end, scaled.increase_end, scaled.three_phases) == (
        original.constant_end,
        original.decrease_end,
        original.increase_end,
        original.three_phases,
    )
    assert scaled.relative_decrease == pytest.approx(original.relative_decrease, abs=1e-9)
    assert scaled.relative_increase == pytest.approx(original.relative_increase, abs=1e-9)
    assert scaled.scale == pytest.approx(factor * original.scale)


def test_a_curve_starting_at_zero_uses_its_largest_magnitude_as_scale():
    result = detect_phases([0, 2, 4, 8], [0.0, 2.0, 4.0, 4.0])
    assert result.scale == 4.0
    assert result.relative_increase == pytest.approx(1.0)


def test_to_dict_round_trips_the_fields():
    result = detect_phases(REFERENCE_STEPS, REFERENCE_RECONSTRUCTION)
    values = result.to_dict()
    assert values["labels"] == list(result.labels)
    assert PhaseResult(**{**values, "labels": tuple(values["labels"])}) == result


@pytest.mark.parametrize(
    ("steps", "values", "message"),
    [
        ([0, 2, 4], [1.0, 2.0], "equal lengths, got 3 steps and 2 values"),
        ([0, 2], [1.0, 2.0], "at least 3 measurements, got 2"),
        ([0, 4, 2], [1.0, 2.0, 3.0], "sorted increasingly: 2 follows 4"),
        ([0, 2, 2], [1.0, 2.0, 3.0], "step 2 appears twice"),
        ([-2, 0, 2], [1.0, 2.0, 3.0], "non-negative integers, got -2"),
        ([0, 2.5, 4], [1.0, 2.0, 3.0], "non-negative integers, got 2.5"),
        ([0, 2, 4], [1.0, math.nan, 3.0], "value nan at step 2"),
        ([0, 2, 4], [1.0, 2.0, math.inf], "value inf at step 4"),
    ],
)
def test_bad_input_raises_naming_the_bad_value(steps, values, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        detect_phases(steps, values)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_relative_change": -0.1}, "min_relative_change must be a finite number >= 0, got -0.1"),
        ({"noise_multiple": math.nan}, "noise_multiple must be a finite number >= 0, got nan"),
        ({"min_constant_points": 1}, "min_constant_points must be an integer >= 2, got 1"),
    ],
)
def test_bad_tolerances_raise_naming_the_bad_value(changes, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        PhaseTolerances(**changes)


# --- noise-aware verdicts (phase_verdict) ---------------------------------------------------------

from kphases.phases import ChangeInterval, PhaseVerdict, VerdictSettings, phase_verdict  # noqa: E402

VERDICT_STEPS = [0] + [2**power for power in range(1, 12)]  # 12 points, 0..2048, like the quick runs


def per_image_errors(true_curve, images: int = 1000, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """Per-image errors with a known mean curve: image difficulty (gamma, mean 1, the same at every
    step: what the pairing removes) times the curve, times independent per-step noise of `noise`."""
    rng = np.random.default_rng(seed)
    difficulty = rng.gamma(2.0, 0.5, images)
    return np.asarray(true_curve)[:, None] * difficulty[None, :] * (1 + noise * rng.standard_normal((len(true_curve), images)))


U_CURVE = np.array([1, 1, 1, 1, 0.95, 0.85, 0.75, 0.70, 0.72, 0.76, 0.80, 0.85])


def test_abrupt_u_with_plateau_gives_three_phases_with_intervals_that_cover_the_true_sizes():
    verdict = phase_verdict(VERDICT_STEPS, per_image_errors(U_CURVE))
    assert verdict.three_phases and (verdict.noise_source, verdict.noise_units) == ("images", 1000)
    assert verdict.constant_end in (4, 8) and verdict.decrease_end == 128 and verdict.increase_end == 2048
    # True sizes: 30% down (1 -> 0.70), 15% up (0.70 -> 0.85), relative to the initial 1.
    assert verdict.decrease.low < 0.30 < verdict.decrease.high and verdict.decrease.high - verdict.decrease.low < 0.05
    assert verdict.increase.low < 0.15 < verdict.increase.high
    assert verdict.labels[-1] == "increase" and verdict.labels[0] == "constant"
    assert "three phases" in verdict.describe() and "min_effect=0" in verdict.describe()


def test_a_gradual_small_decrease_is_found_because_the_bootstrap_is_paired():
    # 4% down over 8 points: the levels' own sampling noise (difficulty CV ~0.7 over 1,000 images: ~2%
    # per level) would hide it; the paired differences (5% per-image noise: ~0.2%) do not.
    gradual = np.concatenate([[1.0, 1.0, 1.0], np.linspace(1.0, 0.96, 9)])
    verdict = phase_verdict(VERDICT_STEPS, per_image_errors(gradual, seed=1))
    assert verdict.has_decrease and not verdict.has_increase and not verdict.three_phases
    assert verdict.decrease.low < 0.04 < verdict.decrease.high


def test_an_abrupt_six_percent_drop_is_found():
    abrupt = np.array([1.0] * 6 + [0.94] * 6)
    verdict = phase_verdict(VERDICT_STEPS, per_image_errors(abrupt, seed=2))
    assert verdict.has_constant and verdict.has_decrease and verdict.constant_end == 32 and verdict.decrease_end >= 64
    assert verdict.decrease.low < 0.06 < verdict.decrease.high


def test_flat_noisy_curves_show_no_phase_in_at_most_a_few_of_twenty():
    calls = [
        phase_verdict(VERDICT_STEPS, per_image_errors(np.ones(12), images=400, seed=seed), settings=VerdictSettings(seed=seed))
        for seed in range(20)
    ]
    wrong = sum(verdict.has_decrease or verdict.has_increase for verdict in calls)
    assert wrong <= 3  # two 5% tests: about 2 of 20 expected, 3 allowed
    assert all(
        verdict.constant_end == 2048 or not verdict.has_constant for verdict in calls if not (verdict.has_decrease or verdict.has_increase)
    )


def test_a_pure_rise_is_an_increase_without_constant_phase_or_decrease():
    rise = 1.0 + 0.03 * np.arange(12)  # +3% per point
    verdict = phase_verdict(VERDICT_STEPS, per_image_errors(rise, seed=3))
    assert verdict.has_increase and not verdict.has_decrease and not verdict.has_constant
    assert verdict.increase.low < 0.33 < verdict.increase.high


def test_a_u_without_plateau_is_a_decrease_and_an_increase_but_not_three_phases():
    u = np.concatenate([np.linspace(1.0, 0.7, 6), np.linspace(0.7, 0.9, 7)[1:]])
    verdict = phase_verdict(VERDICT_STEPS, per_image_errors(u, seed=4))
    assert verdict.has_decrease and verdict.has_increase and not verdict.has_constant and not verdict.three_phases
    assert verdict.labels[0] == "undetermined" and verdict.decrease.start_step == 0


@pytest.mark.parametrize("factor", [1e-3, 37.5])
def test_the_verdict_does_not_change_when_the_curve_is_multiplied_by_a_constant(factor):
    errors = per_image_errors(U_CURVE, seed=5)
    original, scaled = phase_verdict(VERDICT_STEPS, errors), phase_verdict(VERDICT_STEPS, factor * errors)
    assert scaled.labels == original.labels and scaled.three_phases == original.three_phases
    for name in ("decrease", "increase", "plateau"):
        assert getattr(scaled, name).estimate == pytest.approx(getattr(original, name).estimate, rel=1e-9, abs=1e-12)
        assert getattr(scaled, name).low == pytest.approx(getattr(original, name).low, rel=1e-9, abs=1e-12)
    seeds = 1 + 0.01 * np.random.default_rng(0).standard_normal((3, 12)) + U_CURVE - 1
    assert phase_verdict(VERDICT_STEPS, seed_curves=factor * seeds).labels == phase_verdict(VERDICT_STEPS, seed_curves=seeds).labels


def test_min_effect_decides_a_small_but_certain_change_and_is_printed():
    small = np.array([1.0] * 6 + [0.97] * 6)
    errors = per_image_errors(small, noise=0.01, seed=6)
    assert phase_verdict(VERDICT_STEPS, errors).has_decrease
    strict = phase_verdict(VERDICT_STEPS, errors, settings=VerdictSettings(min_effect=0.05))
    assert not strict.has_decrease and "min_effect=0.05" in strict.describe()


def test_plateau_tolerance_decides_a_near_constant_start_and_the_needed_tolerance_is_reported():
    # A certain 1.5% drift over the first four points, then the U: no plateau at tolerance 0, one at 3%.
    drifting = U_CURVE.copy()
    drifting[:4] = [1.0, 1.005, 1.01, 1.015]
    errors = per_image_errors(drifting, noise=0.01, seed=8)
    strict = phase_verdict(VERDICT_STEPS, errors)
    assert strict.has_decrease and strict.has_increase and not strict.three_phases
    # the first two points differ by 0.5%: that, less its interval's half-width, is what a plateau needs
    assert 0.001 < strict.plateau_tolerance_needed < 0.005
    tolerant = phase_verdict(VERDICT_STEPS, errors, settings=VerdictSettings(plateau_tolerance=0.03))
    assert tolerant.three_phases and tolerant.constant_end == 8 and "plateau_tolerance=0.03" in tolerant.describe()
    assert tolerant.plateau.low < 0.015 < tolerant.plateau.high  # the drift it tolerated, with its interval
    # a fall whose minimum is the second point leaves no room for a plateau at any tolerance
    falling = phase_verdict(VERDICT_STEPS, per_image_errors(np.r_[1.0, np.linspace(0.72, 0.9, 11)], noise=0.01))
    assert falling.has_decrease and falling.decrease_end == 2 and falling.plateau_tolerance_needed == float("inf")


def test_seed_curves_give_three_phases_for_a_u_and_rarely_a_phase_for_flat_seeds():
    rng = np.random.default_rng(7)
    verdict = phase_verdict(VERDICT_STEPS, seed_curves=U_CURVE + 0.02 * rng.standard_normal((3, 12)))
    assert verdict.three_phases and (verdict.noise_source, verdict.noise_units) == ("seeds", 3)
    assert verdict.decrease.low < 0.30 < verdict.decrease.high
    flat = [phase_verdict(VERDICT_STEPS, seed_curves=1 + 0.02 * np.random.default_rng(seed).standard_normal((3, 12))) for seed in range(40)]
    assert sum(v.has_decrease or v.has_increase for v in flat) <= 8  # measured 8% at 300 runs; 20% allowed here


def test_verdict_round_trips_to_a_dict_and_rejects_bad_input():
    verdict = phase_verdict(VERDICT_STEPS, per_image_errors(U_CURVE, images=200))
    values = verdict.to_dict()
    assert values["labels"] == list(verdict.labels) and values["decrease"]["estimate"] == verdict.decrease.estimate
    assert isinstance(verdict.decrease, ChangeInterval) and isinstance(verdict, PhaseVerdict)
    with pytest.raises(ValueError, match="exactly one of per_image_errors"):
        phase_verdict(VERDICT_STEPS)
    with pytest.raises(ValueError, match="at least 3 seeds, got shape \\(2, 12\\)"):
        phase_verdict(VERDICT_STEPS, seed_curves=np.ones((2, 12)))
    with pytest.raises(ValueError, match="per_image_errors must be \\(steps, images\\)"):
        phase_verdict(VERDICT_STEPS, np.ones(12))
    with pytest.raises(ValueError, match="steps and values must have equal lengths"):
        phase_verdict(VERDICT_STEPS[:-1], np.ones((12, 5)))
    with pytest.raises(ValueError, match="min_effect must be a finite number >= 0"):
        VerdictSettings(min_effect=-0.1)
    with pytest.raises(ValueError, match="plateau_tolerance must be a finite number >= 0"):
        VerdictSettings(plateau_tolerance=float("nan"))
