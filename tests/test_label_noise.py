"""Figure `label_noise`: its runs (the 0% one shared with `phases`) and the clean/flipped accuracies training logs."""

import dataclasses

import numpy as np
import pandas as pd

from kphases.config import DataConfig, profile
from kphases.store import Run
from kphases.training import train
from reproduce import label_noise, phases, reference_run
from reproduce.common import parse_options


def _mock_data_dir(tmp_path):
    for name in ("mnist", "fashion_mnist"):
        np.savez(
            tmp_path / f"{name}.npz",
            x_train=np.zeros((20, 28, 28), np.uint8),
            y_train=np.arange(20) % 10,
            x_test=np.zeros((10, 28, 28), np.uint8),
            y_test=np.arange(10) % 10,
        )
    np.savez(
        tmp_path / "cifar10_jpeg_q75.npz",
        x_train=np.zeros((20, 32, 32, 3), np.uint8),
        y_train=np.arange(20) % 10,
        x_test=np.zeros((10, 32, 32, 3), np.uint8),
        y_test=np.arange(10) % 10,
    )
    return tmp_path


def test_full_runs_share_the_phases_runs_and_differ_only_in_noise_and_seed(tmp_path):
    options = parse_options("", ["--profile", "full", "--data-dir", str(_mock_data_dir(tmp_path)), "--runs-dir", str(tmp_path / "runs")])
    runs = label_noise.planned_runs(options)
    assert len(runs) == 6 and len({p.config.hash() for p in runs}) == 6
    phases_hashes = {item.planned.config.hash() for item in phases.work(options)}
    # The clean runs are the three seeds of the phases figure's VGG-8/MNIST run: trained once.
    assert [p.label for p in runs if p.config.hash() in phases_hashes] == [f"noise 0% / seed {seed}" for seed in (0, 1, 2)]
    base = runs[0].config
    for planned in runs:
        assert planned.config.data == dataclasses.replace(base.data, label_noise=planned.config.data.label_noise)
        assert planned.config.model == base.model and planned.config.training.duration == "1024it"
        assert planned.measure.decoders == ("linear_ridge",) and not planned.measure.probe and planned.measure.transfer == ()
    assert sorted({(p.config.data.label_noise, p.config.training.seed) for p in runs}) == [
        (level, seed) for level in (0.0, 0.2) for seed in (0, 1, 2)
    ]
    # reference_run at full: the JPEG copy by name, 2,048 iterations, measured on fixed 10,000 / 2,000 subsets.
    reference = reference_run.seeded_runs(options)
    assert [p.config.training.seed for p in reference] == [0, 1, 2]
    assert reference[0].config.data == DataConfig("cifar10", "directory", file="cifar10_jpeg_q75.npz")
    assert reference[0].config.training.duration == "2048it"
    assert (reference[0].measure.train_size, reference[0].measure.test_size) == (10_000, 2_000)


def test_quick_runs_are_the_embedded_ends_of_the_noise_range_and_read_no_data_directory(tmp_path):
    options = parse_options("", ["--profile", "quick", "--data-dir", str(_mock_data_dir(tmp_path)), "--runs-dir", str(tmp_path / "runs")])
    runs = label_noise.planned_runs(options)
    assert sorted({(p.config.data.label_noise, p.config.training.seed) for p in runs}) == [(level, 0) for level in (0.0, 0.2)]
    assert {p.config.data.source for p in runs} == {"embedded"} and {p.config.model.width for p in runs} == {0.125}
    phases_hashes = {item.planned.config.hash() for item in phases.work(options)}
    assert [p.label for p in runs if p.config.hash() in phases_hashes] == ["noise 0% / seed 0"]
    assert reference_run.seeded_runs(options) == []  # no CIFAR-10 at quick, whatever the data directory holds


def test_training_with_label_noise_logs_clean_and_flipped_accuracy(tmp_path):
    smoke = profile("smoke")
    config = smoke.replace(
        data=dataclasses.replace(smoke.data, train_size=100, test_size=50, label_noise=0.2),
        training=dataclasses.replace(smoke.training, duration="4it"),
    )
    run = train(config, runs_dir=tmp_path, progress=False)
    data = run.provenance()["data"]
    assert data["flipped_train_labels"] == 20 and data["label_noise"] == 0.2
    metrics = pd.read_csv(Run.open(run.directory).metrics_path)
    accuracy = metrics[metrics["metric"] == "classifier_accuracy"].pivot_table(index="step", columns="split", values="value")
    assert list(accuracy.index) == run.snapshot_steps()
    assert {"train", "test", "train_clean", "train_flipped", "train_flipped_true"} == set(accuracy.columns)
    # The clean and the flipped examples are the two parts of the train split.
    combined = (80 * accuracy["train_clean"] + 20 * accuracy["train_flipped"]) / 100
    assert np.allclose(combined, accuracy["train"], atol=1e-9)
    # A flipped example's label differs from its true label: it cannot be right on both.
    assert (accuracy["train_flipped"] + accuracy["train_flipped_true"] <= 1 + 1e-9).all()
