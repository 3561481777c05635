"""When to stop pre-training: let `kphases.PhaseMonitor` pick the checkpoint, then transfer from it.

A small Keras network is pre-trained on the embedded MNIST (no download) with `model.fit` and a
`kphases.PhaseMonitor`. The monitor decodes the source images from the layer before the last at
iterations 0, 2, 4, 8, ... and keeps the checkpoint at the end of the reconstruction loss's
decrease once the rise after it is confident; it uses no labels. With `stop=True` training ends
there. The example then trains a linear transfer head on scikit-learn's 8x8 digits (a different
dataset, upsampled to the same 32x32 shape) on the kept checkpoint's features and on the last
network's, and prints both target accuracies.

    python examples/stop_pretraining.py OUT_DIR            # up to 3,000 iterations
    python examples/stop_pretraining.py OUT_DIR --small    # up to 200 iterations (the tests' size)

Writes OUT_DIR/monitor/ (state.json: the curve and the decision; chosen.weights.h5). Whether and
when the monitor decides depends on the run: without a confident rise it keeps measuring and
training runs to the end (then the example says so and transfers from the last network only).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import kphases  # noqa: E402
from kphases.config import DataConfig  # noqa: E402
from kphases.data import load_dataset  # noqa: E402
from kphases.features import extract_features  # noqa: E402
from kphases.probes import train_linear_head  # noqa: E402

SIZES = {"default": (4000, 1000, 3000), "small": (512, 256, 200)}  # source train, source test images, most iterations


def build(input_shape, num_classes: int) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="mixer")(x)
    x = keras.layers.BatchNormalization(name="mixer_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D(name="embedding")(x)
    outputs = keras.layers.Dense(num_classes, name="scores")(x)
    return keras.Model(inputs, outputs, name="pretrained")


def transfer_accuracy(model: keras.Model, target) -> float:
    """Target test accuracy of a fresh linear head on the frozen `embedding` features."""
    train = extract_features(model, "embedding", target.x_train, "stored")
    test = extract_features(model, "embedding", target.x_test, "stored")
    return train_linear_head(train, target.y_train, test, target.y_test, target.num_classes).test_accuracy


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output directory (the monitor's state and kept weights go here)")
    parser.add_argument("--small", action="store_true", help="tiny size for tests")
    args = parser.parse_args(argv)
    train_size, test_size, iterations = SIZES["small" if args.small else "default"]
    out = Path(args.out)

    source = load_dataset(DataConfig(name="mnist", source="embedded", train_size=train_size, test_size=test_size))
    target = load_dataset(DataConfig(name="digits", source="embedded"))
    keras.utils.set_random_seed(0)
    model = build(source.image_shape, source.num_classes)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.02, momentum=0.9), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    monitor = kphases.PhaseMonitor(
        out, source.x_train, source.x_test, stop=True, train_subset=min(2000, train_size), test_subset=min(1000, test_size)
    )
    batch = 64
    epochs = -(-iterations * batch // train_size)
    model.fit(source.x_train, source.y_train, batch_size=batch, epochs=epochs, verbose=0, callbacks=[monitor])
    last = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    result = {"last_iteration": last, "decision": monitor.decision, "last_accuracy": transfer_accuracy(model, target)}
    if monitor.decision is None:
        print(
            f"no decision within {last} iterations: the rise after the minimum never became confident; "
            f"transfer from the last network: {result['last_accuracy']:.3f}"
        )
        return result
    kept = build(source.image_shape, source.num_classes)
    kept.load_weights(monitor.chosen_weights)
    result["kept_accuracy"] = transfer_accuracy(kept, target)
    print(
        f"monitor: at iteration {monitor.decision.decided_at} kept the checkpoint of iteration {monitor.decision.chosen_step} "
        f"({monitor.decision.reason})"
    )
    print(
        f"digits transfer accuracy: kept checkpoint {result['kept_accuracy']:.3f}, network at iteration {last} "
        f"{result['last_accuracy']:.3f}"
    )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
