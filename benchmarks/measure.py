"""Cost of measuring one snapshot, per instrument, next to the cost of training, in one run.

    python -m benchmarks.measure [--profile quick] [--layer penultimate] [--skip-cladec]

For the profile's network and data (quick: VGG-8 on the embedded MNIST, 4,000 / 1,000 images) it
times, on one snapshot: feature extraction (train + test split, each BatchNorm mode), each
decoder with the profile's step budget (the ridge decoder `linear_ridge` beside the unregularised
`linear_exact`, and their ratio), the linear probe, the three mutual-information estimators
(binning, KDE, scale-free KDE on the profile's 1,000-image subset); then a sample of training steps.
Each speed-up of an instrument is printed as a ratio of the two variants timed alternately in this run. It
prints seconds per snapshot and per instrument, and the ratio of the whole measurement of a run
(every snapshot of the schedule) to the whole training run. ClaDec is timed on a fraction of its
budget and extrapolated (its full budget takes tens of minutes on a CPU); the line says so.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import dataclasses
import time

import keras

from kphases.config import measure_profile, profile
from kphases.data import load_dataset
from kphases.decoders import clear_moments_cache, fit_decoder, fit_linear_ridge_decoder
from kphases.features import extract_features, recalibrate_batchnorm
from kphases.information import binning_information, kde_information, relative_kde_information
from kphases.measurement import decoder_settings, probe_settings
from kphases.models import build_model
from kphases.probes import clear_head_trainers, train_linear_head
from kphases.training import _make_step, make_optimizer, make_plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", choices=["smoke", "quick", "full", "paper"])
    parser.add_argument("--layer", default="penultimate")
    parser.add_argument("--training-steps", type=int, default=30, help="training steps timed (after 3 warm-up steps)")
    parser.add_argument("--cladec-steps", type=int, default=20, help="ClaDec updates timed, then extrapolated")
    parser.add_argument("--skip-cladec", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each variant in the speed-up ratios (the fastest counts)")
    args = parser.parse_args()

    config, measure_config = profile(args.profile), measure_profile(args.profile)
    dataset = load_dataset(config.data)
    plan = make_plan(config, len(dataset.y_train))
    keras.utils.set_random_seed(0)
    model = build_model(config.model, dataset.image_shape, dataset.num_classes)
    rows: list[tuple[str, float, str]] = []

    def timed(label: str, function, note: str = ""):
        began = time.perf_counter()
        result = function()
        rows.append((label, time.perf_counter() - began, note))
        return result

    extract_features(model, args.layer, dataset.x_test[:256], "batch")  # trace once, outside the timings
    train_features = timed("features batch (train+test)", lambda: extract_features(model, args.layer, dataset.x_train, "batch"))
    test_features = extract_features(model, args.layer, dataset.x_test, "batch")
    timed(
        "features stored (train+test)",
        lambda: (
            extract_features(model, args.layer, dataset.x_train, "stored"),
            extract_features(model, args.layer, dataset.x_test, "stored"),
        ),
    )
    timed(
        "features recalibrated (train+test)",
        lambda: [
            extract_features(copy, args.layer, split, "stored")
            for copy in [recalibrate_batchnorm(model, dataset.x_train)]
            for split in (dataset.x_train, dataset.x_test)
        ],
    )
    settings = decoder_settings(measure_config)
    for kind in ("linear_ridge", "linear_exact", "linear"):
        result = timed(
            f"decoder {kind}", lambda: fit_decoder(kind, train_features, dataset.x_train, test_features, dataset.x_test, settings)
        )
        note = (
            f"GCV over {settings.ridge_grid_points} penalties, chose {result.ridge_relative_penalty:.3g} x mean eigenvalue"
            if kind == "linear_ridge"
            else "closed form, unregularised"
            if kind == "linear_exact"
            else f"{result.update_steps} updates"
        )
        rows[-1] = (*rows[-1][:2], note)

    # Each change as a ratio in this run: the two variants alternately, the fastest of `--repeats` each (another job on
    # the CPU only ever adds time, and alternating lets it slow both alike).
    def exact(shared: bool):
        clear_moments_cache()
        if shared:
            fit_decoder("linear_ridge", train_features, dataset.x_train, test_features, dataset.x_test, settings)
        began = time.perf_counter()
        fit_decoder("linear_exact", train_features, dataset.x_train, test_features, dataset.x_test, settings)
        return time.perf_counter() - began

    def ridge(train_error: bool):
        clear_moments_cache()
        began = time.perf_counter()
        fit_linear_ridge_decoder(train_features, dataset.x_train, test_features, dataset.x_test, settings, train_error=train_error)
        return time.perf_counter() - began

    timings = [(exact(False), exact(True), ridge(True), ridge(False)) for _ in range(args.repeats)]
    exact_alone, exact_shared, ridge_full, ridge_test_only = (min(column) for column in zip(*timings))
    rows.append(("decoder linear_exact alone", exact_alone, f"moments computed anew; fastest of {args.repeats}"))
    rows.append(("decoder linear_exact after linear_ridge", exact_shared, f"moments shared; fastest of {args.repeats}"))
    rows.append(("decoder linear_ridge, test errors only", ridge_test_only, f"as the PhaseMonitor fits it; fastest of {args.repeats}"))
    if not args.skip_cladec:
        short = dataclasses.replace(settings, epochs=1, min_update_steps=None)
        subset = short.batch_size * args.cladec_steps
        began = time.perf_counter()
        result = fit_decoder("cladec", train_features[:subset], dataset.x_train[:subset], test_features, dataset.x_test, short)
        per_update = (time.perf_counter() - began) / result.update_steps
        full = settings.epochs_for(len(dataset.y_train)) * settings.steps_per_epoch(len(dataset.y_train))
        rows.append(("decoder cladec (extrapolated)", per_update * full, f"{full} updates at {per_update * 1000:.0f} ms each"))
    heads = probe_settings(measure_config)
    result = timed(
        "linear probe",
        lambda: train_linear_head(train_features, dataset.y_train, test_features, dataset.y_test, dataset.num_classes, heads),
    )
    rows[-1] = (*rows[-1][:2], f"{result.update_steps} updates")

    def probe(reuse: bool) -> float:
        if not reuse:
            clear_head_trainers()
        began = time.perf_counter()
        train_linear_head(train_features, dataset.y_train, test_features, dataset.y_test, dataset.num_classes, heads)
        return time.perf_counter() - began

    probe_timings = [(probe(False), probe(True)) for _ in range(args.repeats)]
    probe_traced, probe_reused = (min(column) for column in zip(*probe_timings))
    rows.append(("linear probe, traced head reused", probe_reused, f"a later cell of the same shape; fastest of {args.repeats}"))
    # The information-plane estimators (--metrics mutual_information) on the measured subset of the test split.
    count = min(measure_config.mi_samples, len(dataset.y_test))
    sample, sample_labels = test_features[:count].reshape(count, -1), dataset.y_test[:count]
    information = (
        ("binning", lambda: binning_information(sample, sample_labels, measure_config.mi_bins)),
        ("kde", lambda: kde_information(sample, sample_labels, measure_config.mi_noise_variance)),
        ("kde_relative", lambda: relative_kde_information(sample, sample_labels, 0.1)),
    )
    for name, estimate in information:
        timed(f"mutual information {name}", estimate, f"{count} test images, {sample.shape[1]} features")

    optimizer = make_optimizer(config, plan)
    step = _make_step(model, optimizer, config.training.weight_decay)
    images, labels = dataset.x_train[: config.training.batch_size], dataset.y_train[: config.training.batch_size]
    for _ in range(3):
        float(step(images, labels))
    began = time.perf_counter()
    for _ in range(args.training_steps):
        float(step(images, labels))
    step_seconds = (time.perf_counter() - began) / args.training_steps
    training_seconds = step_seconds * plan.last_iteration
    snapshots = len(plan.snapshot_steps)

    print(
        f"profile {args.profile}: {config.model.architecture} on {dataset.name}/{dataset.source} "
        f"({len(dataset.y_train)} train / {len(dataset.y_test)} test), layer {args.layer}, {os.cpu_count()} CPU cores"
    )
    print(f"{'per snapshot':<38}{'seconds':>9}{'x train step':>14}   note")
    for label, seconds, note in rows:
        print(f"{label:<38}{seconds:>9.2f}{seconds / step_seconds:>14.0f}   {note}")
    print(f"training: {step_seconds * 1000:.1f} ms/step x {plan.last_iteration} steps = {training_seconds:.0f} s")
    default = sum(
        seconds
        for label, seconds, _ in rows
        if label in ("features batch (train+test)", "decoder linear_ridge", "decoder linear", "linear probe")
    )
    print(
        f"linear_ridge / linear_exact alone: {ridge_full / exact_alone:.1f} x (eigendecomposition and GCV grid against one Cholesky solve)"
    )
    print(
        f"linear_ridge without the train predictions (the PhaseMonitor's fit): {ridge_full / ridge_test_only:.2f} x faster "
        "(both computing their moments)"
    )
    print(
        f"linear_exact after linear_ridge on the same features, moments shared: {exact_alone / exact_shared:.2f} x faster "
        f"({exact_alone:.2f} s -> {exact_shared:.2f} s; the pair {ridge_full + exact_alone:.2f} s -> {ridge_full + exact_shared:.2f} s)"
    )
    print(
        f"linear probe with the head traced by an earlier cell of the same shape: {probe_traced / probe_reused:.2f} x faster "
        f"({probe_traced:.2f} s -> {probe_reused:.2f} s; bitwise the same head)"
    )
    print(
        f"default measurement (batch features, linear_ridge + linear decoders, probe) per snapshot: {default:.1f} s; "
        f"x {snapshots} snapshots = {default * snapshots:.0f} s = {default * snapshots / training_seconds:.2f} x the training time"
    )
    information_seconds = sum(seconds for label, seconds, _ in rows if label.startswith("mutual information"))
    print(
        f"mutual information (binning, kde, kde_relative) per snapshot and layer: {information_seconds:.2f} s = "
        f"{information_seconds / default:.3f} x the default measurement of that snapshot"
    )


if __name__ == "__main__":
    main()
