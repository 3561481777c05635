"""Training speed per network on this machine, side by side in one run: the step, the loop, the host.

    python -m benchmarks.training [--steps 24] [--batch-size 128] [--networks vgg8,vgg8x0.25,...] [--variants]

For each network (32x32 inputs, 10 classes, SGD with momentum, random normalised data):
- `step ms`: the compiled training step alone (`kphases.training._make_step`, the batch already a
  tensor), one call per step, waiting for its loss;
- `loop ms`: `kphases.training`'s loop per step: the steps of an epoch in one compiled call
  (`compiled_steps`; `kphases.placement.TrainBatches`: train set on the device, batches gathered
  there), including the host's work;
- `loop/step`: their ratio (1.00: the loop adds nothing to the step);
- `host ms`: the host's work per step in that loop (the epoch's permutation and each call's index
  matrix), measured alone;
- `old loop ms`: the loop as it was (a permutation, a numpy gather and a `float(loss)` every step).
`--variants` adds, for VGG-8, the step with XLA (`--training.jit-compile`), with
`kphases.models.Conv2D`'s forward input-gradient rule (KPHASES_FORWARD_INPUT_GRADIENT=1), and
without the single-position product and the fused BatchNorm (the defaults on a CPU,
`kphases.models`), each against the default measured just before it in the same run.

The last lines estimate the paper profile's training cost on this device from the measured loop
times: VGG-8/11/13/16 and ResNet-10 for 257 epochs of CIFAR-10 (100,487 iterations) each per seed,
and the Frankle et al. figure's 300 ResNet-20 runs of 160 epochs (62,560 iterations); training
only (snapshots, metrics and measurements come on top). The first calls (tracing) are excluded.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from kphases import models
from kphases.config import ModelConfig, TrainingConfig
from kphases.data import Dataset
from kphases.placement import TrainBatches, batch_indices, epoch_permutation, strategy_devices
from kphases.training import _make_step, compiled_steps, configure_gpu_memory

PAPER_ITERATIONS = 257 * 391
FRANKLE_ITERATIONS = 160 * 391
FRANKLE_RUNS = 300
PAPER_NETWORKS = ("vgg8", "vgg11", "vgg13", "vgg16", "resnet10")
DEFAULT_NETWORKS = "vgg8,vgg8x0.25,vgg11,vgg13,vgg16,resnet10,resnet20"


@dataclass(frozen=True)
class Timing:
    step_ms: float
    loop_ms: float
    host_ms: float
    old_loop_ms: float


def _network(spec: str) -> tuple[str, float]:
    name, _, width = spec.partition("x")
    return name, float(width) if width else 1.0


def measure(
    architecture: str,
    width: float,
    steps: int,
    batch_size: int,
    jit_compile: bool = False,
    forward_input_gradient: bool = False,
    loop: bool = True,
    single_position_product: bool = True,
    fused_batchnorm: bool = True,
) -> Timing:
    switches = [
        (models.FORWARD_INPUT_GRADIENT, forward_input_gradient),
        (models.SINGLE_POSITION_PRODUCT, single_position_product),
        (models.FUSED_BATCHNORM, fused_batchnorm),
    ]
    saved = [(switch, switch["enabled"]) for switch, _ in switches]
    for switch, enabled in switches:  # each read when a step is traced
        switch["enabled"] = enabled
    try:
        rng = np.random.default_rng(0)
        count = steps * batch_size  # one epoch = the timed steps, no smaller last batch
        dataset = Dataset(
            name="cifar10",
            source="benchmark",
            x_train=rng.normal(size=(count, 32, 32, 3)).astype(np.float32),
            y_train=rng.integers(0, 10, size=count).astype(np.int64),
            x_test=np.zeros((0, 32, 32, 3), np.float32),
            y_test=np.zeros(0, np.int64),
            num_classes=10,
            fingerprint="",
        )
        training = TrainingConfig(batch_size=batch_size, jit_compile=jit_compile)

        def fresh():
            keras.utils.set_random_seed(0)
            model = models.build_model(ModelConfig(architecture, width), (32, 32, 3), 10)
            optimizer = keras.optimizers.SGD(learning_rate=0.002, momentum=0.9)
            optimizer.build(model.trainable_variables)
            return model, optimizer

        model, optimizer = fresh()
        step = _make_step(model, optimizer, 0.0, jit_compile=jit_compile)
        images, labels = tf.constant(dataset.x_train[:batch_size]), tf.constant(dataset.y_train[:batch_size])
        for _ in range(3):
            float(step(images, labels))
        began = time.perf_counter()
        for _ in range(steps):
            float(step(images, labels))
        step_ms = (time.perf_counter() - began) / steps * 1000
        if not loop:
            return Timing(step_ms, float("nan"), float("nan"), float("nan"))

        # The old loop: per step a permutation, a host gather, a call and a float(loss).
        began = time.perf_counter()
        for index in range(steps):
            chosen = batch_indices(index, count, batch_size, 0)
            float(step(dataset.x_train[chosen], dataset.y_train[chosen]))
        old_loop_ms = (time.perf_counter() - began) / steps * 1000

        model, optimizer = fresh()
        take_steps = compiled_steps(model, optimizer, training, dataset)
        batches = TrainBatches(dataset, batch_size, 0, strategy_devices(tf.distribute.get_strategy())[0])
        take_steps(0, batches.prepare(0, steps))  # trace
        began = time.perf_counter()
        batches.epoch = None  # a new epoch's permutation, as in training
        take_steps(steps, batches.prepare(steps, 2 * steps))
        loop_ms = (time.perf_counter() - began) / steps * 1000
        began = time.perf_counter()
        for epoch in range(5):
            epoch_permutation(epoch, count, 0)
            batches.epoch = None
            batches.prepare(0, steps)
        host_ms = (time.perf_counter() - began) / 5 / steps * 1000
        batches.close()
        return Timing(step_ms, loop_ms, host_ms, old_loop_ms)
    finally:
        for switch, enabled in saved:
            switch["enabled"] = enabled


def device_description() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU ({os.cpu_count()} cores; no GPU visible to TensorFlow)"
    names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    return f"GPU:0 {names[0]} ({len(gpus)} GPU(s) visible: {', '.join(names)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=24, help="timed steps per network (one epoch of the loop)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--networks", default=DEFAULT_NETWORKS, help="comma-separated <architecture>[x<width>]")
    parser.add_argument("--variants", action="store_true", help="also VGG-8 with XLA and with the forward input-gradient rule")
    args = parser.parse_args()

    configure_gpu_memory()
    print(f"device: {device_description()}")
    print(f"{'network':<28}{'step ms':>9}{'loop ms':>9}{'loop/step':>11}{'host ms':>9}{'old loop ms':>13}   (batch {args.batch_size})")
    loop_ms = {}
    for spec in args.networks.split(","):
        architecture, width = _network(spec.strip())
        timing = measure(architecture, width, args.steps, args.batch_size)
        loop_ms[(architecture, width)] = timing.loop_ms
        print(
            f"{architecture + f' x{width:g}':<28}{timing.step_ms:>9.1f}{timing.loop_ms:>9.1f}{timing.loop_ms / timing.step_ms:>11.2f}"
            f"{timing.host_ms:>9.2f}{timing.old_loop_ms:>13.1f}"
        )
    if args.variants:
        print("VGG-8 x1 step variants, each against the default measured just before it:")
        for label, options in (
            ("XLA (--training.jit-compile)", {"jit_compile": True}),
            ("forward input-gradient rule", {"forward_input_gradient": True}),
            ("single-position product off", {"single_position_product": False}),
            ("fused BatchNorm off", {"fused_batchnorm": False}),
            ("both off (TensorFlow's kernels)", {"single_position_product": False, "fused_batchnorm": False}),
        ):
            default = measure("vgg8", 1.0, args.steps, args.batch_size, loop=False).step_ms
            variant = measure("vgg8", 1.0, args.steps, args.batch_size, loop=False, **options).step_ms
            print(f"  {label:<34} {variant:>7.1f} ms against {default:.1f} ms ({variant / default:.2f}x)")
    hours = lambda milliseconds, iterations: milliseconds * iterations / 3.6e6  # noqa: E731
    paper = [hours(loop_ms[(name, 1.0)], PAPER_ITERATIONS) for name in PAPER_NETWORKS if (name, 1.0) in loop_ms]
    if len(paper) == len(PAPER_NETWORKS):
        print(
            f"paper profile on this device: {sum(paper):.1f} device-hours per seed for the five networks' training "
            f"({', '.join(f'{name} {value:.1f}' for name, value in zip(PAPER_NETWORKS, paper))})"
        )
    if ("resnet20", 1.0) in loop_ms:
        print(
            f"Frankle et al. figure: {hours(loop_ms[('resnet20', 1.0)], FRANKLE_ITERATIONS) * FRANKLE_RUNS:.1f} device-hours "
            f"for {FRANKLE_RUNS} ResNet-20 runs of {FRANKLE_ITERATIONS} iterations (training only)"
        )


if __name__ == "__main__":
    main()
