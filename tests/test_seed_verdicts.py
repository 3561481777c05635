"""reproduce.verdicts.judge and the figures that use it: a run with 3 seeds in the figure table is judged across
them (hierarchical: seeds, then test images), a run with one seed over its test images only, and the summary
line says which. Synthetic tables and per-image errors: nothing is trained."""

import numpy as np
import pandas as pd
import pytest

from reproduce import verdicts
from reproduce.common import SEED_MARK, Options

STEPS = [0, 2, 4, 8, 16, 32, 64, 128]
SHAPE = np.array([1.0, 1.0, 1.0, 0.8, 0.6, 0.7, 0.85, 1.0])  # flat, falls, rises: three phases
CURVE = ("penultimate", "linear_ridge", "batch")
IMAGES = 60


def _errors(seed: int) -> np.ndarray:
    """steps x images per-image errors of one seed: a shared image difficulty, a seed's own level and image noise."""
    rng = np.random.default_rng(seed)
    difficulty = np.random.default_rng(99).gamma(4.0, 0.25, IMAGES)
    level = 1.0 + 0.02 * rng.standard_normal()
    return (SHAPE[:, None] * level * difficulty[None] * (1 + 0.02 * rng.standard_normal((len(STEPS), IMAGES)))).astype(np.float32)


def _rows(label: str, errors: np.ndarray, layer: str = CURVE[0], instrument: str = CURVE[1]) -> list[dict]:
    """A figure table's rows for one run: its reconstruction curve, and the accuracies the phases figure draws."""
    rows = [
        {
            "label": label,
            "metric": "reconstruction_mse",
            "split": "test",
            "instrument": instrument,
            "layer": layer,
            "bn_stats": "batch",
            "step": step,
            "value": float(value),
        }
        for step, value in zip(STEPS, errors.mean(axis=1))
    ]
    for metric, split, instrument_name, bn_stats in (
        ("classifier_accuracy", "test", "classifier", None),
        ("classifier_accuracy", "train", "classifier", None),
        ("probe_accuracy", "test", "probe", "batch"),
    ):
        rows += [
            {
                "label": label,
                "metric": metric,
                "split": split,
                "instrument": instrument_name,
                "layer": layer if bn_stats else None,
                "bn_stats": bn_stats,
                "step": step,
                "value": 0.5 + step / 512,
            }
            for step in STEPS
        ]
    return rows


def _table_and_errors(label: str, seeds: int) -> tuple[pd.DataFrame, dict]:
    """The figure table and the per-image errors of `label` at seed 0 and `seeds - 1` further seeds."""
    rows, per_image = [], {}
    for seed in range(seeds):
        seeded = label if seed == 0 else f"{label}{SEED_MARK}{seed}"
        errors = _errors(seed)
        rows += _rows(seeded, errors)
        per_image[verdicts.curve_key(seeded, *CURVE)] = (STEPS, errors)
    return pd.DataFrame(rows), per_image


def test_three_seeds_in_the_table_are_judged_across_seeds_hierarchically():
    table, per_image = _table_and_errors("VGG-8 / MNIST", 3)
    result, seeds = verdicts.judge(per_image, table, "VGG-8 / MNIST", *CURVE)
    assert list(seeds.columns) == ["VGG-8 / MNIST", "VGG-8 / MNIST / seed 1", "VGG-8 / MNIST / seed 2"]
    assert (result.noise_source, result.seeds, result.images) == ("seeds", 3, IMAGES)
    assert verdicts.noise_words(result) == "3 seeds, hierarchical: seeds then test images"
    assert result.three_phases
    # the verdict is on the seeds' mean curve, not seed 0's
    np.testing.assert_allclose(result.curve, seeds.mean(axis=1).to_numpy(), rtol=1e-5)


@pytest.mark.parametrize("seeds", [1, 2])
def test_fewer_than_three_seeds_are_judged_on_seed_0s_test_images(seeds):
    table, per_image = _table_and_errors("VGG-8 / MNIST", seeds)
    result, curves = verdicts.judge(per_image, table, "VGG-8 / MNIST", *CURVE)
    assert curves.shape[1] == seeds
    assert (result.noise_source, result.seeds, result.images) == ("images", 1, IMAGES)
    assert verdicts.noise_words(result) == "one seed: test-image noise only"
    np.testing.assert_allclose(result.curve, _errors(0).mean(axis=1), rtol=1e-5)


def test_a_seed_without_per_image_errors_leaves_the_seed_curves_and_the_line_says_so():
    table, per_image = _table_and_errors("VGG-8 / MNIST", 3)
    del per_image[verdicts.curve_key(f"VGG-8 / MNIST{SEED_MARK}2", *CURVE)]
    result, _ = verdicts.judge(per_image, table, "VGG-8 / MNIST", *CURVE)
    assert (result.seeds, result.images) == (3, 0)
    assert verdicts.noise_words(result) == "3 seeds: seed curves only (no per-image errors)"


def test_seed_labels_belong_to_their_run_and_sort_by_seed():
    labels = ["VGG", "VGG / seed 10", "VGG-8 / seed 1", "VGG / seed 2", "VGG / seed x"]
    assert verdicts.seed_labels(labels, "VGG") == ["VGG", "VGG / seed 2", "VGG / seed 10"]


def test_the_phases_figure_judges_runs_with_three_seeds_across_them_and_says_which_noise(tmp_path):
    from reproduce import phases

    three, three_errors = _table_and_errors("VGG-8 / MNIST", 3)
    one, one_errors = _table_and_errors("ResNet-10 / MNIST", 1)
    table = pd.concat([three, one], ignore_index=True)
    verdicts.write_per_image(tmp_path, phases.NAME, {**three_errors, **one_errors})
    options = Options(profile="full", out=tmp_path)
    rows = {label: result for label, _, result, _ in phases.phase_rows(table, options)}
    assert set(rows) == {"VGG-8 / MNIST", "ResNet-10 / MNIST"}  # further seeds are judged with their run, not as runs
    assert (rows["VGG-8 / MNIST"].seeds, rows["ResNet-10 / MNIST"].seeds) == (3, 1)
    headline, text = phases.plot(table, options)
    assert "3 seeds, hierarchical: seeds then test images; one seed: test-image noise only" in headline
    assert headline.startswith("three phases in 2 of 2 runs")
    assert "3 seeds x 60 test images (hierarchical" in text and "one seed: test-image noise only (60 images" in text


def test_the_layers_figure_states_the_noise_of_its_verdicts(tmp_path):
    from reproduce import layers

    table, per_image = _table_and_errors("VGG-8 / MNIST", 3)
    verdicts.write_per_image(tmp_path, layers.NAME, per_image)
    headline, _ = layers.plot(table, Options(profile="full", out=tmp_path))
    assert headline == "three phases at 1 of 1 probe points (penultimate; 3 seeds, hierarchical: seeds then test images)"
    single = table[~table["label"].str.contains(SEED_MARK, regex=False)]
    headline, _ = layers.plot(single, Options(profile="quick", out=tmp_path))
    assert headline == "three phases at 1 of 1 probe points (penultimate; one seed: test-image noise only)"


@pytest.mark.filterwarnings("ignore:No artists with labels")  # synthetic tables leave some panels empty
def test_the_decoders_figure_judges_the_closed_form_decoders_across_seeds(tmp_path):
    from reproduce import decoders

    table, per_image = _table_and_errors("VGG-8 / MNIST", 3)
    table = table[table["metric"] == "reconstruction_mse"].assign(decoder=lambda t: t["instrument"])
    verdicts.write_per_image(tmp_path, decoders.NAME, per_image)
    headline, text = decoders.plot(table, Options(profile="full", out=tmp_path))
    assert headline.endswith("(linear_ridge/batch) (3 seeds, hierarchical: seeds then test images)")
    assert "3 seeds x 60 test images (hierarchical" in text


@pytest.mark.filterwarnings("ignore:No artists with labels")  # synthetic tables leave some panels empty
def test_the_information_plane_figure_states_the_noise_of_its_reconstruction_verdicts(tmp_path):
    from reproduce import information_plane

    table, per_image = _table_and_errors("VGG-8 x0.125 relu / MNIST 10k", 3)
    table = table.assign(data="")
    verdicts.write_per_image(tmp_path, information_plane.NAME, per_image)
    headline, text = information_plane.plot(table, Options(profile="full", out=tmp_path))
    assert headline.endswith("; reconstruction verdicts: 3 seeds, hierarchical: seeds then test images")
    single = table[~table["label"].str.contains(SEED_MARK, regex=False)]
    headline, _ = information_plane.plot(single, Options(profile="quick", out=tmp_path))
    assert headline.endswith("; reconstruction verdicts: one seed: test-image noise only")


def _flat_with_fitting_noise(seed: int, steps: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(steps x images errors of the main fit, 4 refits x steps x images): a flat curve whose decoder fits move
    every image at a step together by 1% (the same for main fit and refits), and 0.2% per-image noise."""
    rng = np.random.default_rng(seed)
    difficulty = rng.gamma(4.0, 0.25, IMAGES)
    shared = 1 + 0.01 * rng.standard_normal((5, len(steps)))  # main fit, then 4 refits
    noisy = shared[:, :, None] * difficulty[None, None] * (1 + 0.002 * rng.standard_normal((5, len(steps), IMAGES)))
    return noisy[0].astype(np.float32), noisy[1:].astype(np.float32)


def test_decoder_refits_round_trip_through_the_figure_file_and_widen_one_seeds_intervals(tmp_path):
    # The refits see the fitting noise, the test images alone cannot. The figure file keeps the refits beside
    # the curve; the verdict reads them as replicates (mean: the curve) and its intervals then cover the
    # true change from step 0, which is 0, at nearly every step.
    steps = [0, 2, 4, 8, 16, 32, 64, 128]
    missed = {"plain": 0, "refits": 0}
    for seed in range(5):
        errors, refits = _flat_with_fitting_noise(seed, steps)
        key, plain_key = verdicts.curve_key("flat", *CURVE), verdicts.curve_key("plain", *CURVE)
        verdicts.write_per_image(tmp_path, "figure", {key: (steps, errors, refits), plain_key: (steps, errors)})
        back = verdicts.read_per_image(tmp_path, "figure")
        assert np.array_equal(back[key][1], errors) and np.array_equal(back[key][2], refits) and len(back[plain_key]) == 2
        series = pd.Series(errors.mean(axis=1), index=steps)
        with_refits, plain = verdicts.verdict(back, series, "flat", *CURVE), verdicts.verdict(back, series, "plain", *CURVE)
        assert with_refits.replicates == 4 and plain.replicates == 1 and with_refits.curve == pytest.approx(plain.curve, rel=1e-6)
        assert "and 4 decoder refits" in verdicts.noise_words(with_refits)
        for name, result in (("plain", plain), ("refits", with_refits)):
            start = result.curve[0]  # the band is each change from step 0 with its interval, drawn around the point
            missed[name] += sum(not (low <= start <= high) for low, high in zip(result.curve_low[1:], result.curve_high[1:]))
    # 4 refits estimate the fitting noise's variance with 3 degrees of freedom, so the 95% intervals cover
    # less than 95% (6 misses of 35 here); without refits they miss nearly always.
    assert missed["plain"] > 20 and missed["refits"] <= 8, missed
