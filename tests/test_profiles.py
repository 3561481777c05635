"""The figure profiles (reproduce.common), the cost estimate (reproduce.costs) and the resume of finished figures."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest

from kphases.config import DataConfig, MeasureConfig, ModelConfig, RunConfig, TrainingConfig
from reproduce import costs, plan, reference_run
from reproduce.common import Options, PlannedRun, Work, main_runs, parse_options, replicas, run_figure, tidy_rows


def _mock_data_dir(tmp_path):
    for name in ("mnist", "fashion_mnist"):
        np.savez(tmp_path / f"{name}.npz", x_train=np.zeros((20, 28, 28), np.uint8), y_train=np.arange(20) % 10,
                 x_test=np.zeros((10, 28, 28), np.uint8), y_test=np.arange(10) % 10)  # fmt: skip
    np.savez(tmp_path / "cifar10_jpeg_q75.npz", x_train=np.zeros((30, 32, 32, 3), np.uint8), y_train=np.arange(30) % 10,
             x_test=np.zeros((10, 32, 32, 3), np.uint8), y_test=np.arange(10) % 10)  # fmt: skip
    return tmp_path


def test_quick_is_the_embedded_mnist_at_one_seed_whatever_the_data_directory(tmp_path):
    options = parse_options("", ["--profile", "quick", "--data-dir", str(_mock_data_dir(tmp_path))])
    runs = main_runs(options)
    assert [(p.config.model.architecture, p.config.model.width) for p in runs] == [("vgg8", 0.125)]
    assert {p.config.data for p in runs} == {DataConfig("mnist", "embedded")}
    assert {p.config.training.duration for p in runs} == {"1024it"}
    assert all(replicas(p, options) == [] for p in runs)


def test_full_is_the_offline_data_at_three_seeds(tmp_path):
    options = parse_options("", ["--profile", "full", "--data-dir", str(_mock_data_dir(tmp_path))])
    runs = main_runs(options)
    assert [p.label for p in runs] == ["VGG-8 / MNIST", "ResNet-10 x1/8 / MNIST", "VGG-8 / Fashion-MNIST", "ResNet-10 x1/8 / Fashion-MNIST"]
    assert runs[0].config.data == DataConfig("mnist", "directory", train_size=10_000, test_size=2_000)
    seeded = replicas(runs[0], options)
    assert [p.label for p in seeded] == ["VGG-8 / MNIST / seed 1", "VGG-8 / MNIST / seed 2"]
    assert [p.config for p in seeded] == [runs[0].config.replace(training=TrainingConfig(duration="1024it", seed=seed)) for seed in (1, 2)]
    reference = reference_run.seeded_runs(options)
    assert [p.config.training.seed for p in reference] == [0, 1, 2]
    assert reference[0].config.data == DataConfig("cifar10", "directory", file="cifar10_jpeg_q75.npz")


def test_full_without_its_data_names_the_missing_file(tmp_path):
    options = parse_options("", ["--profile", "full", "--data-dir", str(tmp_path)])
    with pytest.raises(ValueError, match=r"profile full needs mnist\.npz in the data directory"):
        main_runs(options)


# --- the cost estimate ----------------------------------------------------------------------------


def _calibration(config: RunConfig, inference: float = 0.001) -> costs.Calibration:
    """A calibration with made-up timings (nothing is timed): step 0.01 s, inference 1 ms per image, 1 GFLOP/s,
    a run's set-up 2 s and a snapshot's 0.1 s, drawing a figure 0.5 s."""
    calibration = costs.Calibration(flops_per_second=1e9, eigendecomposition_seconds_per_cubed=1e-9, figure_seconds=0.5)
    key = (config.model, 1, 10, config.training.batch_size)
    calibration.step_seconds[key] = 0.01
    calibration.inference_seconds_per_image[key] = inference
    calibration.feature_widths[key] = {"penultimate": 64, "logits": 10}
    calibration.run_setup_seconds[config.model.architecture] = (2.0, 0.1)
    return calibration


def test_the_estimate_charges_steps_snapshots_and_cells_with_the_calibrated_times():
    config = RunConfig(
        data=DataConfig("mnist", "embedded", train_size=256, test_size=128),
        model=ModelConfig("vgg8", width=0.125),
        training=TrainingConfig(duration="16it", batch_size=32),
    )
    exact = MeasureConfig(decoders=("linear_exact",), probe=False, transfer=(), steps=(0, 16))
    planned = PlannedRun("run", config, exact)
    figure = types.SimpleNamespace(work=lambda options: [Work(planned, (exact,))])
    again = types.SimpleNamespace(work=lambda options: [Work(planned, (exact,))])  # the same run and cells: charged once
    (first, second) = costs.estimate({"one": figure, "two": again}, Options(profile="smoke"), _calibration(config))
    from kphases.training import make_plan

    snapshots = len(make_plan(config, 256).snapshot_steps)
    assert (first.runs, first.iterations, first.cells) == (1, 16, 2)
    assert first.training_seconds == pytest.approx(16 * 0.01 + 2.0 + snapshots * ((256 + 128) * 0.001 + 0.1))
    # Per cell: one feature extraction of 384 images, the moments, both predictions and the Cholesky solve of a 64-d decoder.
    products = 2.0 * 256 * 64 * (64 + 1024) + 2.0 * 384 * 64 * 1024
    solve = 64**3 / 3 + 2.0 * 64 * 64 * 1024
    assert first.measurement_seconds == pytest.approx(2 * (384 * 0.001 + (products + solve) / 1e9))
    assert (second.runs, second.cells, second.seconds) == (0, 0, 0.5)  # drawing its figure only
    table = costs.estimate_table([first, second], {"one": 2 * first.seconds, "two": 1.0})
    assert "| one | 1 | 16 | 2 |" in table and "| 2.00 |" in table


def test_the_estimate_prices_the_monitor_replays_of_early_stopping_at_every_scheduled_snapshot(monkeypatch):
    from kphases.training import make_plan
    from reproduce import early_stopping

    config = RunConfig(
        data=DataConfig("mnist", "embedded", train_size=256, test_size=128),
        model=ModelConfig("vgg8", width=0.125),
        training=TrainingConfig(duration="16it", batch_size=32),
    )
    monkeypatch.setattr(early_stopping, "_settings", lambda options: [PlannedRun("run", config, MeasureConfig())])
    calibration = _calibration(config)
    seconds = early_stopping.driver_seconds(Options(profile="smoke"), calibration)
    measured = [step for step in (0, 2, 4, 8, 16) if step in make_plan(config, 256).snapshot_steps]
    assert measured == [0, 2, 4, 8, 16]
    # the monitor's subsets are larger than the splits: all 256 + 128 images, a 64-d ridge decoder to 1,024 pixels
    products = 2.0 * 256 * 64 * (64 + 1024) + 2.0 * 384 * 64 * 1024
    ridge = (products + 4.0 * 64 * 64 * 1024) / 1e9 + 64**3 * 1e-9
    assert seconds == pytest.approx(2.0 + len(measured) * (0.1 + 384 * 0.001 + ridge))  # the network built once, then each snapshot


def test_many_short_runs_cost_more_than_one_long_run_of_as_many_iterations():
    """A run's set-up (building, tracing, writing) is charged per run: 63 runs of one iteration are not one run of 63."""
    config = RunConfig(
        data=DataConfig("mnist", "embedded", train_size=256, test_size=128),
        model=ModelConfig("vgg8", width=0.125),
        training=TrainingConfig(duration="63it", batch_size=32),
    )
    short = [config.replace(training=TrainingConfig(duration="1it", batch_size=32, seed=seed)) for seed in range(63)]

    def figure(configs):
        return types.SimpleNamespace(work=lambda options: [Work(PlannedRun(c.hash(), c, MeasureConfig()), ()) for c in configs])

    calibration = _calibration(config, inference=0.0)  # only steps and set-up left to charge
    (many, one) = costs.estimate({"many": figure(short), "one": figure([config])}, Options(profile="smoke"), calibration)
    assert (many.iterations, one.iterations) == (63, 63)
    assert many.training_seconds > one.training_seconds
    snapshots = 63 * len(_snapshots(short[0])) - len(_snapshots(config))
    assert many.training_seconds - one.training_seconds == pytest.approx(62 * 2.0 + snapshots * 0.1)


def _snapshots(config: RunConfig) -> list[int]:
    from kphases.training import make_plan

    return make_plan(config, 256).snapshot_steps


def test_the_calibration_times_a_positive_set_up_per_run_and_per_lineage_level(tmp_path):
    config = RunConfig(model=ModelConfig("vgg8", width=0.125), training=TrainingConfig(duration="4it", batch_size=32))
    calibration = costs.Calibration()
    key = calibration.network(config.model, DataConfig("mnist", "embedded"), 32)
    per_run, per_snapshot = calibration.run_setup(key)
    assert per_run > 0 and per_snapshot >= 0
    assert min(calibration.lineage(key)) >= 0 and sum(calibration.lineage(key)) > 0
    assert calibration.statistics_per_snapshot(key) > 0
    assert "run set-up vgg8" in calibration.describe()


def test_split_sizes_read_the_named_file_not_the_dataset_default(tmp_path):
    options = parse_options("", ["--data-dir", str(_mock_data_dir(tmp_path))])
    assert plan.split_sizes(DataConfig("cifar10", "directory", file="cifar10_jpeg_q75.npz"), options) == (30, 10)
    assert plan.split_sizes(DataConfig("mnist", "directory", train_size=12), options) == (12, 10)


# --- a finished figure is not recomputed -------------------------------------------------------------


def test_a_finished_figure_is_redrawn_from_its_csv_and_recomputed_when_its_csv_changed(tmp_path):
    computed = []

    def compute(options):
        computed.append(1)
        return pd.DataFrame({"metric": ["a"], "value": [1.0]})

    def plot(table, options):
        assert list(table["value"]) == [1.0]
        return "drawn", "summary"

    options = Options(profile="smoke", out=tmp_path / "out")
    for _ in range(2):
        run_figure("theory", compute, plot, options, "figure")
    assert len(computed) == 1 and (options.out / "theory.finished.json").is_file()
    (options.out / "theory.csv").write_text("metric,value\na,1.0\nb,2.0\n")  # edited since: no longer the finished table
    run_figure("theory", compute, plot, options, "figure")
    assert len(computed) == 2
    run_figure("theory", compute, plot, Options(profile="smoke", out=options.out, recompute=True), "figure")
    assert len(computed) == 3
    run_figure("theory", compute, plot, Options(profile="quick", out=options.out), "figure")  # other work: recomputed
    assert len(computed) == 4


# --- what the reference run's rows and title say -----------------------------------------------------


def test_classifier_rows_carry_the_trained_splits_and_the_title_both_sizes(tmp_path):
    from kphases.config import profile
    from kphases.training import train

    config = profile("smoke").replace(training=TrainingConfig(duration="2it", batch_size=32))
    run = train(config, runs_dir=tmp_path, progress=False)
    table = tidy_rows(PlannedRun("seed 0", config, MeasureConfig()), run, pd.DataFrame(columns=["metric"]))
    fingerprint = run.provenance()["data"]["fingerprint"]
    assert set(table["data"]) == {f"mnist/embedded train=256 test=128 fingerprint={fingerprint}"}
    measured = table.iloc[:1].assign(instrument="linear_ridge", data="mnist/embedded train=64 test=32 fingerprint=x")
    title = reference_run.data_sizes(pd.concat([table, measured]))
    assert title == "mnist/embedded: classifier trained on 256, scored on 128 test images; decoders and heads on 64 / 32"


# --- the closed-form decoders share their moments -------------------------------------------------


def test_ridge_and_exact_share_their_moments_with_the_same_numbers(monkeypatch):
    from kphases import decoders

    rng = np.random.default_rng(0)
    features = rng.standard_normal((300, 24)).astype(np.float32)
    images = rng.standard_normal((300, 4, 4, 1)).astype(np.float32)
    test_features, test_images = features[:50] + 0.1, images[:50]
    decoders.clear_moments_cache()
    fresh = {kind: decoders.fit_decoder(kind, features, images, test_features, test_images) for kind in ("linear_exact", "linear_ridge")}
    calls = []
    accumulate = decoders._accumulate_moments
    monkeypatch.setattr(decoders, "_accumulate_moments", lambda *arrays: calls.append(1) or accumulate(*arrays))
    decoders.clear_moments_cache()
    shared = {kind: decoders.fit_decoder(kind, features, images, test_features, test_images) for kind in ("linear_ridge", "linear_exact")}
    assert len(calls) == 1  # accumulated once for both decoders
    for kind in fresh:
        assert shared[kind].mse_per_element_test == fresh[kind].mse_per_element_test
        assert np.array_equal(shared[kind].test_errors_per_image, fresh[kind].test_errors_per_image)
    features[0, 0] += 1.0  # other contents, other moments: never a stale cache
    decoders.fit_decoder("linear_exact", features, images, test_features, test_images)
    assert len(calls) == 2


def test_the_ridge_decoder_without_its_train_error_gives_the_same_test_errors():
    from kphases import decoders

    rng = np.random.default_rng(1)
    features, images = rng.standard_normal((200, 12)).astype(np.float32), rng.standard_normal((200, 4, 4, 1)).astype(np.float32)
    full = decoders.fit_linear_ridge_decoder(features, images, features[:40], images[:40])
    test_only = decoders.fit_linear_ridge_decoder(features, images, features[:40], images[:40], train_error=False)
    assert np.isnan(test_only.mse_per_element_train) and not np.isnan(full.mse_per_element_train)
    assert test_only.mse_per_element_test == full.mse_per_element_test
    assert np.array_equal(test_only.test_errors_per_image, full.test_errors_per_image)


# --- label_noise at one seed (quick) ------------------------------------------------------------------


def test_label_noise_with_one_seed_judges_it_over_its_test_images_and_with_two_gives_none():
    from reproduce import label_noise, verdicts

    steps = [0, 4, 16, 64, 256, 1024]
    rng = np.random.default_rng(0)
    shape = np.array([1.0, 1.0, 0.8, 0.7, 0.8, 0.9])  # plateau, fall, rise
    errors = shape[:, None] * (1 + 0.01 * rng.standard_normal((len(steps), 500)))
    per_image = {verdicts.curve_key("noise 20% / seed 0", "penultimate", "linear_ridge", "batch"): (steps, errors)}
    curves = pd.DataFrame({0: errors.mean(axis=1)}, index=steps)
    result = label_noise.verdict(curves, per_image, ["noise 20% / seed 0"])
    assert result is not None and result.three_phases
    assert verdicts.noise_words(result).startswith("one seed")
    assert label_noise.verdict(pd.concat([curves, curves.rename(columns={0: 1})], axis=1), per_image, ["a", "b"]) is None
