"""Figure `reconstructions`: test images and their reconstructions from the penultimate layer over training.

What the reconstruction loss of the `phases` figure looks like: for the profile's first network
(VGG-8 on MNIST), one test image per class and, at several snapshots, its reconstruction
by the exact affine decoder (`linear_exact`) fitted on the train split's penultimate features
(BatchNorm in batch mode, the authors' protocol). Early reconstructions are blurry class-agnostic
averages; when the loss falls they sharpen; when it rises in phase 3 they drift towards the class
prototype, losing what distinguishes the sample.

    python -m reproduce.reconstructions [--profile smoke|quick|full|paper] [--plot-only] [--out DIR]

Scale: the first main run of the profile, its decoders fitted here at the steps of `STEPS`. The
CSV holds the numbers.

Numbers you should see (full, VGG-8/MNIST, linear_ridge): test MSE 0.224 at step 0, 0.218 at 8,
0.184 at 64 (the minimum), 0.194 at 256, 0.213 at 1,024.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pandas as pd

from kphases.data import load_dataset, unnormalise
from kphases.decoders import DecoderSettings, fit_decoder
from kphases.features import extract_features
from kphases.measurement import _measurement_splits
from kphases.models import build_model
from reproduce.common import Options, Work, main_runs, perform, run_figure, save_figure
from reproduce.plotting import plt

NAME = "reconstructions"
IMAGES = 8
STEPS = {"smoke": (0, 4, 16), "quick": (0, 8, 64, 256, 1024), "full": (0, 8, 64, 256, 1024), "paper": (0, 32, 128, 1024, 8192, 65536)}


def work(options: Options) -> list[Work]:
    """The first main run, trained only: its decoders are fitted here, to keep their reconstructions."""
    return [Work(main_runs(options)[0], ())]


def compute(options: Options) -> pd.DataFrame:
    (item,) = work(options)
    planned = item.planned
    run, _ = perform(item, options)
    dataset = load_dataset(planned.config.data, options.data_dir)
    splits = _measurement_splits(dataset, planned.measure.train_size, planned.measure.test_size, planned.measure.seed)
    # One test image per class, first in the order the decoder sees them.
    chosen = [int(np.flatnonzero(splits.y_test == label)[0]) for label in range(min(IMAGES, dataset.num_classes))]
    order = np.concatenate([chosen, np.setdiff1d(np.arange(len(splits.y_test)), chosen)])
    model = build_model(planned.config.model, dataset.image_shape, dataset.num_classes)
    settings = DecoderSettings(keep_reconstructions=len(chosen))
    rows = [_image_rows(unnormalise(splits.x_test[chosen], dataset.name), "input", -1, splits.y_test[chosen])]
    for step in [step for step in STEPS[options.profile] if step in run.snapshot_steps()]:
        run.load_snapshot(model, step)
        train_features = extract_features(model, "penultimate", splits.x_train, "batch")
        test_features = extract_features(model, "penultimate", splits.x_test, "batch")[order]
        result = fit_decoder("linear_exact", train_features, splits.x_train, test_features, splits.x_test[order], settings)
        images = np.clip(unnormalise(result.test_reconstructions, dataset.name), 0, 1)
        rows.append(_image_rows(images, f"step {step} (test MSE {result.mse_per_element_test:.3f})", step, splits.y_test[chosen]))
    return pd.concat(rows, ignore_index=True).assign(label=planned.label)


def _image_rows(images: np.ndarray, title: str, step: int, labels: np.ndarray) -> pd.DataFrame:
    count, height, width, channels = images.shape
    index = np.indices(images.shape).reshape(4, -1)
    return pd.DataFrame(
        {
            "title": title,
            "step": step,
            "image": index[0],
            "class": labels[index[0]],
            "row": index[1],
            "col": index[2],
            "channel": index[3],
            "value": images.reshape(-1),
        }
    )


def plot(table: pd.DataFrame, options: Options):
    titles = list(dict.fromkeys(table["title"]))
    count = table["image"].max() + 1
    height, width, channels = table["row"].max() + 1, table["col"].max() + 1, table["channel"].max() + 1
    figure, axes = plt.subplots(len(titles), count, figsize=(1.1 * count, 1.2 * len(titles)), squeeze=False)
    for row_axes, title in zip(axes, titles):
        part = table[table["title"] == title].sort_values(["image", "row", "col", "channel"])
        images = part["value"].to_numpy().reshape(count, height, width, channels)
        for index, axis in enumerate(row_axes):
            axis.imshow(images[index].squeeze(), cmap="gray" if channels == 1 else None, vmin=0, vmax=1)
            axis.set_xticks([]), axis.set_yticks([])
        row_axes[0].set_ylabel(title.replace(" (", "\n("), fontsize=7)
    figure.suptitle(f"{table['label'].iloc[0]}: test images and linear_exact reconstructions from the penultimate layer", fontsize=9)
    figure.tight_layout()
    save_figure(figure, options, NAME)
    summary = "\n".join(f"- {title}" for title in titles[1:])
    return f"{len(titles) - 1} snapshots x {count} images", summary


def main(argv=None) -> str:
    return run_figure(NAME, compute, plot, argv, __doc__)


if __name__ == "__main__":
    main()
