"""What `kphases.PhaseMonitor` costs, as a fraction of the training it watches, in one run.

    python -m benchmarks.monitor [--profile quick] [--steps N] [--train-subset N] [--test-subset N]

Trains the profile's network on its data with `model.fit` and a `PhaseMonitor` (default
settings: doubling schedule, penultimate layer, its default subsets, ridge decoder, paired
bootstrap), never deciding early (`min_effect` set out of reach, so every scheduled step is
measured: the monitor's worst case). Prints the time spent inside the monitor, the time of
everything else in `fit`, and their ratio (the target at quick is <= 5%). Both are measured in
the same process, one after the other within the same fit, so their ratio holds on another
machine far better than either number. Then, on the features of the trained network, the speed-up
of the monitor's decoder fit with `DECODER_BLAS_THREADS` BLAS threads against the process's
setting (the two alternately, the fastest of three each), and how many of the measured steps'
weights were written (only the step a decision can still choose is).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import tempfile
import time

import keras
import numpy as np
from threadpoolctl import threadpool_info

from kphases.config import parse_steps, profile
from kphases.data import load_dataset
from kphases.features import extract_features
from kphases.models import build_model
from kphases.monitor import DECODER_BLAS_THREADS, MonitorSettings, PhaseMonitor


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", choices=["smoke", "quick", "full", "paper"])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the profile's duration)")
    parser.add_argument("--train-subset", type=int, default=None, help="MonitorSettings.train_subset (default: the monitor's default)")
    parser.add_argument("--test-subset", type=int, default=None, help="MonitorSettings.test_subset (default: the monitor's default)")
    args = parser.parse_args(argv)

    config = profile(args.profile)
    dataset = load_dataset(config.data)
    batch = config.training.batch_size
    steps_per_epoch = -(-len(dataset.y_train) // batch)
    steps = args.steps or parse_steps(config.training.duration, steps_per_epoch)
    keras.utils.set_random_seed(config.training.seed)
    model = build_model(config.model, dataset.image_shape, dataset.num_classes)
    model.compile(
        optimizer=keras.optimizers.SGD(config.training.learning_rate, momentum=config.training.momentum),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    with tempfile.TemporaryDirectory() as directory:
        sizes = {
            name: value for name, value in (("train_subset", args.train_subset), ("test_subset", args.test_subset)) if value is not None
        }
        settings = MonitorSettings(min_effect=1e9, **sizes)
        monitor = PhaseMonitor(directory, dataset.x_train, dataset.x_test, settings, log=None)
        inside = {"seconds": 0.0, "measurements": 0}
        observe = monitor.observe

        def timed(step, model, save=None):
            start = time.perf_counter()
            before = len(monitor.rule.steps)
            result = observe(step, model, save)
            inside["seconds"] += time.perf_counter() - start
            inside["measurements"] += len(monitor.rule.steps) - before
            return result

        monitor.observe = timed
        written = []
        save_weights = monitor._save_weights

        def counted_save(step, model):
            written.append(step)
            save_weights(step, model)

        monitor._save_weights = counted_save
        epochs = -(-steps // steps_per_epoch)
        start = time.perf_counter()
        model.fit(
            dataset.x_train,
            dataset.y_train,
            batch_size=batch,
            epochs=epochs,
            steps_per_epoch=None,
            shuffle=True,
            verbose=0,
            callbacks=[monitor],
        )
        total = time.perf_counter() - start
    training = total - inside["seconds"]
    decoder_seconds = _decoder_speed_up(monitor, model)
    updates = int(np.asarray(model.optimizer.iterations))
    print(
        f"profile {args.profile}: {config.model.architecture} on {dataset.name} ({len(dataset.y_train)} train images), "
        f"{updates} updates at batch {batch}"
    )
    print(f"monitor subsets: {settings.train_subset} train / {settings.test_subset} test images")
    print(f"training (fit without the monitor's time)  {training:9.2f} s  ({1000 * training / max(updates, 1):.1f} ms per update)")
    print(
        f"monitor ({inside['measurements']} measurements)            {inside['seconds']:9.2f} s  "
        f"({inside['seconds'] / max(inside['measurements'], 1):.2f} s per measurement)"
    )
    print(f"monitor / training                         {inside['seconds'] / training:9.3f}  (target at quick: <= 0.05)")
    print(f"weights written: {len(written)} of {inside['measurements']} measured steps")
    threads, one = decoder_seconds
    print(
        f"decoder fit with {DECODER_BLAS_THREADS} BLAS thread(s) against {_blas_threads()}: {threads / one:.2f} x faster "
        f"({threads:.4f} s -> {one:.4f} s)"
    )


def _decoder_speed_up(monitor: PhaseMonitor, model: keras.Model, repeats: int = 3) -> tuple[float, float]:
    """(seconds with the process's BLAS threads, seconds with DECODER_BLAS_THREADS): the fastest of `repeats`, alternately."""
    probe = monitor.probe
    layer, mode = probe.layer(model), probe.bn_stats(model)
    train_features = extract_features(model, layer, probe.train, mode)
    test_features = extract_features(model, layer, probe.test, mode)
    timings = {None: [], DECODER_BLAS_THREADS: []}
    for _ in range(repeats):
        for threads in timings:
            start = time.perf_counter()
            probe.fit_decoder(train_features, test_features, blas_threads=threads)
            timings[threads].append(time.perf_counter() - start)
    return min(timings[None]), min(timings[DECODER_BLAS_THREADS])


def _blas_threads() -> int:
    return max((library["num_threads"] for library in threadpool_info() if library["user_api"] == "blas"), default=1)


if __name__ == "__main__":
    main()
