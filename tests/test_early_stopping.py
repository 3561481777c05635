"""The early_stopping figure: the class-split data, the runs planned at full, and the comparison's
differences, intervals and readings on known tables."""

import math

import numpy as np
import pandas as pd
import pytest

from kphases.config import DataConfig
from kphases.data import keep_classes, load_dataset, other_classes
from kphases.measurement import switch_data
from reproduce import early_stopping, transfer
from reproduce.common import Options
from reproduce.early_stopping import compare, reading, verdict_text


def _rows(setting, seed, accuracies, decided_at=64, final_step=1024, test_images=1000):
    steps = {"monitor": 64 if decided_at is not None else final_step, "oracle": 128, "final": final_step, "validation_loss": 512}
    return [
        {
            "setting": setting,
            "seed": seed,
            "checkpoint": checkpoint,
            "step": steps[checkpoint],
            "target_accuracy": accuracy,
            "decided_at": decided_at,
            "final_step": final_step,
            "target_test_images": test_images,
        }
        for checkpoint, accuracy in accuracies.items()
    ]


def test_three_seeds_give_a_t_interval_and_the_compute_saved():
    rows = []
    for seed, gain in enumerate([0.04, 0.05, 0.06]):
        rows += _rows("colour", seed, {"monitor": 0.80 + gain, "oracle": 0.87, "final": 0.80, "validation_loss": 0.81}, decided_at=256)
    result = compare(pd.DataFrame(rows)).iloc[0]
    assert result["monitor_minus_final"] == pytest.approx(0.05)
    half = 4.30265 * 0.01 / math.sqrt(3)  # t(0.975, 2 dof) x sd / sqrt(n)
    assert result["monitor_minus_final_low"] == pytest.approx(0.05 - half, rel=1e-5)
    assert result["monitor_minus_final_high"] == pytest.approx(0.05 + half, rel=1e-5)
    assert result["compute_saved"] == pytest.approx(1 - 256 / 1024)
    assert reading(result["monitor_minus_final_low"], result["monitor_minus_final_high"], result["decided_in"]) == "helps"


def test_one_seed_gives_a_binomial_interval():
    rows = _rows("switch", 0, {"monitor": 0.70, "oracle": 0.75, "final": 0.72, "validation_loss": 0.72}, test_images=2000)
    result = compare(pd.DataFrame(rows)).iloc[0]
    half = 1.96 * math.sqrt(0.70 * 0.30 / 2000 + 0.72 * 0.28 / 2000)
    assert result["monitor_minus_final"] == pytest.approx(-0.02)
    assert (result["monitor_minus_final_low"], result["monitor_minus_final_high"]) == pytest.approx((-0.02 - half, -0.02 + half))
    # [-0.048, +0.008]: a gain of the margin (0.01) is excluded, a loss of more than it is not
    assert (
        reading(result["monitor_minus_final_low"], result["monitor_minus_final_high"], 1)
        == "does not help (a gain of 0.01 or more is excluded)"
    )


def test_an_undecided_monitor_keeps_the_final_checkpoint_and_saves_nothing():
    rows = _rows("switch", 0, {"monitor": 0.72, "oracle": 0.75, "final": 0.72, "validation_loss": 0.72}, decided_at=None)
    result = compare(pd.DataFrame(rows)).iloc[0]
    assert result["compute_saved"] == 0.0 and result["decided_in"] == 0
    assert (
        reading(result["monitor_minus_final_low"], result["monitor_minus_final_high"], 0)
        == "does not help (never decided: kept the final checkpoint)"
    )


def test_a_confident_loss_reads_does_not_help_worse():
    rows = []
    for seed, loss in enumerate([0.10, 0.11, 0.12]):
        rows += _rows("colour", seed, {"monitor": 0.80 - loss, "oracle": 0.85, "final": 0.80, "validation_loss": 0.80})
    result = compare(pd.DataFrame(rows)).iloc[0]
    assert reading(result["monitor_minus_final_low"], result["monitor_minus_final_high"], 3) == "does not help (worse)"


# --- the reading rule, on synthetic seeds ---------------------------------------------------------


def _three_seeds(setting, gains, decided_at=64):
    rows = []
    for seed, gain in enumerate(gains):
        rows += _rows(setting, seed, {"monitor": 0.80 + gain, "oracle": 0.82, "final": 0.80, "validation_loss": 0.80}, decided_at)
    return rows


@pytest.mark.parametrize(
    "gains, expected",
    [
        ((0.020, 0.025, 0.030), "helps"),  # interval above 0
        ((-0.001, 0.000, 0.001), "does not help (equivalent within +-0.01)"),  # inside +-margin
        ((-0.012, -0.008, -0.004), "does not help (a gain of 0.01 or more is excluded)"),  # upper end below the margin
        ((-0.030, -0.025, -0.020), "does not help (worse)"),  # interval below 0
        ((-0.010, 0.005, 0.030), "undecided (the interval includes 0 and a gain of 0.01)"),
    ],
)
def test_the_reading_follows_the_stated_rule_on_seed_intervals(gains, expected):
    result = compare(pd.DataFrame(_three_seeds("target", gains))).iloc[0]
    assert reading(result["monitor_minus_final_low"], result["monitor_minus_final_high"], result["decided_in"]) == expected


def test_the_verdict_text_says_per_target_helps_does_not_help_or_undecided():
    rows = _three_seeds("A -> helped", (0.020, 0.025, 0.030))
    rows += _three_seeds("B -> never decided", (0.0, 0.0, 0.0), decided_at=None)
    rows += _three_seeds("C -> unclear", (-0.010, 0.005, 0.030))
    lines = verdict_text(compare(pd.DataFrame(rows)))
    assert len(lines) == 3
    # A's monitor is 0.005 above this table's oracle: its interval [-0.007, +0.017] lies within the margin of it
    assert lines[0] == (
        "- A -> helped (3 seeds, decided in 3): against the final checkpoint: helps, +0.025 [+0.013, +0.037]; "
        "against the oracle: +0.005 [-0.007, +0.017], within 0.01 of it; against source-loss stopping: helps, "
        "+0.025 [+0.013, +0.037]; compute saved 94%."
    )
    assert "against the final checkpoint: does not help (never decided: kept the final checkpoint), +0.000" in lines[1]
    assert "against the oracle: -0.020 [-0.020, -0.020], more than 0.01 below it;" in lines[1]
    assert "compute saved 0%" in lines[1]
    assert "against the final checkpoint: undecided (the interval includes 0 and a gain of 0.01)" in lines[2]
    assert "not shown to be within 0.01 of it" in lines[2]


# --- the class split --------------------------------------------------------------------------------


def test_keep_classes_keeps_only_those_classes_and_numbers_them_from_zero():
    labels = np.array([5, 0, 7, 5, 9, 3, 7])
    images = np.arange(len(labels))[:, None] * np.ones((1, 2))
    kept_images, kept_labels = keep_classes(images, labels, (5, 7, 9))
    assert kept_labels.tolist() == [0, 1, 0, 2, 1]  # 5 -> 0, 7 -> 1, 9 -> 2, in the original order
    assert kept_images[:, 0].tolist() == [0, 2, 3, 4, 6]


def test_a_class_subset_of_embedded_mnist_has_only_its_classes_relabelled():
    full = load_dataset(DataConfig("mnist", "embedded"))
    half = load_dataset(DataConfig("mnist", "embedded", classes=(5, 6, 7, 8, 9)))
    assert half.num_classes == 5 and sorted(set(half.y_train.tolist())) == [0, 1, 2, 3, 4]
    assert len(half.y_train) == int(np.isin(full.y_train, (5, 6, 7, 8, 9)).sum())
    # the images kept are exactly the train images of classes 5-9, label 0 being class 5
    np.testing.assert_array_equal(half.x_train[half.y_train == 0], full.x_train[full.y_train == 5])
    assert "classes=5-9" in half.origin and half.describe()["classes"] == [5, 6, 7, 8, 9]
    assert other_classes(DataConfig("mnist", "embedded", classes=(0, 1, 2, 3, 4))).classes == (5, 6, 7, 8, 9)


def test_a_bad_class_subset_is_one_line_naming_it_and_what_is_valid():
    for bad in ((4, 0), (0,), (0, 10), (0, 0, 1)):
        with pytest.raises(ValueError, match=r"data.classes = .* is not valid; valid: None or a tuple of at least 2 strictly increasing"):
            DataConfig("cifar10", "directory", classes=bad)


def test_the_dataset_switch_of_a_class_subset_is_the_other_classes():
    name, target = switch_data(DataConfig("cifar10", "directory", file="cifar10.npz", classes=(0, 1, 2, 3, 4)), "cifar10")
    assert name == "cifar10[5-9]" and target.classes == (5, 6, 7, 8, 9) and target.file == "cifar10.npz"
    name, target = switch_data(DataConfig("mnist", "directory"), "fashion_mnist")
    assert name == "fashion_mnist" and target == DataConfig("fashion_mnist", "directory")


# --- what full plans ----------------------------------------------------------------------------------


@pytest.fixture
def full_options(tmp_path):
    """The full profile with a data directory holding (empty) files of every name it plans with: planning reads none."""
    for name in ("mnist", "fashion_mnist", "cifar10", "cifar10_jpeg_q75"):
        (tmp_path / f"{name}.npz").write_bytes(b"")
    return Options(profile="full", data_dir=str(tmp_path))


def test_full_plans_every_semantic_switch_with_three_seeds(full_options):
    seeds: dict[str, set[int]] = {}
    for planned in early_stopping._settings(full_options):
        if "colour" in planned.label or planned.measure.transfer == ("color_dominance",):
            continue
        seeds.setdefault(planned.label.split(" / seed ")[0], set()).add(planned.config.training.seed)
    assert seeds == {
        "VGG-8 / MNIST": {0, 1, 2},
        "ResNet-10 x1/8 / MNIST": {0, 1, 2},
        "VGG-8 / Fashion-MNIST": {0, 1, 2},
        "ResNet-10 x1/8 / Fashion-MNIST": {0, 1, 2},
        "VGG-8 / CIFAR-10 classes 0-4 (4,000 / 1,000 copy)": {0, 1, 2},
    }
    split = transfer.class_split_runs(full_options)
    assert [run.config.data.classes for run in split] == [(0, 1, 2, 3, 4)] * 3
    assert all(run.config.data.file == "cifar10.npz" and run.config.model.architecture == "vgg8" for run in split)
    assert all(run.measure.transfer == ("dataset_switch",) for run in split)
    # the transfer figure measures the same runs (early_stopping reads its cells)
    planned_by_transfer = {item.planned.config.hash() for item in transfer.work(full_options)}
    assert {run.config.hash() for run in early_stopping._settings(full_options)} <= planned_by_transfer
