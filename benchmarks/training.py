"""Time per training step of each network on this machine, side by side in one run.

    python -m benchmarks.training [--steps 20] [--batch-size 128]

Prints milliseconds per optimiser step (the real `kphases.training` step function, batch 128,
32x32 inputs) and each network's ratio to VGG-8, so the `quick` profile can be sized from
measurements rather than guesses. The first steps (graph tracing) are excluded.

Rows marked "TF input gradient" time the same network with `kphases.models.Conv2D`'s forward-
convolution input gradient switched off (TensorFlow's Conv2DBackpropInput kernel everywhere, as
plain keras.layers.Conv2D), side by side with the default.
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import time

import numpy as np


def time_steps(architecture: str, width: float, channels: int, steps: int, batch_size: int,
               forward_input_gradient: bool = True) -> float:
    from kphases.models import FORWARD_INPUT_GRADIENT

    saved = dict(FORWARD_INPUT_GRADIENT)
    if not forward_input_gradient:
        FORWARD_INPUT_GRADIENT["max_pixels"] = 0  # the rule is read when the step is traced
    try:
        return _time_steps(architecture, width, channels, steps, batch_size)
    finally:
        FORWARD_INPUT_GRADIENT.update(saved)


def _time_steps(architecture: str, width: float, channels: int, steps: int, batch_size: int) -> float:
    import keras

    from kphases.config import ModelConfig
    from kphases.models import build_model
    from kphases.training import _make_step

    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(architecture, width), (32, 32, channels), 10)
    optimizer = keras.optimizers.SGD(learning_rate=0.002, momentum=0.9)
    step = _make_step(model, optimizer, weight_decay=0.0)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(batch_size, 32, 32, channels)).astype(np.float32)
    labels = rng.integers(0, 10, size=batch_size)
    for _ in range(3):
        float(step(images, labels))
    began = time.perf_counter()
    for _ in range(steps):
        float(step(images, labels))
    return (time.perf_counter() - began) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per network")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    cases = [("vgg8", 1.0, 3, True), ("vgg8", 1.0, 3, False), ("vgg8", 1.0, 1, True), ("vgg8", 0.5, 1, True),
             ("vgg8", 0.25, 3, True), ("resnet10", 1.0, 3, True), ("resnet10", 1.0, 3, False), ("resnet10", 0.25, 1, True), ("resnet10", 0.125, 1, True),
             ("resnet20", 1.0, 3, True), ("vgg11", 1.0, 3, True), ("vgg11", 1.0, 3, False), ("simple3", 1.0, 1, True)]
    results = [(case, time_steps(*case[:3], args.steps, args.batch_size, case[3])) for case in cases]
    reference = results[0][1]
    default = {case[:3]: milliseconds for case, milliseconds in results if case[3]}
    print(f"{'network':<44}{'ms/step':>10}{'x vgg8':>9}   (batch {args.batch_size}, {os.cpu_count()} CPU cores)")
    for (architecture, width, channels, forward), milliseconds in results:
        name = f"{architecture} x{width:g} c{channels}"
        if not forward:
            name += f" TF input gradient ({milliseconds / default[(architecture, width, channels)]:.1f}x)"
        print(f"{name:<44}{milliseconds:>10.1f}{milliseconds / reference:>9.2f}")


if __name__ == "__main__":
    main()
