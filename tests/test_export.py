"""`python -m kphases export-data`: the npz layout the directory source reads, and its fingerprint."""

import numpy as np
import pytest

from kphases.cli import main
from kphases.config import DataConfig
from kphases.data import load_dataset
from kphases.export import export_dataset, to_layout


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_export_from_tfds_mock_data_is_read_by_the_directory_source(tmp_path, capsys, name, shape):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=24):
        assert main(["export-data", name, "--out", str(tmp_path), "--source", "tfds"]) == 0
        # The same arrays through the tfds source: the file holds exactly what tfds gave.
        via_tfds = load_dataset(DataConfig(name=name, source="tfds"))
    printed = capsys.readouterr().out
    with np.load(tmp_path / f"{name}.npz") as archive:
        assert sorted(archive.files) == ["x_test", "x_train", "y_test", "y_train"]
        assert archive["x_train"].shape == (24, *shape) and archive["x_train"].dtype == np.uint8
        assert archive["y_train"].shape == (24,) and archive["y_train"].dtype == np.uint8
    via_directory = load_dataset(DataConfig(name=name, source="directory"), tmp_path)
    assert f"fingerprint {via_directory.fingerprint} " in printed
    assert np.array_equal(via_directory.x_train, via_tfds.x_train) and np.array_equal(via_directory.y_test, via_tfds.y_test)


def test_keras_layout_gets_a_channel_axis_and_flat_labels(tmp_path):
    rng = np.random.default_rng(0)
    # keras.datasets.mnist: (N, 28, 28) uint8 and (N,); cifar10: (N, 32, 32, 3) and (N, 1).
    mnist = (
        rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 12).astype(np.uint8),
        rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 6).astype(np.uint8),
    )
    exported = export_dataset("mnist", tmp_path, splits=mnist)
    assert exported.train_shape == (12, 28, 28, 1) and exported.test_shape == (6, 28, 28, 1)
    assert load_dataset(DataConfig(name="mnist", source="directory"), tmp_path).fingerprint == exported.fingerprint
    cifar = to_layout(
        "cifar100",
        np.zeros((4, 32, 32, 3), np.uint8),
        np.array([[0], [99], [5], [7]]),
        np.zeros((2, 32, 32, 3), np.uint8),
        np.array([[1], [2]]),
    )
    assert cifar["y_train"].tolist() == [0, 99, 5, 7] and cifar["y_train"].dtype == np.uint8


def test_bad_input_is_one_line_and_nothing_is_overwritten(tmp_path, capsys):
    assert main(["export-data", "svhn", "--out", str(tmp_path)]) == 2
    assert "unknown dataset 'svhn'; valid: ['mnist', 'fashion_mnist', 'cifar10', 'cifar100']" in capsys.readouterr().err
    assert main(["export-data", "mnist", "--out", str(tmp_path), "--source", "web"]) == 2
    assert "unknown source 'web'; valid: ['keras', 'tfds']" in capsys.readouterr().err
    (tmp_path / "mnist.npz").write_bytes(b"earlier data")
    assert main(["export-data", "mnist", "--out", str(tmp_path)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err and (tmp_path / "mnist.npz").read_bytes() == b"earlier data"
    with pytest.raises(ValueError, match=r"mnist train images must be integers in 0..255; got dtype float32"):
        to_layout("mnist", np.zeros((2, 28, 28), np.float32), np.zeros(2), np.zeros((1, 28, 28), np.uint8), np.zeros(1))
    with pytest.raises(ValueError, match=r"cifar10 test labels must be integers in 0..9; got dtype int64, range 0..10"):
        to_layout("cifar10", np.zeros((2, 32, 32, 3), np.uint8), np.zeros(2, int), np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 10]))
