"""Choosing a dataset's npz file (DataConfig.file) and fixed, seeded label noise (DataConfig.label_noise)."""

import numpy as np
import pytest

from kphases.config import DataConfig, ModelConfig, RunConfig, TrainingConfig, profile
from kphases.data import DataError, flip_labels, load_dataset, npz_compression


def _write_npz(path, train: int, test: int, value: int = 0, **extra) -> None:
    labels = np.arange(train) % 10
    np.savez(
        path,
        x_train=np.full((train, 32, 32, 3), value, np.uint8),
        y_train=labels,
        x_test=np.full((test, 32, 32, 3), value, np.uint8),
        y_test=np.arange(test) % 10,
        **extra,
    )


def test_file_field_picks_the_named_npz_and_records_it(tmp_path):
    _write_npz(tmp_path / "cifar10.npz", 40, 20, value=0)
    _write_npz(tmp_path / "cifar10_jpeg_q75.npz", 60, 30, value=9)
    default = load_dataset(DataConfig(name="cifar10", source="directory"), data_dir=tmp_path)
    jpeg = load_dataset(DataConfig(name="cifar10", source="directory", file="cifar10_jpeg_q75.npz"), data_dir=tmp_path)
    assert (len(default.y_train), len(default.y_test)) == (40, 20)
    assert (len(jpeg.y_train), len(jpeg.y_test)) == (60, 30)
    assert default.fingerprint != jpeg.fingerprint
    described = jpeg.describe()
    assert described["file"] == "cifar10_jpeg_q75.npz" and described["compression"] == "JPEG q75, from the file name"
    assert (described["train_size"], described["test_size"]) == (60, 30)
    assert default.describe()["file"] == "cifar10.npz" and default.describe()["compression"] == "compression not stated"
    # The measurement rows' `data` field starts with this (kphases.measurement._measurement_splits).
    assert jpeg.origin == "cifar10/directory:cifar10_jpeg_q75.npz (JPEG q75, from the file name)"


def test_compression_stated_in_the_file_wins_over_its_name(tmp_path):
    _write_npz(tmp_path / "cifar10_jpeg.npz", 10, 10, compression=np.array("none (re-decoded PNG)"))
    _write_npz(tmp_path / "c_full.npz", 10, 10)
    _write_npz(tmp_path / "c_JPG.npz", 10, 10)
    assert npz_compression(tmp_path / "cifar10_jpeg.npz") == "none (re-decoded PNG), stated in the file"
    assert npz_compression(tmp_path / "c_full.npz") == "compression not stated"
    assert npz_compression(tmp_path / "c_JPG.npz") == "JPEG, from the file name"


def test_bad_file_values_are_named(tmp_path):
    _write_npz(tmp_path / "cifar10.npz", 10, 10)
    with pytest.raises(DataError, match=r"no cifar10_full.npz in data directory .* \(dataset cifar10\); it holds: \['cifar10.npz'\]"):
        load_dataset(DataConfig(name="cifar10", source="directory", file="cifar10_full.npz"), data_dir=tmp_path)
    with pytest.raises(DataError, match=r"data file 'sub/cifar10.npz' must be a bare file name ending in .npz"):
        load_dataset(DataConfig(name="cifar10", source="directory", file="sub/cifar10.npz"), data_dir=tmp_path)
    with pytest.raises(DataError, match=r"data file 'cifar10.npz' is only read with source 'directory', not 'embedded'"):
        load_dataset(DataConfig(name="mnist", source="embedded", file="cifar10.npz"))


def test_new_fields_at_their_defaults_keep_every_run_hash():
    # Hashes of the profiles and of the quick VGG-8/MNIST run (the hash of their non-default fields), which
    # DataConfig's `file` and `label_noise` at their defaults leave as they were.
    assert [profile(name).hash() for name in ("smoke", "quick", "paper")] == ["e090cb384af3", "2c7e859928f2", "18be3ad85d50"]
    mnist = RunConfig(
        data=DataConfig("mnist", "directory", train_size=10_000, test_size=2_000),
        model=ModelConfig("vgg8"),
        training=TrainingConfig(duration="1024it"),
    )
    assert mnist.hash() == "f584e53a48bb"
    named = mnist.replace(data=DataConfig("mnist", "directory", train_size=10_000, test_size=2_000, file="mnist.npz"))
    noisy = mnist.replace(data=DataConfig("mnist", "directory", train_size=10_000, test_size=2_000, label_noise=0.1))
    assert len({mnist.hash(), named.hash(), noisy.hash()}) == 3
    assert RunConfig.from_json(noisy.to_json()) == noisy


def test_flip_labels_exact_fraction_stratified_fixed_and_seeded():
    labels = np.repeat(np.arange(10), [100, 100, 100, 100, 100, 200, 200, 50, 25, 25])  # 1,000, unbalanced
    noisy = flip_labels(labels, 0.2, seed=3, num_classes=10)
    flipped = noisy != labels
    assert flipped.sum() == 200  # exactly round(0.2 x 1,000), and every chosen label really changed class
    # Each class gives its share of the flips: 20% of it.
    assert np.bincount(labels[flipped], minlength=10).tolist() == [20, 20, 20, 20, 20, 40, 40, 10, 5, 5]
    assert noisy.min() >= 0 and noisy.max() <= 9
    # New labels are spread over the other classes (not a fixed permutation of classes).
    assert len(set(noisy[flipped & (labels == 5)].tolist())) >= 5
    assert np.array_equal(noisy, flip_labels(labels, 0.2, seed=3, num_classes=10))
    assert not np.array_equal(noisy, flip_labels(labels, 0.2, seed=4, num_classes=10))
    assert np.array_equal(flip_labels(labels, 0.0, seed=3, num_classes=10), labels)
    with pytest.raises(DataError, match=r"label noise 1.0 is not a fraction of the train labels \(valid: 0 <= label_noise < 1\)"):
        flip_labels(labels, 1.0, seed=0, num_classes=10)


def test_label_noise_flips_train_labels_only_and_keeps_the_true_ones(tmp_path):
    _write_npz(tmp_path / "cifar10.npz", 100, 50)
    clean = load_dataset(DataConfig(name="cifar10", source="directory"), data_dir=tmp_path)
    noisy = load_dataset(DataConfig(name="cifar10", source="directory", label_noise=0.1), data_dir=tmp_path)
    assert noisy.flipped.sum() == 10 and not clean.flipped.any() and clean.y_train_clean is None
    assert np.array_equal(noisy.y_train_clean, clean.y_train)
    assert np.array_equal(noisy.y_test, clean.y_test)
    assert noisy.fingerprint != clean.fingerprint
    assert noisy.describe()["flipped_train_labels"] == 10 and "label_noise=0.1" in noisy.origin


def test_loaded_datasets_are_kept_read_only_and_a_changed_file_is_read_again(tmp_path):
    import os

    config = DataConfig(name="cifar10", source="directory")
    _write_npz(tmp_path / "cifar10.npz", 40, 20, value=3)
    first = load_dataset(config, data_dir=tmp_path)
    assert load_dataset(config, data_dir=tmp_path) is first  # the same config again: not parsed and zoomed again
    with pytest.raises(ValueError, match="read-only"):
        first.x_train[0, 0, 0, 0] = 0.0  # a caller cannot change what the next one gets
    assert not first.y_train.flags.writeable and not first.x_test.flags.writeable and not first.y_test.flags.writeable
    # The file is replaced (other pixels, same size): its modification time differs, so it is read again.
    _write_npz(tmp_path / "cifar10.npz", 40, 20, value=200)
    stat = os.stat(tmp_path / "cifar10.npz")
    os.utime(tmp_path / "cifar10.npz", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = load_dataset(config, data_dir=tmp_path)
    assert second is not first and second.fingerprint != first.fingerprint
    assert float(second.x_train.max()) > float(first.x_train.max())
    # Another directory with a file of the same name is another dataset.
    other = tmp_path / "other"
    other.mkdir()
    _write_npz(other / "cifar10.npz", 40, 20, value=100)
    assert load_dataset(config, data_dir=other).fingerprint not in (first.fingerprint, second.fingerprint)
    # A file that disappears is an error, not the remembered copy.
    (other / "cifar10.npz").unlink()
    with pytest.raises(DataError, match="no cifar10.npz"):
        load_dataset(config, data_dir=other)
