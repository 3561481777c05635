"""Figure `mechanism` and its data options: outlier selection, random removal, blends, refusals, the smoke figure."""

import dataclasses
import json

import numpy as np
import pytest

from kphases import outliers
from kphases.config import DataConfig, RunConfig
from kphases.data import load_dataset
from reproduce import mechanism
from reproduce.common import read_table


def _two_class_set():
    """Class 0 around (1, 0), class 1 around (0, 1); images 2 and 5 sit nearer the other class's mean."""
    features = np.array([[1.0, 0.0], [0.9, 0.1], [0.2, 0.8], [0.0, 1.0], [0.1, 0.9], [0.7, 0.3]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    return features, labels


def test_selection_picks_exactly_the_images_closer_to_another_class_mean():
    features, labels = _two_class_set()
    # class means (0.7, 0.3) and (0.267, 0.733): image 2 (0.2, 0.8) is closer to class 1's, image 5 (0.7, 0.3) to class 0's
    assert outliers.closer_to_other_mean(features, labels).tolist() == [False, False, True, False, False, True]
    images = features.reshape(6, 1, 2, 1)
    assert outliers.outlier_mask(images, labels, "pixels").tolist() == [False, False, True, False, False, True]


def test_whitened_space_divides_out_the_within_class_spread():
    # Along axis 0 the classes differ by 1 and spread by 10; along axis 1 they differ by 1 and spread by 0.1.
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    features = np.stack([rng.normal(0, 10, 400) + labels, rng.normal(0, 0.1, 400) + labels], axis=1)
    whitened = outliers.fit_space(features.reshape(400, 2, 1, 1), labels, "whitened")(features.reshape(400, 2, 1, 1))
    within = np.concatenate([whitened[labels == label] - whitened[labels == label].mean(axis=0) for label in (0, 1)])
    assert np.allclose(np.cov(within.T, bias=True), np.eye(2), atol=1e-6)
    assert outliers.nearest_mean_accuracy(
        features.reshape(400, 2, 1, 1), labels, features.reshape(400, 2, 1, 1), labels, "whitened"
    ) > outliers.nearest_mean_accuracy(features.reshape(400, 2, 1, 1), labels, features.reshape(400, 2, 1, 1), labels, "pixels")


def test_random_removal_removes_as_many_images_in_each_class():
    labels = np.repeat(np.arange(4), 25)
    mask = np.zeros(100, bool)
    mask[[0, 1, 2, 30, 99]] = True
    drawn = outliers.random_like(mask, labels, seed=3)
    assert [int(drawn[labels == label].sum()) for label in range(4)] == [3, 1, 0, 1]
    assert np.array_equal(drawn, outliers.random_like(mask, labels, seed=3))
    assert not np.array_equal(drawn, outliers.random_like(mask, labels, seed=4))


def test_blending_at_zero_is_the_identity_and_at_one_reaches_the_other_class_mean():
    images = np.array([[1.0, 0.0], [3.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 6.0]], np.float32).reshape(5, 1, 2, 1)
    labels = np.array([0, 0, 0, 1, 1])
    chosen = np.array([False, False, True, False, True])
    targets = np.array([1, 0])
    assert np.array_equal(outliers.blend_towards(images, labels, chosen, targets, 0.0), images)
    moved = outliers.blend_towards(images, labels, chosen, targets, 1.0)
    # image 2 is its class's mean (2, 0): at distance 1 it is class 1's mean (0, 5); image 4 keeps its deviation (0, +1)
    assert moved[2].ravel().tolist() == [0.0, 5.0] and moved[4].ravel().tolist() == [2.0, 1.0]
    assert np.array_equal(moved[~chosen], images[~chosen])
    half = outliers.blend_towards(images, labels, chosen, targets, 0.5)
    assert half[2].ravel().tolist() == [1.0, 2.5]


def test_load_dataset_blends_the_images_label_noise_would_flip_and_keeps_their_labels():
    base = DataConfig(name="mnist", source="embedded", train_size=200, test_size=50)
    clean = load_dataset(base)
    flipped = load_dataset(dataclasses.replace(base, label_noise=0.1))
    blended = load_dataset(dataclasses.replace(base, blend_fraction=0.1, blend_distance=0.5))
    assert np.array_equal(blended.y_train, clean.y_train)
    assert np.array_equal(blended.blended, flipped.flipped) and blended.blended.sum() == 20
    assert np.array_equal(blended.x_train[~blended.blended], clean.x_train[~blended.blended])
    assert not np.allclose(blended.x_train[blended.blended], clean.x_train[blended.blended])
    assert np.array_equal(blended.x_test, clean.x_test)
    assert blended.describe()["blended_train_images"] == 20 and blended.fingerprint != clean.fingerprint


def test_load_dataset_removes_the_outliers_or_as_many_random_images():
    base = DataConfig(name="mnist", source="embedded", train_size=300, test_size=50)
    clean = load_dataset(base)
    mask = outliers.outlier_mask(clean.x_train, clean.y_train, "pixels")
    assert 0 < mask.sum() < 300
    removed = load_dataset(dataclasses.replace(base, remove="outliers"))
    assert np.array_equal(removed.x_train, clean.x_train[~mask]) and np.array_equal(removed.y_train, clean.y_train[~mask])
    random = load_dataset(dataclasses.replace(base, remove="random"))
    assert np.array_equal(np.bincount(random.y_train, minlength=10), np.bincount(removed.y_train, minlength=10))
    assert random.describe()["removed_train_images"] == int(mask.sum()) == removed.describe()["removed_train_images"]
    assert random.fingerprint not in (removed.fingerprint, clean.fingerprint)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(remove="all"), "data.remove = 'all' is not a valid choice; valid: 'none', 'outliers', 'random'"),
        (dict(outlier_space="features"), "data.outlier_space = 'features' is not a valid choice; valid: 'pixels', 'whitened'"),
        (dict(blend_fraction=1.0), "data.blend_fraction = 1.0 is out of range; valid: 0 <= blend_fraction < 1"),
        (dict(blend_distance=1.5), "data.blend_distance = 1.5 is out of range; valid: 0 <= blend_distance <= 1"),
        (dict(blend_fraction=0.1, label_noise=0.1), "data.label_noise and data.blend_fraction are set together"),
        (dict(remove="random", blend_fraction=0.1), "data.remove and data.blend_fraction are set together"),
    ],
)
def test_bad_options_are_refused_in_one_line(changes, message):
    with pytest.raises(ValueError) as error:
        DataConfig(**changes)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_new_fields_at_their_defaults_rename_no_run():
    assert "remove" not in RunConfig().to_json() and RunConfig().hash() == RunConfig.from_json(RunConfig().to_json()).hash()
    for field in ("remove", "outlier_space", "blend_fraction", "blend_distance"):
        assert field not in json.loads(RunConfig().to_json()).get("data", {})


def test_rise_statistics_known_answers():
    curves = np.array([[1.0, 0.5, 0.6], [1.0, 0.4, 0.5], [1.0, 0.5, 0.5]])
    assert mechanism.minimum_steps(curves) == [1, 1, 1]
    assert mechanism.reading(0.01, 0.05) == "larger"
    assert mechanism.reading(-0.01, 0.015).startswith("no difference")
    assert mechanism.reading(-0.05, 0.01).startswith("undecided")
    mean, low, high = mechanism.interval(np.array([0.1, 0.2, 0.3]), np.zeros(3))
    assert mean == pytest.approx(0.2) and high - mean == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-5)


def test_smoke_figure_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.delenv("KPHASES_DATA_DIR", raising=False)  # embedded MNIST only: the test path needs no data directory
    monkeypatch.setattr(mechanism, "SEEDS", (0,))  # one seed: the path without intervals, and minutes not tens of them
    out = tmp_path / "out"
    options = mechanism.MechanismOptions(profile="smoke", out=out, runs_dir=str(tmp_path / "runs"), progress=False)
    line = mechanism.main(options)
    assert "outliers removed - random removed" in line
    table = read_table(options, mechanism.NAME)
    assert set(table["condition"].dropna()) == {condition.name for condition in mechanism.CONDITIONS}
    assert (out / "mechanism.png").is_file() and (out / "mechanism.csv.record.json").is_file()
    summary = (out / "summary.md").read_text()
    assert "## mechanism" in summary and "| outliers removed - random removed |" in summary
    assert "blend 0.25" in summary and "three-phase verdict" in summary


def test_quick_profile_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        mechanism.main(mechanism.Options(profile="quick", out=tmp_path, progress=False))
    assert "figure mechanism has the profiles smoke and full" in capsys.readouterr().err
