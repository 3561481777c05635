"""kphases.measure and kphases.plot_phases on runs of a user's own model, and examples/own_model.py."""

import importlib.util
import sys
from pathlib import Path

import keras
import matplotlib
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import kphases
from kphases.config import DataConfig, ModelConfig, RunConfig, TrainingConfig
from kphases.measurement import MEASUREMENT_COLUMNS, read_measurements
from kphases.store import Run, StoreError
from kphases.training import train

REPOSITORY = Path(__file__).resolve().parents[1]
LAYERS = ["trunk", "scaled", "flat", "embedding", "scores"]
FAST = {"decoders": ("linear_exact",), "probe_epochs": 2}


@keras.saving.register_keras_serializable(package="kphases_tests")
class Scale(keras.layers.Layer):
    """A registered custom layer: measurement rebuilds it from model.json without this module's help."""

    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, inputs):
        return self.factor * inputs

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def images(count, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    x = rng.normal(size=(count, 8, 8, 1)).astype(np.float32) + labels[:, None, None, None]  # learnable
    return x, labels


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """A Functional model with custom layer names, fitted for 24 updates with the snapshot callback."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="trunk")(inputs)
    x = Scale(0.5, name="scaled")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(8, activation="relu", name="embedding")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="scores")(x), name="mine")
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    train_data, test_data = images(120, 0), images(60, 1)
    run_dir = tmp_path_factory.mktemp("user") / "run"
    model.fit(
        *train_data,
        batch_size=40,
        epochs=8,
        verbose=0,
        callbacks=[kphases.SnapshotCallback(run_dir, train_data=train_data, test_data=test_data)],
    )
    return run_dir, train_data, test_data


def test_measure_a_user_model_at_its_own_layer_names(user_run):
    run_dir, (x, y), (x_test, y_test) = user_run
    batches = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(16)  # test split as tf.data batches
    messages = []
    frame = kphases.measure(
        run_dir, layers=["embedding"], train_data=(x, y), test_data=batches, progress=False, log=messages.append, data_name="blobs", **FAST
    )
    assert tuple(frame.columns) == MEASUREMENT_COLUMNS
    assert sorted(frame["step"].unique()) == [0, 2, 4, 8, 16] == Run.open(run_dir).snapshot_steps()
    assert set(frame["layer"]) == {"embedding"} and set(frame["instrument"]) == {"linear_exact", "probe"}
    assert set(frame["bn_stats"]) == {"stored"}  # no BatchNorm in the model: inference mode by default
    assert frame["data"].str.contains("blobs/arrays\\+tf.data train=120 test=60").all()
    rec = frame[(frame["metric"] == "reconstruction_mse") & (frame["split"] == "test")]
    assert len(rec) == 5 and (rec["value"] > 0).all() and (rec["value"] < 2).all()
    probe = frame[frame["metric"] == "probe_accuracy"]
    assert ((probe["value"] >= 0) & (probe["value"] <= 1)).all()
    assert "rec[embedding,linear_exact,stored]" in messages[-1] and "classifier_test_acc" in messages[-1]
    stored = read_measurements(Run.open(run_dir))
    assert len(stored) == len(frame) and (run_dir / "measurements.csv").is_file()

    # Measuring again reuses every cell; another of the model's layers (the registered custom layer) adds its rows.
    again = kphases.measure(
        run_dir, layers="embedding", train_data=(x, y), test_data=batches, progress=False, log=messages.append, data_name="blobs", **FAST
    )
    assert "already measured" in messages[-1] and len(again) == len(frame)
    more = kphases.measure(
        run_dir,
        layers=["scaled"],
        train_data=(x, y),
        test_data=(x_test, y_test),
        progress=False,
        log=lambda text: None,
        decoders=["linear_exact"],
        probe=False,
        steps=[0, 16],
    )
    assert set(more[more["layer"] == "scaled"]["step"]) == {0, 16}


def test_bad_measurement_requests_are_errors_naming_the_valid_values(user_run, tmp_path):
    run_dir, train_data, test_data = user_run
    quiet = {"progress": False, "log": lambda text: None}
    with pytest.raises(
        ValueError,
        match=r"unknown layer\(s\) \['penultimate'\] for model 'mine' .*valid layers: "
        + str(LAYERS).replace("[", r"\[").replace("]", r"\]"),
    ):
        kphases.measure(run_dir, layers=["penultimate"], train_data=train_data, test_data=test_data, **quiet)
    with pytest.raises(ValueError, match=r"name the layer\(s\) to measure"):
        kphases.measure(run_dir, train_data=train_data, test_data=test_data, **quiet)
    with pytest.raises(ValueError, match="stores no data: pass test_data"):
        kphases.measure(run_dir, layers=["embedding"], train_data=train_data, **quiet)
    with pytest.raises(ValueError, match="infinite tf.data dataset"):
        kphases.measure(
            run_dir, layers=["embedding"], train_data=train_data, test_data=tf.data.Dataset.from_tensor_slices(test_data).repeat(), **quiet
        )
    with pytest.raises(ValueError, match=r"train_data: x has shape \(120, 64\); the model takes \(n, 8, 8, 1\)"):
        kphases.measure(
            run_dir, layers=["embedding"], train_data=(train_data[0].reshape(120, -1), train_data[1]), test_data=test_data, **quiet
        )
    with pytest.raises(ValueError, match="integer class labels"):
        kphases.measure(run_dir, layers=["embedding"], train_data=(train_data[0], train_data[1] + 0.5), test_data=test_data, **quiet)
    with pytest.raises(TypeError, match=r"unknown measurement setting\(s\) \['decoder'\]; valid settings: .*'decoders'"):
        kphases.measure(run_dir, layers=["embedding"], train_data=train_data, test_data=test_data, decoder="linear", **quiet)
    with pytest.raises(ValueError, match="dataset_switch needs a kphases dataset"):
        kphases.measure(run_dir, layers=["embedding"], train_data=train_data, test_data=test_data, transfer=["dataset_switch"], **quiet)
    with pytest.raises(ValueError, match=r"unknown decoder\(s\) \['pca'\]"):
        kphases.measure(run_dir, layers=["embedding"], train_data=train_data, test_data=test_data, decoders="pca", **quiet)
    # An ordinary run is measured on its own dataset; the low-level measure cannot guess a user run's data.
    ordinary = Run.create(tmp_path / "runs", RunConfig())
    with pytest.raises(ValueError, match="trained by `kphases train` on mnist/embedded and is measured on that dataset"):
        kphases.measure(ordinary.directory, train_data=train_data, test_data=test_data, **quiet)
    from kphases.measurement import measure as measure_run

    with pytest.raises(ValueError, match=r"recorded by kphases.SnapshotCallback .* stores no data"):
        measure_run(run_dir, progress=False)
    # Without its registration a custom layer cannot be rebuilt: the error says what to do.
    registered = keras.saving.get_custom_objects().pop("kphases_tests>Scale")
    try:
        with pytest.raises(StoreError, match=r"(?s)Could not locate class 'Scale'.*register_keras_serializable.*custom_objects"):
            kphases.measure(run_dir, layers=["embedding"], train_data=train_data, test_data=test_data, **quiet)
        frame = kphases.measure(
            run_dir,
            layers=["embedding"],
            train_data=train_data,
            test_data=test_data,
            custom_objects={"kphases_tests>Scale": Scale},
            steps=[0],
            **FAST,
            **quiet,
        )
        assert len(frame)
    finally:
        keras.saving.get_custom_objects()["kphases_tests>Scale"] = registered


def test_plot_phases_draws_the_standard_figure(user_run, tmp_path):
    run_dir, train_data, test_data = user_run
    frame = kphases.measure(
        run_dir, layers=["embedding"], train_data=train_data, test_data=test_data, progress=False, log=lambda text: None, **FAST
    )
    figure = kphases.plot_phases(run_dir, path=tmp_path / "phases.png")
    assert isinstance(figure, matplotlib.figure.Figure) and (tmp_path / "phases.png").stat().st_size > 10_000
    axis = figure.axes[0]
    assert axis.get_xscale() == "log" and [tick.get_text() for tick in axis.get_xticklabels()] == ["0", "2", "4", "8", "16"]
    assert axis.get_title().startswith("embedding: ")
    labels = {handle.get_label() for handle in figure.legends[0].legend_handles}
    assert {"classifier test acc", "classifier train acc", "linear probe test acc", "phase: constant"} <= labels
    assert "decoder linear_exact, BatchNorm stored" in figure._suptitle.get_text()
    # From measurement rows alone (no classifier metrics), and several layers as panels.
    both = kphases.plot_phases(read_measurements(Run.open(run_dir)), layers=["embedding", "scaled"])
    assert [ax.get_title().split(":")[0] for ax in both.axes if ax.get_title()] == ["embedding", "scaled"]
    with pytest.raises(ValueError, match=r"layer\(s\) \['trunk'\] have no linear_exact/stored reconstruction rows; measured layers:"):
        kphases.plot_phases(frame, layers=["trunk"])
    with pytest.raises(ValueError, match="no reconstruction_mse rows"):
        kphases.plot_phases(pd.DataFrame(columns=list(MEASUREMENT_COLUMNS)))
    matplotlib.pyplot.close("all")


def test_an_ordinary_run_through_the_same_api(tmp_path):
    config = RunConfig(
        data=DataConfig(name="digits", source="embedded", train_size=200, test_size=60),
        model=ModelConfig(architecture="vgg8", width=0.125),
        training=TrainingConfig(duration="4it", batch_size=32, learning_rate=0.05),
    )
    run = train(config, runs_dir=tmp_path, progress=False)
    frame = kphases.measure(run.directory, transfer=(), progress=False, log=lambda text: None, **FAST)
    assert set(frame["layer"]) == {"penultimate"} and set(frame["bn_stats"]) == {"batch"}
    assert sorted(frame["step"].unique()) == [0, 2, 4]
    assert kphases.plot_phases(run).axes[0].get_title().startswith("penultimate: ")
    matplotlib.pyplot.close("all")


def test_kphases_measure_is_the_api_function_even_after_the_measurement_module_is_imported():
    import kphases.measurement

    assert kphases.measure.__module__ == "kphases.api" and kphases.measure.__name__ == "measure"
    assert kphases.measurement.measure.__module__ == "kphases.measurement"
    assert kphases.SnapshotCallback.__module__ == "kphases.callback" and kphases.plot_phases.__module__ == "kphases.api"


def test_example_runs_end_to_end_at_its_small_size(tmp_path):
    spec = importlib.util.spec_from_file_location("own_model_example", REPOSITORY / "examples" / "own_model.py")
    example = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, example)
    spec.loader.exec_module(example)
    figure_path = example.main([str(tmp_path / "out"), "--small"])
    assert figure_path == tmp_path / "out" / "own_model_phases.png" and figure_path.stat().st_size > 10_000
    run = Run.open(tmp_path / "out" / "run")
    assert run.snapshot_steps() == [0, 2, 4, 8, 16, 32] and run.complete
    frame = read_measurements(run)
    assert set(frame["layer"]) == set(example.LAYERS) and sorted(frame["step"].unique()) == [0, 2, 4, 8, 16, 32]
    matplotlib.pyplot.close("all")
