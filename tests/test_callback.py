"""kphases.SnapshotCallback: the run store of a user's own `model.fit` (issue "Bring your own model")."""

import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from kphases.callback import SnapshotCallback, load_run_model
from kphases.config import RunConfig
from kphases.store import Run, StoreError, jsonable, sha256_file

SAMPLES, BATCH = 100, 32  # 4 batches per epoch, the last of 4 examples: the batch size does not divide the data


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(SAMPLES, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, SAMPLES)


def make_model(seed=0, names=("trunk", "flat", "embedding", "scores"), width=8, **compile_args) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name=names[0])(inputs)
    x = keras.layers.Flatten(name=names[1])(x)
    x = keras.layers.Dense(width, activation="relu", name=names[2])(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name=names[3])(x), name="mine")
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9, **compile_args.pop("optimizer_args", {}))
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), **compile_args)
    return model


class Recorder(keras.callbacks.Callback):
    """Counts updates itself (batches, or batches / accumulation) and keeps the weights after each count."""

    def __init__(self, per_update=1):
        super().__init__()
        self.per_update, self.batches, self.weights = per_update, 0, {}

    def on_train_begin(self, logs=None):
        self.weights.setdefault(self.batches // self.per_update, [w.copy() for w in self.model.get_weights()])

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.batches % self.per_update == 0:
            self.weights[self.batches // self.per_update] = [w.copy() for w in self.model.get_weights()]


class StopAt(keras.callbacks.Callback):
    """Raises after the update that brings optimizer.iterations to `step`: an interrupted fit."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            raise KeyboardInterrupt(f"interrupted at iteration {self.step}")


def snapshot(run, step):
    model = load_run_model(run)
    run.load_snapshot(model, step)
    return model.get_weights()


def file_states(run):
    return {
        step: (run.snapshot_path(step).stat().st_mtime_ns, run.snapshot_path(step).stat().st_ino, sha256_file(run.snapshot_path(step)))
        for step in run.snapshot_steps()
    }


def test_snapshots_are_exact_doubling_steps_in_optimizer_updates_across_epochs_and_fits(tmp_path):
    x, y = data()
    model, recorder = make_model(), Recorder()
    callback = SnapshotCallback(tmp_path / "run", train_data=(x, y), test_data=(x[:40], y[:40]))
    model.fit(x, y, batch_size=BATCH, epochs=9, shuffle=True, verbose=0, callbacks=[recorder, callback])  # 36 updates
    run = Run.open(tmp_path / "run")
    assert run.snapshot_steps() == [0, 2, 4, 8, 16, 32]
    manifest = run.manifest()
    assert (manifest["last_iteration"], manifest["steps_per_epoch"], manifest["complete"]) == (36, 4, True)
    assert manifest["schedule"] == [0, 2, 4, 8, 16, 32]
    for step in run.snapshot_steps():  # the weights after exactly `step` updates (16 = epoch 4, batch 0 of the counts)
        assert all(np.array_equal(a, b) for a, b in zip(snapshot(run, step), recorder.weights[step])), step
    assert not all(np.array_equal(a, b) for a, b in zip(snapshot(run, 16), recorder.weights[17]))
    metrics = run.metrics()
    assert sorted(set(metrics["step"])) == [0, 2, 4, 8, 16, 32]
    assert set(metrics["metric"]) == {"classifier_accuracy", "classifier_loss"} and set(metrics["split"]) == {"train", "test"}
    config = json.loads((run.directory / "config.json").read_text())
    assert config["kind"] == "keras_model" and config["model_name"] == "mine"
    provenance = run.provenance()
    assert provenance["optimizer"]["class"] == "SGD" and provenance["optimizer"]["config"]["momentum"] == pytest.approx(0.9)
    assert provenance["fits"][0]["params"] == {"epochs": 9, "steps": 4, "verbose": 0} and provenance["keras"] == keras.__version__

    # A second fit continues the count (optimizer.iterations 36 -> 68): iteration 64 is added, nothing rewritten.
    before = file_states(run)
    model.fit(x, y, batch_size=BATCH, epochs=8, verbose=0, callbacks=[recorder, callback])
    assert run.snapshot_steps() == [0, 2, 4, 8, 16, 32, 64] and run.manifest()["last_iteration"] == 68
    assert {step: state for step, state in file_states(run).items() if step in before} == before
    assert all(np.array_equal(a, b) for a, b in zip(snapshot(run, 64), recorder.weights[64]))


def test_tf_data_sequential_model_and_gradient_accumulation_count_updates(tmp_path):
    x, y = data(1)
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(name="flat"), keras.layers.Dense(3, name="out")])
    model.compile(optimizer=keras.optimizers.SGD(0.1, gradient_accumulation_steps=2), loss="sparse_categorical_crossentropy")
    recorder = Recorder(per_update=2)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)  # 4 batches per epoch: 2 updates
    model.fit(dataset, epochs=9, shuffle=False, verbose=0, callbacks=[recorder, SnapshotCallback(tmp_path / "seq", schedule=[0, 3, 5, 17])])
    run = Run.open(tmp_path / "seq")
    assert run.snapshot_steps() == [0, 3, 5, 17] and run.manifest()["last_iteration"] == 18
    for step in run.snapshot_steps():
        assert all(np.array_equal(a, b) for a, b in zip(snapshot(run, step), recorder.weights[step])), step
    assert run.summary()["model"].endswith("(Sequential)")


def test_interrupted_fit_resumes_keeping_existing_snapshots(tmp_path):
    x, y = data()
    backup = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        make_model(seed=0).fit(
            x,
            y,
            batch_size=BATCH,
            epochs=9,
            verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(backup), SnapshotCallback(tmp_path / "run"), StopAt(10)],
        )
    run = Run.open(tmp_path / "run")
    assert run.snapshot_steps() == [0, 2, 4, 8] and not run.complete
    before = file_states(run)

    # A new process would build a fresh model: BackupAndRestore restores the weights, the optimizer
    # (iteration 8, the end of epoch 2) and the epoch. The snapshot callback comes first in the list on
    # purpose: it checks the run only once every callback's on_train_begin has run.
    resumed = make_model(seed=5)
    resumed.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=9,
        verbose=0,
        callbacks=[SnapshotCallback(tmp_path / "run"), keras.callbacks.BackupAndRestore(backup)],
    )
    assert run.snapshot_steps() == [0, 2, 4, 8, 16, 32] and run.complete
    assert {step: state for step, state in file_states(run).items() if step in before} == before
    fits = run.provenance()["fits"]
    assert [fit.get("start_iteration") for fit in fits] == [0, 8] and [fit["finished"] for fit in fits] == [False, True]
    assert fits[1]["initial_epoch"] == 2 and fits[1]["end_iteration"] == 36


def test_a_used_run_dir_refuses_another_model_and_never_rewrites(tmp_path):
    x, y = data()
    make_model(seed=0).fit(x, y, batch_size=BATCH, epochs=3, verbose=0, callbacks=[SnapshotCallback(tmp_path / "run")])
    run = Run.open(tmp_path / "run")
    before = file_states(run)
    # Same architecture, fresh un-restored weights: the run's snapshot 0 is another network.
    with pytest.raises(StoreError, match=r"snapshot at iteration 0 differs from the weights.*BackupAndRestore"):
        make_model(seed=1).fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[SnapshotCallback(tmp_path / "run")])
    # Another architecture.
    other = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    other.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(StoreError, match=r"different model than 'sequential.*': the stored model is a Functional"):
        other.fit(x, y, epochs=1, verbose=0, callbacks=[SnapshotCallback(tmp_path / "run")])
    with pytest.raises(
        StoreError, match=r"layer 3 differs: stored Dense 'embedding', this model's Dense 'embedding' \(config keys \['units'\]\)"
    ):
        make_model(seed=0, width=9).fit(x, y, epochs=1, verbose=0, callbacks=[SnapshotCallback(tmp_path / "run")])
    # Another schedule.
    with pytest.raises(StoreError, match="recorded with schedule"):
        make_model(seed=0).fit(x, y, epochs=1, verbose=0, callbacks=[SnapshotCallback(tmp_path / "run", schedule=[0, 1])])
    # The same network under other layer names (Keras' generated names differ between sessions): accepted.
    with pytest.warns(UserWarning, match="other layer names"):
        make_model(seed=0, names=("a", "b", "c", "d")).fit(
            x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[SnapshotCallback(tmp_path / "run")]
        )
    assert file_states(run) == before and run.snapshot_steps() == [0, 2, 4, 8]
    assert run.manifest()["last_iteration"] == 12 and len(run.provenance()["fits"]) == 2  # the refused fits left no trace


def test_steps_per_execution_above_one_is_refused_before_anything_is_written(tmp_path):
    x, y = data()
    model = make_model(steps_per_execution=4)
    with pytest.raises(ValueError, match=r"steps_per_execution=1, the model was compiled with steps_per_execution=4"):
        model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[SnapshotCallback(tmp_path / "run")])
    assert not (tmp_path / "run").exists()

    class Skip(keras.callbacks.Callback):  # a train step that makes two updates at once, seen by the callback
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 1:
                self.model.optimizer.iterations.assign_add(2)

    with pytest.raises(RuntimeError, match=r"jumped from 0 to 3 .* past the scheduled snapshot iteration\(s\) \[2\]"):
        make_model().fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[Skip(), SnapshotCallback(tmp_path / "skip")])
    assert Run.open(tmp_path / "skip").snapshot_steps() == [0]


def test_bad_run_directories_models_and_schedules_are_refused(tmp_path):
    x, y = data()
    trained_elsewhere = Run.create(tmp_path / "runs", RunConfig())  # a `kphases train` run directory
    with pytest.raises(StoreError, match=r"holds a run of another kind \(trained by `kphases train`: vgg8 on mnist\)"):
        make_model().fit(x, y, epochs=1, verbose=0, callbacks=[SnapshotCallback(trained_elsewhere.directory)])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match=r"not empty and holds no kphases run .*notes.txt"):
        make_model().fit(x, y, epochs=1, verbose=0, callbacks=[SnapshotCallback(tmp_path / "other")])
    with pytest.raises(ValueError, match="unknown schedule 'log'"):
        SnapshotCallback(tmp_path / "x", schedule="log")
    with pytest.raises(ValueError, match="repeat"):
        SnapshotCallback(tmp_path / "x", schedule=[0, 4, 4])

    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    unbuilt.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"not built, so its initial weights \(snapshot 0\)"):
        unbuilt.fit(x.reshape(SAMPLES, -1), y, epochs=1, verbose=0, callbacks=[SnapshotCallback(tmp_path / "unbuilt")])

    class Unregistered(keras.layers.Layer):
        def call(self, inputs):
            return 2 * inputs

    inputs = keras.Input((8, 8, 1))
    custom = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(Unregistered()(inputs))))
    custom.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"Could not locate class 'Unregistered'.*register_keras_serializable"):
        custom.fit(x, y, epochs=1, verbose=0, callbacks=[SnapshotCallback(tmp_path / "custom")])
    assert not (tmp_path / "custom").exists()

    with pytest.raises(ValueError, match=r"test_data: x has shape \(100, 64\); the model takes \(n, 8, 8, 1\)"):
        make_model().fit(x, y, epochs=1, verbose=0, callbacks=[SnapshotCallback(tmp_path / "eval", test_data=(x.reshape(SAMPLES, -1), y))])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # eval_samples cuts the evaluation data silently: it is the documented bound
        make_model().fit(x, y, epochs=1, verbose=0, callbacks=[SnapshotCallback(tmp_path / "bounded", test_data=(x, y), eval_samples=10)])
    assert not [warning for warning in caught if "examples" in str(warning.message)]
    assert Run.open(tmp_path / "bounded").provenance()["eval_data"]["test"]["examples"] == 10


def test_recorded_settings_become_json_numbers_and_unknown_objects_their_repr():
    """What the callback records of `model.fit` (params, optimizer and compile configs) may hold numpy
    values and objects JSON has no form for: numbers stay numbers, the rest is kept readable."""

    class Schedule:
        def __repr__(self):
            return "Schedule(0.1)"

        def __str__(self):
            return "0.1"  # the repr says what the object was; str would look like a number

    recorded = jsonable(
        {"lr": np.float32(0.5), "steps": np.int64(3), "shape": np.arange(3), "schedule": Schedule(), "nested": [np.bool_(True)]}
    )
    assert recorded == {"lr": 0.5, "steps": 3, "shape": [0, 1, 2], "schedule": "Schedule(0.1)", "nested": [True]}
    assert json.loads(json.dumps(recorded)) == recorded
