"""kphases.phases: known answers for the phase verdict on synthetic curves with known noise."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kphases.phases import PLATEAU_MARGIN, ChangeInterval, PhaseVerdict, VerdictSettings, phase_verdict, refit_replicates

FIGURES = Path(__file__).resolve().parents[1] / "paper_figures"
STEPS = [0] + [2**power for power in range(1, 12)]  # 12 points, 0..2048, like the quick runs
DOUBLING = [0] + [2**power for power in range(1, 17)]  # 17 points, 0..65536, like the CIFAR-10 run

# A random search beside CI's fixed examples: new cases each run, few enough to stay fast.
settings.register_profile("random_search", derandomize=False, max_examples=20, deadline=None, print_blob=True)
RANDOM_SEARCH = settings.get_profile("random_search")


def per_image_errors(true_curve, images: int = 1000, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """(steps, images) errors with a known mean curve: image difficulty (gamma, mean 1, the same at every
    step: what the pairing removes) times the curve, times independent per-image noise of `noise`."""
    rng = np.random.default_rng(seed)
    difficulty = rng.gamma(2.0, 0.5, images)
    return np.asarray(true_curve)[:, None] * difficulty[None, :] * (1 + noise * rng.standard_normal((len(true_curve), images)))


def nested_errors(true_curve, seeds=1, replicates=1, images=300, noise=0.05, fit_noise=0.0, seed_noise=0.0, seed=0) -> np.ndarray:
    """(seeds, replicates, steps, images) errors: per seed a shift of the whole curve's shape (`seed_noise`
    per step), per decoder fit a factor shared by every image at a step (`fit_noise`), per image `noise`."""
    rng = np.random.default_rng(seed)
    curve = np.asarray(true_curve)
    out = np.empty((seeds, replicates, len(curve), images))
    for s in range(seeds):
        difficulty = rng.gamma(2.0, 0.5, images)
        seed_curve = curve * (1 + seed_noise * rng.standard_normal(len(curve)))
        for r in range(replicates):
            shared = 1 + fit_noise * rng.standard_normal(len(curve))
            out[s, r] = (seed_curve * shared)[:, None] * difficulty[None] * (1 + noise * rng.standard_normal((len(curve), images)))
    return out


def three_phase_curve(constant_end: int, minimum: int, depth: float, rise: float, noise: float, seed: int) -> np.ndarray:
    """Level 1 up to index constant_end, linear (in log-step) down by depth to index minimum, linear up
    by rise to the last index, plus Gaussian noise of standard deviation `noise` (shared by every image)."""
    index = np.arange(len(DOUBLING), dtype=float)
    last = len(DOUBLING) - 1
    clean = np.where(
        index <= constant_end,
        1.0,
        np.where(
            index <= minimum,
            1.0 - depth * (index - constant_end) / (minimum - constant_end),
            1.0 - depth + rise * (index - minimum) / max(last - minimum, 1),
        ),
    )
    return clean + noise * np.random.default_rng(seed).standard_normal(len(index))


U_CURVE = np.array([1, 1, 1, 1, 0.95, 0.85, 0.75, 0.70, 0.72, 0.76, 0.80, 0.85])


# --- flat curves: constant throughout, whatever their length and number of test images ----------


def check_flat_is_constant(length: int, images: int, resolution: float, seed: int) -> None:
    """`resolution`: the per-image noise as a multiple of sqrt(images) / 100, so that the standard error of a
    change (about 1.75 x noise / sqrt(images) with this difficulty spread) is at most 1.75 x resolution %:
    noise the images resolve inside the 2% margin, whatever their number (from 10: a bootstrap over fewer
    images has too few distinct resamples for a 95% interval)."""
    steps = [0] + [2**power for power in range(1, length)]
    noise = resolution * math.sqrt(images) / 100
    verdict = phase_verdict(steps, per_image_errors(np.ones(length), images, noise, seed), settings=VerdictSettings(seed=seed))
    assert verdict.has_constant and verdict.constant_end == steps[-1], verdict.describe()
    assert not verdict.has_decrease and not verdict.has_increase and verdict.labels == ("constant",) * length


FLAT = dict(length=st.integers(3, 17), images=st.integers(10, 4000), resolution=st.floats(0.0, 0.15), seed=st.integers(0, 10_000))


@given(**FLAT)
def test_flat_curves_of_any_length_and_any_number_of_images_are_constant(length, images, resolution, seed):
    check_flat_is_constant(length, images, resolution, seed)


@settings(RANDOM_SEARCH)
@given(**FLAT)
def test_flat_curves_are_constant_under_a_random_search(length, images, resolution, seed):
    check_flat_is_constant(length, images, resolution, seed)


def test_more_images_never_break_a_true_plateau():
    # A start that drifts by 1% (inside the 2% margin) before a 30% fall: more images only narrow the intervals.
    drifting = U_CURVE.copy()
    drifting[:4] = [1.0, 0.997, 0.993, 0.99]
    ends = [phase_verdict(STEPS, per_image_errors(drifting, images, seed=images)).constant_end for images in (30, 300, 3000, 30000)]
    assert ends[-1] == 8 and all(end is None or later == end or (later is not None and later >= end) for end, later in zip(ends, ends[1:]))
    assert all(end is not None for end in ends[1:])


# --- falls, rises and U shapes ------------------------------------------------------------------


def test_abrupt_u_with_plateau_gives_three_phases_with_intervals_that_cover_the_true_sizes():
    verdict = phase_verdict(STEPS, per_image_errors(U_CURVE))
    assert verdict.three_phases and (verdict.noise_source, verdict.seeds, verdict.images) == ("images", 1, 1000)
    assert verdict.constant_end in (4, 8) and verdict.decrease_end == 128 and verdict.increase_end == 2048
    # True sizes: 30% down (1 -> 0.70), 15% up (0.70 -> 0.85), relative to the initial 1.
    assert verdict.decrease.low < 0.30 < verdict.decrease.high and verdict.decrease.high - verdict.decrease.low < 0.05
    assert verdict.increase.low < 0.15 < verdict.increase.high
    assert verdict.labels[0] == "constant" and verdict.labels[7] == "decrease" and verdict.labels[-1] == "increase"
    assert -PLATEAU_MARGIN < verdict.plateau.low <= verdict.plateau.high < PLATEAU_MARGIN
    text = verdict.describe()
    assert text.startswith("three phases: constant until") and "plateau within +-2.0%" in text and "one seed: test-image noise only" in text


def test_a_gradual_fall_is_found_because_the_bootstrap_is_paired():
    # 8% down over 8 points: the levels' own sampling noise (difficulty CV ~0.7 over 1,000 images: ~2% per
    # level) would hide it; the paired differences (5% per-image noise: ~0.2%) do not.
    gradual = np.concatenate([[1.0, 1.0, 1.0], np.linspace(1.0, 0.92, 9)])
    verdict = phase_verdict(STEPS, per_image_errors(gradual, seed=1))
    assert verdict.has_decrease and not verdict.has_increase and not verdict.three_phases
    assert verdict.decrease.low < 0.08 < verdict.decrease.high and verdict.decrease_end == 2048
    assert verdict.has_constant and verdict.constant_end in (8, 16, 32)  # the first 2% of the fall stays inside the margin


def test_an_abrupt_six_percent_drop_is_found_after_its_plateau():
    abrupt = np.array([1.0] * 6 + [0.94] * 6)
    verdict = phase_verdict(STEPS, per_image_errors(abrupt, seed=2))
    assert verdict.has_constant and verdict.has_decrease and verdict.constant_end == 32 and verdict.decrease_end >= 64
    assert verdict.decrease.low < 0.06 < verdict.decrease.high and not verdict.has_increase


def test_a_rise_from_the_start_is_an_increase_without_constant_phase_or_decrease():
    rise = 1.0 + 0.03 * np.arange(12)  # +3% per point
    verdict = phase_verdict(STEPS, per_image_errors(rise, seed=3))
    assert verdict.has_increase and not verdict.has_decrease and not verdict.has_constant
    assert verdict.increase.low < 0.33 < verdict.increase.high and verdict.labels[0] == "undetermined"
    assert verdict.plateau_margin_needed > 0.02


def test_a_u_without_plateau_is_a_decrease_and_an_increase_but_not_three_phases():
    u = np.concatenate([np.linspace(1.0, 0.7, 6), np.linspace(0.7, 0.9, 7)[1:]])
    verdict = phase_verdict(STEPS, per_image_errors(u, seed=4))
    assert verdict.has_decrease and verdict.has_increase and not verdict.has_constant and not verdict.three_phases
    assert verdict.labels[0] == "undetermined" and verdict.decrease.start_step == 0 and verdict.plateau_margin_needed > 0.05


def test_the_margin_decides_a_near_constant_start_and_is_printed_with_what_the_curve_needs():
    # A certain 1.5% drift over the first four points, then the U: a plateau at the 2% margin, none at 1%.
    drifting = U_CURVE.copy()
    drifting[:4] = [1.0, 1.005, 1.01, 1.015]
    errors = per_image_errors(drifting, noise=0.01, seed=8)
    default = phase_verdict(STEPS, errors)
    assert default.three_phases and default.constant_end == 8 and default.plateau.low < 0.015 < default.plateau.high
    strict = phase_verdict(STEPS, errors, settings=VerdictSettings(plateau_margin=0.004))
    assert strict.has_decrease and strict.has_increase and not strict.has_constant and not strict.three_phases
    assert 0.004 < strict.plateau_margin_needed < 0.007  # the first change is 0.5%: that plus its interval
    assert "no constant phase within +-0.4% (needs 0." in strict.describe()
    # a fall whose minimum is the second point leaves no room for a plateau at any margin
    falling = phase_verdict(STEPS, per_image_errors(np.r_[1.0, np.linspace(0.72, 0.9, 11)], noise=0.01))
    assert falling.has_decrease and falling.decrease_end == 2 and falling.plateau_margin_needed == math.inf
    assert "no room before the minimum" in falling.describe()


def test_min_effect_decides_a_small_but_certain_change_and_is_printed():
    small = np.array([1.0] * 6 + [0.97] * 6)
    errors = per_image_errors(small, noise=0.01, seed=6)
    assert phase_verdict(STEPS, errors).has_decrease
    strict = phase_verdict(STEPS, errors, settings=VerdictSettings(min_effect=0.05))
    assert not strict.has_decrease and "beyond 5.0% of the initial loss" in strict.describe()
    # a certain 1% step is inside the plateau margin: constant throughout, not a decrease
    tiny = phase_verdict(STEPS, per_image_errors(np.array([1.0] * 6 + [0.99] * 6), noise=0.01, seed=6))
    assert not tiny.has_decrease and tiny.constant_end == 2048


# --- curves with several dips: the decrease ends at the first trough the curve leaves for good ---------


def test_a_shallow_early_dip_that_a_deeper_one_follows_is_part_of_the_fall():
    # A 10% dip at 16 rises 5% (beyond the 2% of a phase), but the curve then falls to 0.60 at 256: the
    # early dip is undercut, so the minimum is the deeper one and the fall runs from the plateau to it.
    shallow_then_deep = np.array([1, 1, 1, 1, 0.9, 0.95, 0.85, 0.7, 0.6, 0.65, 0.7, 0.75])
    verdict = phase_verdict(STEPS, per_image_errors(shallow_then_deep, noise=0.01, seed=11))
    assert verdict.three_phases and verdict.constant_end == 8
    assert verdict.decrease.start_step in STEPS[:4]  # the highest point of the plateau: image noise decides which
    assert (verdict.decrease_end, verdict.increase.start_step, verdict.increase_end) == (256, 256, 2048)
    assert verdict.decrease.low < 0.40 < verdict.decrease.high and verdict.increase.low < 0.15 < verdict.increase.high
    assert verdict.labels[4:9] == ("decrease",) * 5 and verdict.labels[9:] == ("increase",) * 3


def test_a_deep_early_dip_then_wiggles_inside_the_margin_is_a_decrease_to_the_floor_and_no_rise():
    # After the dip to 0.60 the curve wiggles by less than 2% (to 0.595 at 256, up to 0.615): no wiggle is a
    # phase, so there is one valley, its lowest point is the minimum and nothing after it is an increase.
    dip_then_wiggles = np.array([1, 1, 1, 1, 0.6, 0.61, 0.605, 0.615, 0.595, 0.61, 0.6, 0.605])
    verdict = phase_verdict(STEPS, per_image_errors(dip_then_wiggles, noise=0.01, seed=12))
    assert verdict.has_constant and verdict.has_decrease and not verdict.has_increase and not verdict.three_phases
    assert verdict.constant_end == 8 and verdict.decrease_end == 256 and verdict.decrease.low < 0.405 < verdict.decrease.high
    assert verdict.increase.high < 0.03 and verdict.labels[9:] == ("undetermined",) * 3


W_FIRST_DIP = np.array([1, 1, 1, 1, 0.85, 0.70, 0.9, 1.05, 0.9, 0.69, 0.8, 0.9])
"""A W whose second dip (0.69 at 512) is 1% below the first (0.70 at 32), after a larger fall (1.05 -> 0.69)."""
W_SECOND_DIP = np.array([1, 1, 1, 1, 0.85, 0.70, 0.9, 1.05, 0.8, 0.6, 0.7, 0.8])
"""A W whose second dip (0.60 at 512) is 10% below the first: the first dip is undercut."""


def test_of_two_dips_within_the_margin_the_first_is_the_minimum_and_the_later_fall_belongs_to_the_rise():
    # The largest fall of the curve (1.05 -> 0.69, 36%) and its global minimum (0.69) are both in the second
    # dip; the paper's reading (near constant, falls, rises) ends the fall at the first dip.
    verdict = phase_verdict(STEPS, per_image_errors(W_FIRST_DIP, noise=0.01, seed=13))
    assert verdict.three_phases and verdict.constant_end == 8
    assert verdict.decrease.start_step in STEPS[:4]
    assert (verdict.decrease_end, verdict.increase.start_step, verdict.increase_end) == (32, 32, 128)
    assert verdict.decrease.low < 0.30 < verdict.decrease.high and verdict.increase.low < 0.35 < verdict.increase.high
    # across 3 seeds the same: each held-out mean curve picks its own first dip
    seeds = phase_verdict(STEPS, seed_curves=W_FIRST_DIP + 0.002 * np.random.default_rng(13).standard_normal((3, 12)))
    assert seeds.three_phases and (seeds.decrease_end, seeds.increase_end) == (32, 128)


def test_a_w_whose_second_dip_is_deeper_by_more_than_the_margin_falls_to_the_second_dip():
    verdict = phase_verdict(STEPS, per_image_errors(W_SECOND_DIP, noise=0.01, seed=14))
    assert verdict.three_phases and verdict.constant_end == 8
    # the decrease is the largest fall before the minimum (1.05 at 128 -> 0.60 at 512); the bump is undetermined
    assert (verdict.decrease.start_step, verdict.decrease_end, verdict.increase.start_step, verdict.increase_end) == (128, 512, 512, 2048)
    assert verdict.decrease.low < 0.45 < verdict.decrease.high and verdict.labels[4:8] == ("undetermined",) * 4


def test_a_curve_whose_minimum_is_its_first_point_has_no_decrease_and_says_so():
    # Rises 10%, dips 5% (not below the start), rises again: the dip is inside the rise, not a decrease.
    rising = np.array([1, 1.05, 1.1, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.35, 1.4, 1.45])
    verdict = phase_verdict(STEPS, per_image_errors(rising, noise=0.01, seed=15))
    assert not verdict.has_decrease and verdict.decrease_end is None and verdict.decrease.end_step is None
    assert verdict.has_increase and verdict.increase.start_step == 0 and verdict.increase_end == 2048
    assert "no decrease (the minimum is the first measurement)" in verdict.describe()


def test_the_authors_length_run_falls_to_its_first_minimum_and_rises_from_there():
    # paper_figures/authors_length_per_image.csv: the README run to 65,536 iterations (seed 0) falls to its minimum,
    # rises, and dips again later by more than its first fall (docs/findings.md, section `authors_length`).
    table = pd.read_csv(FIGURES / "authors_length_per_image.csv")
    table = table[table["curve"].str.startswith("seed 0|")]
    wide = table.pivot(index="step", columns="image", values="error").sort_index()
    steps, errors = [int(step) for step in wide.index], wide.to_numpy(dtype=np.float64)
    curve = errors.mean(axis=1)
    minimum, peak = int(np.argmin(curve)), int(np.argmax(curve))
    later_dip = int(np.argmin(curve[peak:])) + peak
    assert minimum < peak < later_dip and curve[peak] - curve[later_dip] > curve[:minimum].max() - curve[minimum]
    verdict = phase_verdict(steps, errors)
    assert verdict.three_phases and verdict.decrease_end == steps[minimum] and verdict.increase.start_step == steps[minimum]
    assert verdict.increase_end == steps[peak] and verdict.labels[later_dip] == "undetermined"


# --- scale invariance ---------------------------------------------------------------------------


def check_scaling_changes_nothing(constant_end, minimum, depth, rise, noise, seed, factor):
    errors = per_image_errors(three_phase_curve(constant_end, minimum, depth, rise, noise, seed), images=200, seed=seed)
    original, scaled = phase_verdict(DOUBLING, errors), phase_verdict(DOUBLING, factor * errors)
    assert scaled.labels == original.labels
    assert (scaled.constant_end, scaled.decrease_end, scaled.increase_end, scaled.three_phases) == (
        original.constant_end,
        original.decrease_end,
        original.increase_end,
        original.three_phases,
    )
    for name in ("decrease", "increase", "plateau"):
        for part in ("estimate", "low", "high"):
            assert getattr(getattr(scaled, name), part) == pytest.approx(getattr(getattr(original, name), part), abs=1e-9)
    assert scaled.scale == pytest.approx(factor * original.scale)


SCALING = dict(
    constant_end=st.integers(1, 6),
    minimum=st.integers(9, 13),
    depth=st.floats(0.0, 0.6),
    rise=st.floats(0.0, 0.8),
    noise=st.floats(0.0, 0.03),
    seed=st.integers(0, 10_000),
    factor=st.one_of(st.sampled_from([2.0**-10, 0.5, 4.0, 2.0**20]), st.floats(1e-3, 1e3)),
)


@given(**SCALING)
@example(constant_end=1, minimum=11, depth=0.5, rise=0.0, noise=0.0, seed=0, factor=553.0)
def test_scaling_the_errors_by_a_positive_constant_changes_nothing(constant_end, minimum, depth, rise, noise, seed, factor):
    check_scaling_changes_nothing(constant_end, minimum, depth, rise, noise, seed, factor)


@settings(RANDOM_SEARCH)
@given(**SCALING)
def test_scaling_changes_nothing_under_a_random_search(constant_end, minimum, depth, rise, noise, seed, factor):
    check_scaling_changes_nothing(constant_end, minimum, depth, rise, noise, seed, factor)


@pytest.mark.parametrize("factor", [1e-3, 37.5])
def test_seed_curves_and_nested_errors_do_not_change_when_multiplied_by_a_constant(factor):
    seeds = U_CURVE + 0.01 * np.random.default_rng(0).standard_normal((3, 12))
    assert phase_verdict(STEPS, seed_curves=factor * seeds).labels == phase_verdict(STEPS, seed_curves=seeds).labels
    nested = nested_errors(U_CURVE, seeds=3, replicates=2, fit_noise=0.003, seed=1)
    original, scaled = phase_verdict(STEPS, nested), phase_verdict(STEPS, factor * nested)
    assert scaled.labels == original.labels and scaled.decrease.low == pytest.approx(original.decrease.low, abs=1e-12)


# --- noise beyond the test images: seeds and decoder refits -------------------------------------


def test_noise_shared_by_all_images_at_a_step_fools_one_seed_but_not_three():
    # The decoder's fitting noise (2% per step, the same for every image) is invisible to a resample of
    # the images: one seed's flat curve then shows confident changes; three seeds' hierarchical intervals
    # carry it. A 2% per-step noise also leaves no room for a plateau within +-2%.
    flat = np.ones(12)
    one_seed = [phase_verdict(STEPS, nested_errors(flat, fit_noise=0.02, seed=seed)[0, 0]) for seed in range(6)]
    assert sum(verdict.has_decrease or verdict.has_increase for verdict in one_seed) >= 5
    assert all("one seed: test-image noise only (300 images" in verdict.describe() for verdict in one_seed)
    three = [phase_verdict(STEPS, nested_errors(flat, seeds=3, fit_noise=0.02, seed=seed)) for seed in range(6)]
    assert sum(verdict.has_decrease or verdict.has_increase for verdict in three) <= 1
    assert all(verdict.noise_source == "seeds" and "3 seeds x 300 test images (hierarchical" in verdict.describe() for verdict in three)


def test_three_seeds_find_the_three_phases_of_a_u():
    verdicts = [
        phase_verdict(STEPS, nested_errors(U_CURVE, seeds=3, images=1000, noise=0.02, seed_noise=0.002, seed=seed)) for seed in range(6)
    ]
    assert sum(verdict.three_phases for verdict in verdicts) >= 5
    assert all(verdict.decrease.low < 0.30 < verdict.decrease.high for verdict in verdicts)


def test_replicate_fits_carry_the_decoders_fitting_noise_into_one_seeds_intervals():
    # A flat curve whose decoder fits add 1% noise shared by every image at a step: the true change from step
    # 0 is 0 everywhere. Intervals from the images alone exclude it at most steps; with 4 refits they cover it.
    flat = np.ones(12)
    plain = [phase_verdict(STEPS, nested_errors(flat, fit_noise=0.01, seed=seed)[0, 0]) for seed in range(5)]
    refits = [phase_verdict(STEPS, nested_errors(flat, replicates=4, fit_noise=0.01, seed=seed)) for seed in range(5)]

    def misses(verdict):  # steps whose interval of the change from step 0 excludes the true 0 (band: that interval + curve[0])
        start = verdict.curve[0]
        return sum(not (low <= start <= high) for low, high in zip(verdict.curve_low[1:], verdict.curve_high[1:]))

    assert sum(map(misses, plain)) > 20 and sum(map(misses, refits)) <= 0.1 * 11 * len(refits)
    assert not any(verdict.has_decrease or verdict.has_increase for verdict in refits)
    assert "one seed: test-image noise only and 4 decoder refits" in refits[0].describe() and refits[0].replicates == 4


def test_refit_replicates_keep_the_curve_and_carry_one_fits_spread():
    # Replicates average to the main fit's errors; their mean's bootstrap spread is one refit's spread
    # (the delete-half jackknife), so it is sqrt(R) times the refits' deviations, not 1/sqrt(R).
    rng = np.random.default_rng(21)
    errors = 1 + 0.1 * rng.random((5, 40))
    refits = errors[None] + 0.05 + 0.01 * rng.standard_normal((4, 5, 1))  # a higher level, a 1% spread shared by the images
    replicates = refit_replicates(errors, refits)
    assert replicates.shape == (4, 5, 40) and np.allclose(replicates.mean(axis=0), errors)
    deviation = replicates - errors[None]
    assert np.allclose(deviation, 2.0 * (refits - refits.mean(axis=0, keepdims=True)))
    with pytest.raises(ValueError, match="refits >= 2"):
        refit_replicates(errors, refits[:1])
    with pytest.raises(ValueError, match="got \\(5, 40\\) and \\(4, 5, 39\\)"):
        refit_replicates(errors, refits[:, :, :39])


def test_the_hierarchical_interval_is_the_t_interval_when_seed_curves_have_no_images():
    rng = np.random.default_rng(7)
    curves = U_CURVE + 0.02 * rng.standard_normal((4, 12))
    verdict = phase_verdict(STEPS, seed_curves=curves)
    change = (curves[:, 2] - curves[:, 0]) / curves[:, 0].mean()
    half = 3.182446305284263 * change.std(ddof=1) / 2  # t(0.975, 3 df) x standard error over 4 seeds
    low, high = verdict.curve_low[2] / verdict.scale, verdict.curve_high[2] / verdict.scale
    assert (high - low) / 2 == pytest.approx(half, rel=1e-9)
    assert "4 seeds (seed curves; t-interval)" in verdict.describe()


def test_seed_curves_give_three_phases_for_a_u_and_rarely_a_phase_for_flat_seeds():
    rng = np.random.default_rng(7)
    verdict = phase_verdict(STEPS, seed_curves=U_CURVE + 0.002 * rng.standard_normal((3, 12)))
    assert verdict.three_phases and (verdict.noise_source, verdict.seeds, verdict.images) == ("seeds", 3, 0)
    assert verdict.decrease.low < 0.30 < verdict.decrease.high
    flat = [phase_verdict(STEPS, seed_curves=1 + 0.02 * np.random.default_rng(seed).standard_normal((3, 12))) for seed in range(40)]
    assert sum(v.has_decrease or v.has_increase for v in flat) <= 4


# --- the record and bad input -------------------------------------------------------------------


def test_verdict_round_trips_to_a_dict_and_rejects_bad_input():
    verdict = phase_verdict(STEPS, per_image_errors(U_CURVE, images=200))
    values = verdict.to_dict()
    assert values["labels"] == list(verdict.labels) and values["decrease"]["estimate"] == verdict.decrease.estimate
    assert values["settings"]["plateau_margin"] == PLATEAU_MARGIN
    assert isinstance(verdict.decrease, ChangeInterval) and isinstance(verdict, PhaseVerdict)
    with pytest.raises(ValueError, match="exactly one of per_image_errors"):
        phase_verdict(STEPS)
    with pytest.raises(ValueError, match="at least 3 seeds, got shape \\(2, 12\\)"):
        phase_verdict(STEPS, seed_curves=np.ones((2, 12)))
    with pytest.raises(ValueError, match="2 seeds give a seed-level interval with 1 degree of freedom"):
        phase_verdict(STEPS, np.ones((2, 12, 5)))
    with pytest.raises(ValueError, match="per_image_errors must be \\(steps, images\\)"):
        phase_verdict(STEPS, np.ones(12))
    with pytest.raises(ValueError, match="steps and values must have equal lengths"):
        phase_verdict(STEPS[:-1], np.ones((12, 5)))
    with pytest.raises(ValueError, match="steps must increase strictly: 2 follows 2"):
        phase_verdict([0, 2, 2], np.ones((3, 5)))
    with pytest.raises(ValueError, match="must be finite"):
        phase_verdict(STEPS, np.full((12, 5), np.nan))
    with pytest.raises(ValueError, match="min_effect must be a finite number >= 0"):
        VerdictSettings(min_effect=-0.1)
    with pytest.raises(ValueError, match="plateau_margin must be a finite number > 0"):
        VerdictSettings(plateau_margin=0.0)


def test_the_hierarchical_interval_is_the_ideal_bootstrap_over_seeds_then_images_in_closed_form():
    # 3 seeds x 1 fit x 3 steps x 4 images: the interval of each change from step 0 is t(2 df) x the standard
    # error of the ideal two-level bootstrap: the seeds' spread (unbiased) plus each seed's images' spread / images.
    rng = np.random.default_rng(3)
    errors = 1.0 + 0.1 * rng.random((3, 1, 3, 4))
    verdict = phase_verdict([0, 2, 4], errors)
    change = (errors[:, 0, 2, :] - errors[:, 0, 0, :]) / errors[:, 0, 0, :].mean()  # seeds x images, relative
    per_seed = change.mean(axis=1)
    within = (change.var(axis=1) / 4).mean()
    half = 4.302652729911275 * math.sqrt((per_seed.var(ddof=1) + within) / 3)
    assert (verdict.curve_high[2] - verdict.curve_low[2]) / 2 / verdict.scale == pytest.approx(half, rel=1e-9)
    assert verdict.noise == "3 seeds x 4 test images (hierarchical, cross-fitted)"
