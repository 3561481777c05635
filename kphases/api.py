"""The bring-your-own-model API: measure a run and draw its phases in two calls.

    kphases.measure(run_dir, layers=["embedding"], train_data=(x, y), test_data=(x_test, y_test))
    figure = kphases.plot_phases(run_dir)

`measure` measures a run recorded by `kphases.SnapshotCallback` (a user's model and data) or an
ordinary `kphases train` run with everything `kphases.measurement.measure` has (every decoder, the
linear probe, transfer heads; `MeasureConfig` fields as keyword arguments); rows land in the run's
`measurements.csv` like every run's. `plot_phases` draws the standard phases figure
(`reproduce/phases.py`): reconstruction loss and accuracy against iteration on a log2 axis, the
phases the suite's verdict (`kphases.phases.phase_verdict`, from the run's per-image errors) is
confident of shaded.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from kphases.callback import DEFAULT_MAX_SAMPLES, as_arrays, is_model_run, layer_names, load_run_model
from kphases.config import MeasureConfig
from kphases.data import Dataset, fingerprint
from kphases.features import batchnorm_layers
from kphases.measurement import measure as measure_run
from kphases.measurement import read_measurements
from kphases.phases import PhaseVerdict, VerdictSettings
from kphases.plotting import STYLE, grid, log_step_axis, phase_legend_handles, plt, shade_verdict, step_position
from kphases.store import Run
from kphases.verdict_tables import curves, reconstruction_verdict

DECODER_PREFERENCE = ("linear_exact", "linear", "cladec")
BN_STATS_PREFERENCE = ("batch", "stored", "recalibrated")
_STOCHASTIC_LAYER_WORDS = ("Dropout", "Noise")


def measure(
    run_dir: str | os.PathLike | Run,
    layers: Sequence[str] | str | None = None,
    train_data=None,
    test_data=None,
    *,
    config: MeasureConfig | None = None,
    runs_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    custom_objects: dict | None = None,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    data_name: str = "user",
    progress: bool = True,
    log=print,
    **fields,
) -> pd.DataFrame:
    """Measure every snapshot of a run; return all of its measurement rows (also in `<run>/measurements.csv`).

    Args:
        run_dir: the run directory (or a `kphases.store.Run`, or a run hash under `runs_dir`).
        layers: layer names to measure at. A `SnapshotCallback` run: names of the user's model
            (required; an unknown name is an error listing the valid ones). A `kphases train` run:
            probe points, default ["penultimate"].
        train_data, test_data: for a `SnapshotCallback` run (required there): (x, y) numpy arrays
            or a finite tf.data dataset of (x, y) batches (or single examples), x the model's image
            input (n, H, W, C), y class labels (integers, (n, 1) or one-hot). Read into memory, at
            most `max_samples` examples each. A `kphases train` run is measured on its own
            dataset (from its config): leave them out.
        config: a MeasureConfig to start from (default: MeasureConfig(), the authors' protocol).
        custom_objects: custom layer classes of the user's model that are not registered with Keras.
        data_name: the name the data is recorded under in the rows' `data` column.
        **fields: MeasureConfig fields, e.g. decoders=("linear_exact",), probe_epochs=5,
            bn_stats=("stored",), steps=(0, 8, 64), train_size=2000. For a user's model without
            BatchNormalization the default bn_stats is ("stored",) (inference mode); with
            BatchNorm it is the authors' ("batch",).
    """
    run = run_dir if isinstance(run_dir, Run) else Run.open(run_dir, runs_dir)
    if isinstance(layers, str):
        layers = [layers]
    if not is_model_run(run):
        if train_data is not None or test_data is not None:
            raise ValueError(
                f"run {run.directory} was trained by `kphases train` on {run.config.data.name}/{run.config.data.source} "
                "and is measured on that dataset (loaded from its config); leave out train_data and test_data"
            )
        settings = measure_config(config, layers, fields)
        return measure_run(run, settings, data_dir=data_dir, progress=progress, log=log)

    model = load_run_model(run, custom_objects)
    valid = layer_names(model)
    layers = layers or (list(config.layers) if config is not None else None)
    if not layers:
        raise ValueError(f"name the layer(s) to measure, layers=[...]; model {model.name!r} of run {run.name} has layers {valid}")
    bad = [layer for layer in layers if layer not in valid]
    if bad:
        raise ValueError(f"unknown layer(s) {bad} for model {model.name!r} of run {run.name}; valid layers: {valid}")
    if train_data is None or test_data is None:
        missing = [name for name, data in (("train_data", train_data), ("test_data", test_data)) if data is None]
        raise ValueError(
            f"run {run.directory} was recorded by kphases.SnapshotCallback and stores no data: pass {' and '.join(missing)} "
            "as (x, y) arrays or a tf.data dataset of (x, y) batches"
        )
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        shapes = [tuple(tensor.shape) for tensor in model.inputs]
        raise ValueError(
            f"kphases measures how well a layer's output reconstructs the input image: it needs a model with one image "
            f"input (batch, H, W, C); model {model.name!r} takes {shapes}"
        )
    if "bn_stats" not in fields and config is None:
        fields["bn_stats"] = ("batch",) if _has_batchnorm(model) else ("stored",)
    settings = measure_config(config, layers, fields)
    if "dataset_switch" in (settings.transfer or ()) or settings.switch_dataset:
        raise ValueError(
            "transfer task dataset_switch needs a kphases dataset to switch to; a SnapshotCallback run is measured on "
            "your data only: use transfer=('color_dominance',) (RGB images), transfer=() or leave transfer out"
        )
    if "batch" in settings.bn_stats:
        stochastic = [layer.name for layer in model.layers if any(word in type(layer).__name__ for word in _STOCHASTIC_LAYER_WORDS)]
        if stochastic:
            warnings.warn(
                f"bn_stats='batch' extracts features in training mode, which also applies {stochastic}; "
                "bn_stats=('stored',) measures the network in inference mode",
                stacklevel=2,
            )
    dataset = user_dataset(model, train_data, test_data, data_name, max_samples)
    return measure_run(run, settings, dataset=dataset, progress=progress, log=log, custom_objects=custom_objects)


def measure_config(base: MeasureConfig | None, layers: Sequence[str] | None, fields: dict) -> MeasureConfig:
    """`base` (default MeasureConfig()) with `layers` and the keyword fields; an unknown field is an error listing the valid ones."""
    names = {field.name for field in dataclasses.fields(MeasureConfig)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise TypeError(f"unknown measurement setting(s) {unknown}; valid settings: {sorted(names - {'layers'})}")
    values = {}
    for name, value in fields.items():
        default = getattr(MeasureConfig(), name)
        if isinstance(value, str) and (isinstance(default, tuple) or name == "transfer"):
            value = (value,)
        elif isinstance(value, (list, tuple, np.ndarray)):
            value = tuple(value.tolist() if isinstance(value, np.ndarray) else value)
        values[name] = value
    if layers:
        values["layers"] = tuple(layers)
    return dataclasses.replace(base or MeasureConfig(), **values)


def user_dataset(model, train_data, test_data, name: str = "user", max_samples: int = DEFAULT_MAX_SAMPLES) -> Dataset:
    """The kphases Dataset of a user's (x, y) arrays or tf.data datasets, checked against the model's input."""
    input_shape = tuple(model.inputs[0].shape[1:])
    x_train, y_train, train_source = as_arrays(train_data, "train_data", input_shape, max_samples)
    x_test, y_test, test_source = as_arrays(test_data, "test_data", input_shape, max_samples)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    output = model.outputs[0].shape
    if len(output) == 2 and output[-1] is not None and output[-1] > num_classes:
        num_classes = int(output[-1])  # a class missing from the data still has its output unit
    if num_classes < 2:
        raise ValueError(f"the labels hold a single class ({num_classes - 1}); the linear probe needs at least two")
    source = train_source if train_source == test_source else f"{train_source}+{test_source}"
    return Dataset(
        name=name,
        source=source,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        fingerprint=fingerprint(x_train, y_train, x_test, y_test),
    )


def _has_batchnorm(model) -> bool:
    return bool(batchnorm_layers(model))


# --- the figure -----------------------------------------------------------------------------------


def _in_style(function):
    """Draw inside the suite's matplotlib style without changing the user's global settings or backend."""

    @functools.wraps(function)
    def styled(*args, **kwargs):
        with plt.rc_context(STYLE):
            return function(*args, **kwargs)

    return styled


@_in_style
def plot_phases(
    frame_or_run,
    *,
    layers: Sequence[str] | str | None = None,
    instrument: str | None = None,
    bn_stats: str | None = None,
    split: str = "test",
    classifier: pd.DataFrame | None = None,
    runs_dir: str | os.PathLike | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
    settings: VerdictSettings | None = None,
):
    """The standard phases figure of one run; returns the matplotlib Figure (saved to `path` if given).

    One panel per layer: the reconstruction loss (`split` per-element MSE of decoder `instrument`,
    features in BatchNorm mode `bn_stats`) on the left axis, the classifier's test and train
    accuracy (the run's metrics.csv) and the linear probe's test accuracy on the right axis,
    against iteration on a log2 axis; the phases the verdict is confident of (constant, decrease,
    increase; `kphases.phases.phase_verdict` on the run's per-image errors: one seed, test-image noise
    only) are shaded, with the verdict's intervals under the panel. A curve needs at least 3 snapshots
    with per-image errors; rows alone (a DataFrame) carry none, so they are drawn without a verdict.

    Args:
        frame_or_run: a run directory, run hash or `Run` (its measurements.csv and metrics.csv),
            or a DataFrame of measurement rows such as `kphases.measure` returns.
        layers: which measured layers (default: all measured with the chosen decoder).
        instrument, bn_stats: default the first measured of linear_exact, linear, cladec and of
            batch, stored, recalibrated.
        classifier: metrics rows (step, split, metric, value) when `frame_or_run` is a DataFrame.
        settings: the verdict's `kphases.phases.VerdictSettings` (default: the suite's).
    """
    frame, metrics, name = _plot_inputs(frame_or_run, classifier, runs_dir)
    run = None if isinstance(frame_or_run, pd.DataFrame) else _open_run(frame_or_run, runs_dir)
    reconstruction = frame[(frame["metric"] == "reconstruction_mse") & (frame["split"] == split)] if len(frame) else frame
    if not len(reconstruction):
        raise ValueError(
            f"no reconstruction_mse rows of split {split!r} to plot for {name or 'the given rows'}; measure first (kphases.measure)"
        )
    instrument = instrument or _preferred(reconstruction["instrument"], DECODER_PREFERENCE)
    bn_stats = bn_stats or _preferred(reconstruction["bn_stats"], BN_STATS_PREFERENCE)
    series_by_key = curves(frame, "reconstruction_mse", split)
    measured = [layer for (layer, kind, mode) in series_by_key if kind == instrument and mode == bn_stats]
    if not measured:
        present = sorted({(kind, mode) for (_, kind, mode) in series_by_key})
        raise ValueError(
            f"no reconstruction rows for decoder {instrument!r} with bn_stats {bn_stats!r}; measured (decoder, bn_stats): {present}"
        )
    layers = [layers] if isinstance(layers, str) else list(layers or measured)
    bad = [layer for layer in layers if layer not in measured]
    if bad:
        raise ValueError(f"layer(s) {bad} have no {instrument}/{bn_stats} reconstruction rows; measured layers: {measured}")

    probes = curves(frame, "probe_accuracy", "test")
    figure, axes = grid(len(layers), columns=min(2, len(layers)), width=6.0, height=4.0)
    handles: dict[str, object] = {}
    for axis, layer in zip(axes, layers):
        series = series_by_key[(layer, instrument, bn_stats)]
        phases = None if run is None else reconstruction_verdict(run, frame, layer, instrument, bn_stats, settings)
        if phases is not None:
            shade_verdict(axis, series.index, phases)
        (line,) = axis.plot(
            step_position(series.index), series.values, "o-", color="black", ms=3, label=f"reconstruction ({split} MSE, {instrument})"
        )
        handles.setdefault(line.get_label(), line)
        axis.set_ylabel("reconstruction loss (per-element MSE)")
        accuracy_axis = axis.twinx()
        accuracy = []
        if metrics is not None and len(metrics):
            for metric_split, style in (("test", "C0-"), ("train", "C0--")):
                picked = metrics[(metrics["metric"] == "classifier_accuracy") & (metrics["split"] == metric_split)]
                accuracy.append(
                    (
                        picked.drop_duplicates("step", keep="last").set_index("step")["value"].sort_index(),
                        style,
                        f"classifier {metric_split} acc",
                    )
                )
        if (layer, "probe", bn_stats) in probes:
            accuracy.append((probes[(layer, "probe", bn_stats)], "C2-", "linear probe test acc"))
        for values, style, label in accuracy:
            values = values[values.index.isin(series.index)]
            if len(values):
                (line,) = accuracy_axis.plot(step_position(values.index), values.values, style, lw=1, label=label)
                handles.setdefault(label, line)
        accuracy_axis.set_ylim(0, 1.02)
        accuracy_axis.set_ylabel("accuracy")
        log_step_axis(axis, series.index)
        axis.set_title(f"{layer}: {_panel_verdict(phases, series, run)}")
    legend = list(handles.values()) + phase_legend_handles()
    figure.legend(legend, [handle.get_label() for handle in legend], loc="lower center", ncol=3, bbox_to_anchor=(0.5, -0.02))
    figure.suptitle(title or f"Reconstruction loss phases{f' of run {name}' if name else ''}\n(decoder {instrument}, BatchNorm {bn_stats})")
    figure.tight_layout(rect=(0, 0.1 if len(layers) <= 2 else 0.06, 1, 1))
    if path is not None:
        figure.savefig(path, dpi=150, bbox_inches="tight")
    return figure


def _panel_verdict(phases: PhaseVerdict | None, series: pd.Series, run: Run | None) -> str:
    if phases is not None:
        return phases.in_words
    if len(series) < 3:
        return "under 3 snapshots: no phases"
    return "no verdict: rows only (pass the run for its per-image errors)" if run is None else "no verdict: no per-image errors"


def _open_run(run_or_path, runs_dir) -> Run:
    return run_or_path if isinstance(run_or_path, Run) else Run.open(run_or_path, runs_dir)


def _plot_inputs(frame_or_run, classifier, runs_dir):
    if isinstance(frame_or_run, pd.DataFrame):
        frame = frame_or_run
        name = str(frame["run"].iloc[0]) if "run" in frame and len(frame) and frame["run"].nunique() == 1 else ""
        return frame, classifier, name
    run = _open_run(frame_or_run, runs_dir)
    return read_measurements(run), (classifier if classifier is not None else run.metrics()), run.name


def _preferred(values: pd.Series, preference: Sequence[str]) -> str:
    present = list(dict.fromkeys(values))
    for choice in preference:
        if choice in present:
            return choice
    return present[0]
