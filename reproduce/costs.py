"""What a profile's figures will cost on this machine, from a few timed steps, and what they did cost.

    python -m reproduce.all --profile quick --dry-run      # per figure: runs, iterations, cells, estimated seconds

The estimate is calibrated, not guessed: `calibrate` times, on this machine and in this process,
a few training steps and an inference pass of every (architecture, width, activation, image
shape) the figures train; per architecture, real runs of a few steps in a temporary run store
(the set-up of a run and of each snapshot: building and tracing the network, writing its files)
and early_phase's lineage runs and statistics; float64 matrix products and one symmetric
eigendecomposition (the closed-form decoders); a few updates of a linear decoder and a linear head
at every feature width the figures measure; and drawing one figure. Nothing is cached on disk: a
calibration is as good as the load on the CPU while it runs (a busy CPU inflates it, as it
inflates the run it predicts).

`estimate` walks each figure's work in the order `reproduce.all` makes them and charges each run
and each measurement cell to the first figure that needs it (later figures find it in the run
store, as they do in a real run):
- a run: its iterations x the timed step, its set-up, and at every snapshot the snapshot's set-up
  and one inference pass over the full train and test splits (the classifier metrics; a second
  train pass with label noise); an early_phase lineage run also its rewind and each level of its
  mask chain (built again for its start and its sparsity);
- a measurement cell: feature extraction over the measurement subsets in each BatchNorm mode (a
  recalibration pass for `recalibrated`), each decoder (closed form: the normal equations and the
  solve or eigendecomposition from the timed rates; trained: its updates x the timed update), the
  probe and transfer heads (updates x the timed update), the information estimators (the KDE's
  n^2 pairwise distances);
- work on the driver: drawing the figure (every figure), early_phase's statistics of each dense
  run's snapshots, and what a figure does outside the run store (the theory's simulation, the kept
  reconstructions) by the figure's own `driver_seconds(options, calibration)` where it has one; a
  figure that trains nothing of the store and has none is priced as drawing only, and the table says so.

`timing_table` puts the estimates beside the measured seconds of a real run (`reproduce.all`
writes it to its log and as the `timing` section of summary.md).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import keras
import matplotlib.pyplot as plt
import numpy as np
import scipy.linalg
import tensorflow as tf

from kphases.config import DataConfig, LineageConfig, MeasureConfig, ModelConfig, RunConfig, ScheduleConfig, TrainingConfig
from kphases.data import Dataset
from kphases.decoders import DecoderSettings, build_linear_decoder, train_decoder
from kphases.early_phase import early_statistics, experiment_runs, lineage_masks, train_lineage
from kphases.features import probe_model
from kphases.measurement import decoder_settings, probe_settings
from kphases.models import build_model, probe_points
from kphases.probes import ProbeSettings, train_linear_head
from kphases.pruning import prunable_paths
from kphases.store import Run
from kphases.training import _make_step, make_optimizer, make_plan
from reproduce.common import Options, Work, steps_of_run
from reproduce.plan import split_sizes

IMAGE_SIDE = 32  # every dataset is resized to 32 x 32 (kphases.data.preprocess)
CHANNELS = {"mnist": 1, "fashion_mnist": 1, "digits": 1, "cifar10": 3, "cifar100": 3}
CLASSES = {"mnist": 10, "fashion_mnist": 10, "digits": 10, "cifar10": 10, "cifar100": 100}
"""Train and test size of each tfds dataset (the tfds catalogue)."""
TIMED_STEPS = 6  # training steps timed per network (the fastest counts), after two untimed ones (tracing)
TIMED_UPDATES = 64  # decoder / head updates per epoch of the timed fits (one short epoch)
HEAD_EXTRA_EPOCHS = 15  # extra epochs of the longer timed head fit: enough updates to outweigh the noise of tracing and set-up
DECODER_EXTRA_EPOCHS = 3  # the same for a decoder, whose updates cost far more each
TRANSFER_TASKS = {"mnist": 1, "fashion_mnist": 1, "digits": 1, "cifar10": 2, "cifar100": 2}
"""Transfer tasks `MeasureConfig.transfer=None` means: dataset_switch, plus color_dominance on RGB images."""
SETUP_ITERATIONS = 4  # the timed set-up runs: so short that nearly all their time is set-up, not steps


# --- data sizes, without loading any image ------------------------------------------------------


# --- calibration --------------------------------------------------------------------------------


@dataclass
class Calibration:
    """Seconds of the timed pieces on this machine (filled on demand, kept for one process)."""

    step_seconds: dict[tuple, float] = field(default_factory=dict)
    inference_seconds_per_image: dict[tuple, float] = field(default_factory=dict)
    feature_widths: dict[tuple, dict[str, int]] = field(default_factory=dict)
    decoder_update_seconds: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)
    head_update_seconds: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)
    flops_per_second: float = 0.0
    eigendecomposition_seconds_per_cubed: float = 0.0
    run_setup_seconds: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per architecture: (seconds per run, seconds per snapshot) besides its steps and inference passes."""
    lineage_seconds: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per architecture: (seconds to rewind a run, seconds per level of its mask chain) of an early_phase lineage run."""
    statistics_seconds_per_snapshot: dict[str, float] = field(default_factory=dict)
    """Per architecture: early_phase's statistics of one dense-run snapshot (its gradient norm on the timed batch)."""
    figure_seconds: float = 0.0
    seconds_spent: float = 0.0

    def describe(self) -> str:
        """The timed pieces, for the reader to judge the machine's load against known unloaded times."""
        steps = ", ".join(
            f"{model.architecture} x{model.width:g} {model.activation} ({channels} ch, batch {batch}) {seconds * 1000:.0f} ms"
            for (model, channels, _, batch), seconds in self.step_seconds.items()
        )
        heads = ", ".join(
            f"{width}-d {per_update * 1000:.2f} ms + {per_call:.2f} s/call"
            for (width, _), (per_call, per_update) in self.head_update_seconds.items()
        )
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        setup = ", ".join(
            f"{architecture} {per_run:.1f} s + {per_snapshot:.2f} s/snapshot"
            for architecture, (per_run, per_snapshot) in self.run_setup_seconds.items()
        )
        return (
            f"calibration ({self.seconds_spent:.0f} s, load average {load:.1f} on {os.cpu_count()} cores: other jobs inflate it): training step {steps}; "
            f"run set-up {setup or '-'}; float64 products {self.flops_per_second / 1e9:.0f} GFLOP/s; "
            f"head update {heads or '-'}; drawing a figure {self.figure_seconds:.1f} s"
        )

    def network(self, model: ModelConfig, data: DataConfig, batch_size: int) -> tuple:
        key = (model, CHANNELS[data.name], CLASSES[data.name], batch_size)
        if key not in self.step_seconds:
            self._time_network(key)
        return key

    def _time_network(self, key: tuple) -> None:
        began = time.perf_counter()
        model_config, channels, classes, batch_size = key
        keras.utils.set_random_seed(0)
        model = _build_network(model_config, channels, classes)
        config = RunConfig(model=model_config, training=TrainingConfig(duration="64it", batch_size=batch_size))
        step = _make_step(model, make_optimizer(config, make_plan(config, 64 * batch_size)), 0.0)
        rng = np.random.default_rng(0)
        images = rng.standard_normal((batch_size, IMAGE_SIDE, IMAGE_SIDE, channels)).astype(np.float32)
        labels = rng.integers(0, classes, batch_size)
        self.step_seconds[key] = _fastest_seconds(lambda: float(step(images, labels)), TIMED_STEPS)
        forward = tf.function(lambda batch: model(batch, training=False))
        batch = tf.constant(np.repeat(images, max(1, 512 // batch_size), axis=0))
        self.inference_seconds_per_image[key] = _fastest_seconds(lambda: forward(batch).numpy(), 3) / int(batch.shape[0])
        self.feature_widths[key] = {
            layer: int(np.prod(probe_model(model, layer).output.shape[1:])) for layer in probe_points(model) if layer != "logits"
        }
        self.feature_widths[key]["logits"] = classes
        self.seconds_spent += time.perf_counter() - began

    def run_setup(self, key: tuple) -> tuple[float, float]:
        """(seconds per run, seconds per snapshot) of training the network of `key` besides its steps and
        inference passes: building and tracing the network, writing the run's files, each snapshot's weights and metrics."""
        architecture = key[0].architecture
        if architecture not in self.run_setup_seconds:
            self._time_setup(key)
        return self.run_setup_seconds[architecture]

    def lineage(self, key: tuple) -> tuple[float, float]:
        """(seconds to rewind, seconds per level of the mask chain) an early_phase lineage run adds to `run_setup`."""
        self.run_setup(key)
        return self.lineage_seconds[key[0].architecture]

    def statistics_per_snapshot(self, key: tuple) -> float:
        """Seconds of early_phase's statistics (weights, signs, gradient norm) of one snapshot of the dense run."""
        self.run_setup(key)
        return self.statistics_seconds_per_snapshot[key[0].architecture]

    def _time_setup(self, key: tuple) -> None:
        """Real runs of SETUP_ITERATIONS steps on random images in a temporary run store, timed: one with two
        snapshots, one with a snapshot at every step, and early_phase lineage runs of rounds 1 and 2 from the
        first. The differences give the per-run, per-snapshot and per-mask-level costs (one-time costs of a
        process are paid by an untimed run first). Architecture-keyed: set-up is tracing, building, writing,
        which depend on the layers more than on their width."""
        began = time.perf_counter()
        model_config, channels, classes, batch_size = key
        dataset = _random_dataset(channels, classes, batch_size)
        base = RunConfig(
            data=DataConfig("mnist", "embedded", train_size=len(dataset.y_train), test_size=len(dataset.y_test)),
            model=model_config,
            training=TrainingConfig(duration=f"{SETUP_ITERATIONS}it", batch_size=batch_size),
        )
        few = base.replace(schedule=ScheduleConfig(kind="explicit", steps=(0, SETUP_ITERATIONS)))
        every = base.replace(schedule=ScheduleConfig(kind="explicit", steps=tuple(range(SETUP_ITERATIONS + 1))))
        with tempfile.TemporaryDirectory() as runs_dir:

            def timed(config: RunConfig) -> float:
                started = time.perf_counter()
                train_lineage(config, runs_dir, progress=False, dataset=dataset)
                lineage_masks(config, runs_dir, dataset)  # the figure reads each run's sparsity from its mask chain
                return time.perf_counter() - started

            timed(few.replace(training=dataclasses.replace(few.training, seed=1)))  # one-time costs of the process
            seconds_few, seconds_every = timed(few), timed(every)
            rounds = []
            for parent in (few.hash(), None):
                lineage = LineageConfig(rewind_run=few.hash(), rewind_step=0, mask_run=parent or rounds[-1][0], prune_fraction=0.5)
                config = few.replace(lineage=lineage)
                rounds.append((config.hash(), timed(config)))
            dense = Run.open(os.path.join(runs_dir, every.hash()))
            started = time.perf_counter()
            early_statistics(dense, dataset, prunable_paths(_build_network(model_config, channels, classes)), len(dataset.y_train))
            statistics = (time.perf_counter() - started) / (SETUP_ITERATIONS + 1)
        images = len(dataset.y_train) + len(dataset.y_test)
        inference = images * self.inference_seconds_per_image[key]
        per_snapshot = max((seconds_every - seconds_few) / (SETUP_ITERATIONS - 1) - inference, 0.0)
        per_run = max(seconds_few - SETUP_ITERATIONS * self.step_seconds[key] - 2 * (per_snapshot + inference), 0.0)
        first, second = rounds[0][1] - seconds_few, rounds[1][1] - seconds_few
        per_level = max(second - first, 0.0)
        self.run_setup_seconds[model_config.architecture] = (per_run, per_snapshot)
        self.lineage_seconds[model_config.architecture] = (max(first - per_level, 0.0), per_level)
        self.statistics_seconds_per_snapshot[model_config.architecture] = statistics
        self.seconds_spent += time.perf_counter() - began

    def figure(self) -> float:
        """Seconds to draw a four-panel figure and save it as PNG and PDF (what every figure module does once)."""
        if not self.figure_seconds:
            began = time.perf_counter()
            figure, axes = plt.subplots(2, 2, figsize=(10, 7))
            for index, axis in enumerate(axes.ravel()):
                axis.plot(np.arange(12), np.random.default_rng(index).random(12), "o-")
                axis.set_xscale("symlog")
                axis.set_title(f"panel {index}")
            figure.tight_layout()
            with tempfile.TemporaryDirectory() as directory:
                figure.savefig(os.path.join(directory, "figure.png"), dpi=130, bbox_inches="tight")
                figure.savefig(os.path.join(directory, "figure.pdf"), bbox_inches="tight")
            plt.close(figure)
            self.figure_seconds = time.perf_counter() - began
            self.seconds_spent += self.figure_seconds
        return self.figure_seconds

    def linear_algebra(self) -> None:
        """float64 matrix-product rate and the eigendecomposition constant (seconds / d^3)."""
        if self.flops_per_second:
            return

        began = time.perf_counter()
        rng = np.random.default_rng(0)
        left, right = rng.standard_normal((1024, 1024)), rng.standard_normal((1024, 1024))
        self.flops_per_second = 2 * 1024**3 / _fastest_seconds(lambda: left @ right, 3)
        size = 768
        matrix = rng.standard_normal((size, size))
        symmetric = matrix @ matrix.T
        seconds = _fastest_seconds(lambda: scipy.linalg.eigh(symmetric, check_finite=False, driver="evd"), 2)
        self.eigendecomposition_seconds_per_cubed = seconds / size**3
        self.seconds_spent += time.perf_counter() - began

    def feature_width(self, key: tuple, layer: str) -> int:
        """Features of `layer` of the network of `key` (from `network`); a layer not timed is priced as `penultimate`."""
        return self.feature_widths[key].get(layer, self.feature_widths[key]["penultimate"])

    def ridge_cell(self, key: tuple, layer: str, train: int, test: int) -> float:
        """Seconds of one ridge-decoder measurement of the network of `key` (from `network`): the features of `train` +
        `test` images at `layer` (one inference pass each) and the ridge decoder's fit on them (`kphases.decoders.fit_linear_ridge_decoder`)."""
        channels = key[1]
        width = self.feature_width(key, layer)
        features = (train + test) * self.inference_seconds_per_image[key]
        return features + self.closed_form_decoder("linear_ridge", width, IMAGE_SIDE * IMAGE_SIDE * channels, train, test)

    def closed_form_decoder(self, instrument: str, width: int, pixels: int, train: int, test: int) -> float:
        """Seconds of a closed-form decoder (`linear_ridge` or `linear_exact`) from `width` features to `pixels` values:
        the moments and both predictions at the timed matrix-product rate, then its eigendecomposition or solve."""
        self.linear_algebra()
        products = 2.0 * train * width * (width + pixels) + 2.0 * (train + test) * width * pixels  # moments, then both predictions
        if instrument == "linear_ridge":
            solve = 4.0 * width * width * pixels / self.flops_per_second + width**3 * self.eigendecomposition_seconds_per_cubed
        elif instrument == "linear_exact":
            solve = (width**3 / 3 + 2.0 * width * width * pixels) / self.flops_per_second
        else:
            raise ValueError(f"closed-form decoder {instrument!r} is not one of ['linear_ridge', 'linear_exact']")
        return products / self.flops_per_second + solve

    def decoder_update(self, feature_width: int, channels: int) -> tuple[float, float]:
        """(seconds per call, seconds per update) of a trained linear decoder from `feature_width` features."""
        key = (feature_width, channels)
        if key not in self.decoder_update_seconds:

            def fit(features, images, epochs):
                train_decoder(
                    build_linear_decoder((feature_width,), (IMAGE_SIDE, IMAGE_SIDE, channels)),
                    features,
                    images,
                    DecoderSettings(epochs=epochs),
                )

            rng = np.random.default_rng(0)
            features = rng.standard_normal((TIMED_UPDATES * 128, feature_width)).astype(np.float32)
            images = rng.standard_normal((TIMED_UPDATES * 128, IMAGE_SIDE, IMAGE_SIDE, channels)).astype(np.float32)
            self.decoder_update_seconds[key] = self._per_call_and_update(fit, features, images, DECODER_EXTRA_EPOCHS)
        return self.decoder_update_seconds[key]

    def head_update(self, feature_width: int, classes: int) -> tuple[float, float]:
        """(seconds per call, seconds per update) of a linear head on `feature_width` features, its evaluation included."""
        key = (feature_width, classes)
        if key not in self.head_update_seconds:

            def fit(features, labels, epochs):
                train_linear_head(features, labels, features[:128], labels[:128], classes, ProbeSettings(epochs=epochs))

            rng = np.random.default_rng(0)
            count = TIMED_UPDATES * 128
            features = rng.standard_normal((count, feature_width)).astype(np.float32)
            self.head_update_seconds[key] = self._per_call_and_update(fit, features, rng.integers(0, classes, count), HEAD_EXTRA_EPOCHS)
        return self.head_update_seconds[key]

    def _per_call_and_update(self, fit, inputs: np.ndarray, targets: np.ndarray, extra_epochs: int) -> tuple[float, float]:
        """A fit of one epoch and one of 1 + `extra_epochs` on the same data: the difference is the update, the rest the call.

        Both fits evaluate the same split, so its per-batch evaluation calls stay in the call's share; the extra
        epochs run inside graph loops (one call each), so the difference is many updates and little else.
        """
        began = time.perf_counter()
        level = tf.get_logger().level
        tf.get_logger().setLevel("ERROR")  # every fit traces its epoch function anew, as in a measurement: expected here
        few = TIMED_UPDATES // 8
        try:
            fit(inputs[: few * 128], targets[: few * 128], 1)  # the first call of a process pays one-off set-up
            short = _fastest_seconds(lambda: fit(inputs, targets, 1), 1, warm=0)
            long = _fastest_seconds(lambda: fit(inputs, targets, 1 + extra_epochs), 1, warm=0)
        finally:
            tf.get_logger().setLevel(level)
        per_update = max(long - short, 0.0) / (extra_epochs * TIMED_UPDATES)
        self.seconds_spent += time.perf_counter() - began
        return max(short - TIMED_UPDATES * per_update, 0.0), per_update


def _random_dataset(channels: int, classes: int, batch_size: int):
    """Random images of the calibrated shape: one full and one half batch per epoch (the last batch of an epoch is
    smaller in most runs, and each batch size is traced once), and a test split of one batch."""
    rng = np.random.default_rng(0)
    train, test = batch_size + max(batch_size // 2, 1), batch_size
    return Dataset(
        name="mnist",
        source="embedded",
        x_train=rng.standard_normal((train, IMAGE_SIDE, IMAGE_SIDE, channels)).astype(np.float32),
        y_train=np.arange(train) % classes,
        x_test=rng.standard_normal((test, IMAGE_SIDE, IMAGE_SIDE, channels)).astype(np.float32),
        y_test=np.arange(test) % classes,
        num_classes=classes,
        fingerprint="random",
    )


def _build_network(model: ModelConfig, channels: int, classes: int):
    return build_model(model, (IMAGE_SIDE, IMAGE_SIDE, channels), classes)


def _fastest_seconds(function, repeats: int, warm: int = 2) -> float:
    """The fastest of `repeats` timed calls: other jobs on a shared CPU only ever add time."""
    for _ in range(warm):  # tracing, caches
        function()
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - began)
    return float(min(seconds))


# --- estimate -----------------------------------------------------------------------------------


@dataclass
class FigureCost:
    """One figure's share of the work (runs and cells no earlier figure made) and its estimated seconds."""

    name: str
    runs: int = 0
    iterations: int = 0
    cells: int = 0
    training_seconds: float = 0.0
    measurement_seconds: float = 0.0
    driver_seconds: float = 0.0
    """Work on the driver outside the run store: drawing the figure, and the module's own `driver_seconds`."""
    drawing_only: bool = False
    """The module trains nothing of the store and has no `driver_seconds`: its driver work is priced as drawing only."""

    @property
    def seconds(self) -> float:
        return self.training_seconds + self.measurement_seconds + self.driver_seconds


@dataclass
class _Charged:
    runs: set = field(default_factory=set)
    cells: set = field(default_factory=set)


def estimate(modules: dict, options: Options, calibration: Calibration | None = None) -> list[FigureCost]:
    """Per figure (in the given order), the runs, iterations, cells and estimated seconds it adds."""
    calibration = calibration or Calibration()
    charged = _Charged()
    costs = []
    for name, module in modules.items():
        cost = FigureCost(name)
        if name == "early_phase":
            _charge_early_phase(cost, module, options, calibration, charged)
        elif hasattr(module, "work"):
            for item in module.work(options):
                _charge_work(cost, item, options, calibration, charged)
        driver = getattr(module, "driver_seconds", None)
        cost.driver_seconds += calibration.figure() + (driver(options, calibration) if driver else 0.0)
        cost.drawing_only = driver is None and not hasattr(module, "work") and name != "early_phase"
        costs.append(cost)
    return costs


def _charge_run(
    cost: FigureCost, config: RunConfig, options: Options, calibration: Calibration, charged: _Charged, setup_extra: float = 0.0
) -> None:
    """Charge a run not charged yet: its steps, its snapshots' inference passes and writes, its set-up (plus `setup_extra`)."""
    if config.hash() in charged.runs:
        return
    charged.runs.add(config.hash())
    train, test = split_sizes(config.data, options)
    plan = make_plan(config, train)
    iterations = plan.last_iteration - config.lineage.rewind_step
    key = calibration.network(config.model, config.data, config.training.batch_size)
    snapshots = [step for step in plan.snapshot_steps if step >= config.lineage.rewind_step]
    per_run, per_snapshot = calibration.run_setup(key)
    images = train + test + (train if config.data.label_noise else 0)  # label noise: one more pass for the flipped labels' accuracy
    cost.runs += 1
    cost.iterations += iterations
    cost.training_seconds += iterations * calibration.step_seconds[key] + per_run + setup_extra
    cost.training_seconds += len(snapshots) * (images * calibration.inference_seconds_per_image[key] + per_snapshot)


def _charge_work(cost: FigureCost, item: Work, options: Options, calibration: Calibration, charged: _Charged) -> None:
    config = item.planned.config
    _charge_run(cost, config, options, calibration, charged)
    train, test = split_sizes(config.data, options)
    snapshots = make_plan(config, train).snapshot_steps
    for measure in item.measures:
        limited = steps_of_run(measure, snapshots)
        if limited is None:
            continue
        for step in limited.steps or snapshots:
            for mode in measure.bn_stats:
                for layer in measure.layers:
                    _charge_cells(cost, config, measure, step, mode, layer, (train, test), calibration, charged)


def _instruments(measure: MeasureConfig, data: DataConfig) -> list[str]:
    instruments = list(measure.decoders)
    if measure.probe:
        instruments.append("probe")
    tasks = TRANSFER_TASKS.get(data.name, 1) if measure.transfer is None else len(measure.transfer)
    instruments += [f"transfer{index}" for index in range(tasks)]
    if "mutual_information" in measure.metrics:
        instruments.append("mutual_information")
    return instruments


def _charge_cells(
    cost: FigureCost,
    config: RunConfig,
    measure: MeasureConfig,
    step: int,
    mode: str,
    layer: str,
    sizes: tuple[int, int],
    calibration: Calibration,
    charged: _Charged,
) -> None:
    protocol = dataclasses.replace(measure, layers=(), bn_stats=(), decoders=(), steps=(), probe=False, transfer=(), metrics=())
    todo = []
    for instrument in _instruments(measure, config.data):
        cell = (config.hash(), step, mode, layer, instrument, protocol)
        if cell not in charged.cells:
            charged.cells.add(cell)
            todo.append(instrument)
    if not todo:
        return
    key = calibration.network(config.model, config.data, config.training.batch_size)
    train = min(sizes[0], measure.train_size or sizes[0])
    test = min(sizes[1], measure.test_size or sizes[1])
    per_image = calibration.inference_seconds_per_image[key]
    seconds = (train + test) * per_image * (2 if mode == "recalibrated" else 1)  # one extraction per (step, mode, layer) group
    width = calibration.feature_width(key, layer)
    pixels = IMAGE_SIDE * IMAGE_SIDE * CHANNELS[config.data.name]
    for instrument in todo:
        seconds += _instrument_seconds(instrument, measure, width, pixels, (train, test), CLASSES[config.data.name], calibration)
        if instrument.startswith("transfer"):
            seconds += (train + test) * per_image  # the target dataset's features
    cost.cells += len(todo)
    cost.measurement_seconds += seconds


def _instrument_seconds(
    instrument: str, measure: MeasureConfig, width: int, pixels: int, sizes: tuple[int, int], classes: int, calibration: Calibration
) -> float:
    train, test = sizes
    if instrument in ("linear_ridge", "linear_exact"):
        return calibration.closed_form_decoder(instrument, width, pixels, train, test)
    if instrument in ("linear", "cladec"):
        settings = decoder_settings(measure)
        updates = settings.epochs_for(train) * settings.steps_per_epoch(train)
        factor = 1.0 if instrument == "linear" else 60.0  # cladec: its transposed convolutions (benchmarks.measure)
        per_call, per_update = calibration.decoder_update(width, pixels // IMAGE_SIDE**2)
        return per_call + factor * updates * per_update
    if instrument == "mutual_information":
        samples = min(measure.mi_samples, test)
        return 3 * 3.0 * samples * samples * width / 1e9  # three estimators, n^2 d distance terms at ~1 GFLOP/s in NumPy
    settings = probe_settings(measure)
    updates = settings.epochs_for(train) * math.ceil(train / settings.batch_size)
    per_call, per_update = calibration.head_update(width, classes if instrument == "probe" else 3)
    return per_call + updates * per_update


def _charge_early_phase(cost: FigureCost, module, options: Options, calibration: Calibration, charged: _Charged) -> None:
    planned, _ = module.experiment(options)
    train, _ = split_sizes(planned.base.data, options)
    last = make_plan(planned.base, train).last_iteration
    key = calibration.network(planned.base.model, planned.base.data, planned.base.training.batch_size)
    rewind, per_level = calibration.lineage(key)
    for _, seeded, _ in module.seeded_experiments(planned, last, options.profile):
        entries = experiment_runs(seeded, last)
        depth = {entry.config.hash(): _mask_depth(entry.config, {e.config.hash(): e.config for e in entries}) for entry in entries}
        for entry in entries:
            lineage = entry.config.lineage
            extra = (rewind if lineage.rewind_run else 0.0) + per_level * depth[entry.config.hash()]
            _charge_run(cost, entry.config, options, calibration, charged, extra)
        # the figure's statistics of each seed's dense run, one per snapshot
        cost.driver_seconds += len(seeded.base.schedule.steps) * calibration.statistics_per_snapshot(key)


def _mask_depth(config: RunConfig, configs: dict[str, RunConfig]) -> int:
    """Runs in the mask chain of `config` (0: dense): each is built and its final weights loaded for the mask, twice."""
    depth, mask_run = 0, config.lineage.mask_run
    while mask_run:
        depth += 1
        mask_run = configs[mask_run].lineage.mask_run if mask_run in configs else ""
    return depth


# --- tables -------------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:,.0f}"


def estimate_table(costs: Iterable[FigureCost], measured: dict[str, float] | None = None, calibration: Calibration | None = None) -> str:
    """Markdown table: per figure runs, iterations, cells, estimated seconds (and measured, when given), and the total."""
    costs = list(costs)
    measured = measured or {}
    header = "| figure | runs | iterations | cells | est. training s | est. measurement s | est. driver s | est. total s |"
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|"
    if measured:
        header += " measured s | measured / est. |"
        rule += "---:|---:|"
    lines = [header, rule]
    for cost in costs:
        line = (
            f"| {cost.name} | {cost.runs} | {cost.iterations:,} | {cost.cells:,} | {cost.training_seconds:,.0f} | "
            f"{cost.measurement_seconds:,.0f} | {_seconds(cost.driver_seconds)} | {cost.seconds:,.0f} |"
        )
        if measured:
            seconds = measured.get(cost.name)
            ratio = f"{seconds / cost.seconds:.2f}" if seconds is not None and cost.seconds > 0 else "-"
            line += f" {_seconds(seconds)} | {ratio} |"
        lines.append(line)
    total = sum(cost.seconds for cost in costs)
    line = (
        f"| total | {sum(c.runs for c in costs)} | {sum(c.iterations for c in costs):,} | {sum(c.cells for c in costs):,} | "
        f"{sum(c.training_seconds for c in costs):,.0f} | {sum(c.measurement_seconds for c in costs):,.0f} | "
        f"{sum(c.driver_seconds for c in costs):,.0f} | {total:,.0f} ({total / 60:.1f} min) |"
    )
    if measured:
        spent = sum(measured.values())
        line += f" {spent:,.0f} ({spent / 60:.1f} min) | {spent / total:.2f} |" if total else f" {spent:,.0f} | - |"
    lines.append(line)
    unknown = [cost.name for cost in costs if cost.drawing_only]
    notes = []
    if unknown:
        notes.append(f"driver work priced as drawing the figure only (no `driver_seconds`): {', '.join(unknown)}")
    if calibration is not None:
        notes.append(calibration.describe())
    return "\n".join(lines + ([""] + notes if notes else []))


def measured_table(measured: dict[str, float]) -> str:
    """Markdown table of the measured seconds per figure and their total (no estimate)."""
    total = sum(measured.values())
    rows = [f"| {name} | {seconds:,.0f} |" for name, seconds in measured.items()]
    return "\n".join(["| figure | measured s |", "|---|---:|", *rows, f"| total | {total:,.0f} ({total / 60:.1f} min) |"])


__all__ = ["Calibration", "FigureCost", "estimate", "estimate_table", "measured_table", "split_sizes"]
