"""Bring your own model: snapshot a plain `model.fit`, measure a layer of it, draw its learning phases.

A small Functional Keras model with its own layer names ("stem", "mixer", "summary", "embedding", "scores")
is trained on the embedded MNIST (kphases.data, no download) with `model.fit` and
`kphases.SnapshotCallback`, which writes the weights at iterations 0, 2, 4, 8, ... into a run
directory. `kphases.measure` then fits the reconstruction decoders and the linear probe on the
output of the named layers at every snapshot, and `kphases.plot_phases` draws the standard figure.

    python examples/own_model.py OUT_DIR            # 2,000 images, 315 iterations (under a minute on 2 cores)
    python examples/own_model.py OUT_DIR --small    # 512 images, 32 iterations (the tests' size)

Writes OUT_DIR/run/ (the run store: snapshots, manifest, metrics.csv, measurements.csv) and
OUT_DIR/own_model_phases.png. Running it again on the same OUT_DIR reuses the finished run and
measurements.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # no C++ start-up log (cuInit ... on CPU)

import keras  # noqa: E402

import kphases  # noqa: E402
from kphases.config import DataConfig  # noqa: E402
from kphases.data import load_dataset  # noqa: E402
from kphases.store import Run  # noqa: E402

SIZES = {  # train images, test images, batch size, epochs -> iterations
    "default": (2000, 500, 32, 5),  # 63 batches per epoch (the last one smaller): 315 iterations
    "small": (512, 256, 32, 2),  # 16 batches per epoch: 32 iterations
}
LAYERS = ["summary", "embedding"]  # 4x4x16 pooled features, and the 64-unit dense layer


def build(input_shape, num_classes: int) -> keras.Model:
    """Any Keras model works; the names are what kphases.measure is asked for."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="mixer")(x)
    x = keras.layers.MaxPooling2D(2, name="summary")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(64, activation="relu", name="embedding")(x)
    outputs = keras.layers.Dense(num_classes, name="scores")(x)
    return keras.Model(inputs, outputs, name="own_model")


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output directory (the run and the PNG go here)")
    parser.add_argument("--small", "--test", action="store_true", help="tiny size for tests: 512 images, 32 iterations")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train_size, test_size, batch_size, epochs = SIZES["small" if args.small else "default"]
    out = Path(args.out)
    run_dir = out / "run"
    began = time.perf_counter()

    data = load_dataset(DataConfig(name="mnist", source="embedded", train_size=train_size, test_size=test_size))
    train, test = (data.x_train, data.y_train), (data.x_test, data.y_test)

    if run_dir.exists() and Run.open(run_dir).complete:
        print(f"{run_dir} holds a finished run: not training again")
    else:
        keras.utils.set_random_seed(args.seed)
        model = build(data.image_shape, data.num_classes)
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=0.02, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        snapshots = kphases.SnapshotCallback(run_dir, train_data=train, test_data=test)
        model.fit(*train, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[snapshots])
    run = Run.open(run_dir)
    print(
        f"trained: snapshots at iterations {run.snapshot_steps()} of {run.manifest()['last_iteration']} "
        f"({time.perf_counter() - began:.0f} s)"
    )

    # The closed-form affine decoder and a short linear probe keep this quick; the authors' defaults
    # (decoders=("linear_exact", "linear"), probe_epochs=20) are one keyword away.
    kphases.measure(
        run_dir,
        layers=LAYERS,
        train_data=train,
        test_data=test,
        decoders=("linear_exact",),
        probe_epochs=4 if args.small else 10,
        progress=False,
        data_name="mnist",
    )
    figure_path = out / "own_model_phases.png"
    # The run directory is called "run": the default title ("... of run run") would say nothing.
    kphases.plot_phases(run_dir, path=figure_path, title="Reconstruction loss phases of own_model on embedded MNIST (decoder linear_exact)")
    print(f"wrote {figure_path} ({time.perf_counter() - began:.0f} s in all)")
    return figure_path


if __name__ == "__main__":
    main(sys.argv[1:])
