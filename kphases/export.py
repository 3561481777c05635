"""Write a dataset as the `<name>.npz` file the `directory` data source reads (docs/data.md).

    python -m kphases export-data mnist --out DIR [--source keras|tfds] [--force]

On a machine with internet, this fetches mnist, fashion_mnist, cifar10 or cifar100 from
`keras.datasets` (default) or `tensorflow_datasets`, and writes `DIR/<name>.npz`: uint8 arrays
`x_train, y_train, x_test, y_test`, images NHWC (28x28x1 or 32x32x3), labels of shape (N,). Copy
the directory anywhere and point `--data-dir` or `KPHASES_DATA_DIR` at it. The command prints the
fingerprint `kphases.data` records in every run's provenance for the full dataset, so two machines
can tell whether they trained on the same arrays (keras.datasets and tfds order the train splits
differently: same images, other fingerprints).

The file is written to a temporary name and renamed into place; an existing file is never
replaced without `--force`, and it is read back through the `directory` source's own loader
before the fingerprint is printed.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np

from kphases import data as data_module
from kphases.store import sha256_file

EXPORTABLE = ("mnist", "fashion_mnist", "cifar10", "cifar100")
EXPORT_SOURCES = ("keras", "tfds")


@dataclasses.dataclass(frozen=True)
class ExportedDataset:
    """Where a dataset was written and what it holds."""

    path: Path
    source: str
    train_shape: tuple[int, ...]
    test_shape: tuple[int, ...]
    fingerprint: str
    """`kphases.data`'s fingerprint of the full dataset read from `path` (as recorded in provenance.json)."""
    sha256: str

    def describe(self) -> str:
        return (
            f"wrote {self.path} from {self.source}: x_train {self.train_shape}, x_test {self.test_shape} (uint8, NHWC)\n"
            f"fingerprint {self.fingerprint} (what provenance.json records for a run on all of it; a subset has its own)\n"
            f"sha256 {self.sha256}"
        )


def fetch(name: str, source: str = "keras") -> data_module.RawSplits:
    """The raw splits of `name` from keras.datasets or tensorflow_datasets (downloads on first use)."""
    _check_choice("dataset", name, EXPORTABLE)
    _check_choice("source", source, EXPORT_SOURCES)
    if source == "tfds":
        return data_module._load_tfds(name)
    import keras

    loader = getattr(keras.datasets, name)
    # CIFAR-100's 100 fine classes, the labels the suite's cifar100 has (NUM_CLASSES); "coarse" has 20.
    (x_train, y_train), (x_test, y_test) = loader.load_data(label_mode="fine") if name == "cifar100" else loader.load_data()
    return x_train, y_train, x_test, y_test


def to_layout(name: str, x_train, y_train, x_test, y_test) -> dict[str, np.ndarray]:
    """The `directory` layout: uint8 NHWC images, uint8 labels (N,). Values that do not fit are an error."""
    arrays = {}
    classes = data_module.NUM_CLASSES[name]
    for key, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"{name} x_{key} has shape {images.shape}; expected (N, H, W) or (N, H, W, 1 or 3)")
        if len(images) != len(labels):
            raise ValueError(f"{name} {key}: {len(images)} images but {len(labels)} labels")
        for what, values, top in (("images", images, 255), ("labels", labels, classes - 1)):
            if values.size and (not np.issubdtype(values.dtype, np.integer) or values.min() < 0 or values.max() > top):
                raise ValueError(
                    f"{name} {key} {what} must be integers in 0..{top}; got dtype {values.dtype}, range {values.min()}..{values.max()}"
                )
        arrays[f"x_{key}"], arrays[f"y_{key}"] = images.astype(np.uint8), labels.astype(np.uint8)
    return arrays


def write_npz(path: Path, arrays: dict[str, np.ndarray], overwrite: bool = False) -> None:
    """np.savez_compressed to a temporary file beside `path`, then one rename; never over a file unless asked."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --force to replace it (or choose another --out)")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.npz", dir=path.parent)
    os.close(handle)
    try:
        np.savez_compressed(temp, **arrays)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def export_dataset(
    name: str, out_dir: str | os.PathLike, source: str = "keras", overwrite: bool = False, splits: data_module.RawSplits | None = None
) -> ExportedDataset:
    """Fetch `name` (or take the given raw `splits`), write `<out_dir>/<name>.npz`, read it back, fingerprint it."""
    _check_choice("dataset", name, EXPORTABLE)
    path = Path(out_dir).expanduser() / f"{name}.npz"
    if path.exists() and not overwrite:  # before a download, not after
        raise FileExistsError(f"{path} exists; pass --force to replace it (or choose another --out)")
    arrays = to_layout(name, *(splits if splits is not None else fetch(name, source)))
    write_npz(path, arrays, overwrite)
    # Read back through the directory source's own loader: the fingerprint is the one runs record.
    raw = data_module._load_directory(name, path.parent)
    return ExportedDataset(
        path=path,
        source=source,
        train_shape=tuple(raw[0].shape),
        test_shape=tuple(raw[2].shape),
        fingerprint=data_module.fingerprint(*raw),
        sha256=sha256_file(path),
    )


def _check_choice(what: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {list(valid)}")
