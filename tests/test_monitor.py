"""PhaseMonitor: the decision rule on curves with known answers, its state, and the Keras callback."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from kphases.monitor import MONITOR_DIRECTORY, STATE_FILE, MonitorRule, MonitorSettings, PhaseMonitor

STEPS = [0, 2, 4, 8, 16, 32, 64, 128, 256, 512]


def per_image(levels, images=400, noise=0.01, seed=0):
    """Per-image errors with a hard/easy image effect shared by all steps (what the pairing exploits)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0.5, 1.5, images)
    return [level * difficulty * (1 + noise * rng.standard_normal(images)) for level in levels]


def feed(rule, levels, steps=STEPS, **kwargs):
    decision = None
    for step, errors in zip(steps, per_image(levels, **kwargs)):
        decision = rule.observe(step, errors)
    return decision


def test_decides_at_the_first_confident_rise_and_keeps_the_minimum():
    # plateau to 8, fall to 64, rise after: the rise is confident from 256 on (+10%), not at 128 (+0.2%)
    levels = [1.0, 1.0, 1.0, 1.0, 0.9, 0.8, 0.7, 0.701, 0.77, 0.85]
    rule = MonitorRule()
    decision = feed(rule, levels)
    assert decision is not None
    assert decision.chosen_step == 64
    assert decision.decided_at == 256
    assert "three phases" in decision.reason or "increase" in decision.reason
    assert rule.steps == STEPS[: STEPS.index(256) + 1]  # nothing observed after the decision counts


def test_patience_waits_for_more_confident_measurements():
    levels = [1.0, 1.0, 1.0, 1.0, 0.9, 0.8, 0.7, 0.701, 0.77, 0.85]
    decision = feed(MonitorRule(MonitorSettings(patience=2)), levels)
    assert (decision.chosen_step, decision.decided_at) == (64, 512)


@pytest.mark.parametrize(
    "levels, why",
    [
        ([1.0] * 10, "flat noisy curve"),
        ([1.0, 0.98, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6], "decrease only"),
        ([1.0, 1.02, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.35, 1.4], "rise only: no decrease to stop at"),
    ],
)
def test_no_decision_without_a_confident_fall_and_rise(levels, why):
    assert feed(MonitorRule(), levels) is None, why


def test_decision_is_scale_free():
    levels = [1.0, 1.0, 1.0, 1.0, 0.9, 0.8, 0.7, 0.701, 0.77, 0.85]
    first = feed(MonitorRule(), levels)
    scaled = feed(MonitorRule(), [37.0 * level for level in levels])
    assert (first.chosen_step, first.decided_at) == (scaled.chosen_step, scaled.decided_at)


def test_rule_refuses_steps_out_of_order_and_a_changing_test_subset():
    rule = MonitorRule()
    rule.observe(4, np.ones(10))
    with pytest.raises(ValueError, match="steps must increase"):
        rule.observe(2, np.ones(10))
    with pytest.raises(ValueError, match="test subset must stay the same"):
        rule.observe(8, np.ones(11))


def test_state_round_trip_and_other_settings_refused(tmp_path):
    levels = [1.0, 1.0, 1.0, 1.0, 0.9, 0.8, 0.7, 0.701, 0.77, 0.85]
    rule = MonitorRule()
    errors = per_image(levels)
    for step, row in zip(STEPS[:7], errors[:7]):
        rule.observe(step, row)
    rule.save(tmp_path)
    resumed = MonitorRule.load(tmp_path, MonitorSettings())
    assert resumed.steps == rule.steps
    for step, row in zip(STEPS[7:], errors[7:]):
        resumed.observe(step, row)
    whole = feed(MonitorRule(), levels)
    assert (resumed.decision.chosen_step, resumed.decision.decided_at) == (whole.chosen_step, whole.decided_at)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["steps"] == STEPS[:7]
    with pytest.raises(ValueError, match="other settings"):
        MonitorRule.load(tmp_path, MonitorSettings(patience=3))


def test_settings_refuse_bad_values():
    with pytest.raises(ValueError, match="patience"):
        MonitorSettings(patience=0)
    with pytest.raises(ValueError, match="every"):
        MonitorSettings(every=0)
    with pytest.raises(ValueError, match="bn_stats"):
        MonitorSettings(bn_stats="running")


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((2, 3, 1)),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(3, name="scores"),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class _ScriptedProbe:
    """Stands in for the feature + decoder measurement: known per-image errors per step."""

    def __init__(self, levels_by_step):
        self.errors = dict(zip(levels_by_step, per_image(list(levels_by_step.values()))))
        self.seconds = 0.0
        self.seen = []

    def __call__(self, model):
        step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        self.seen.append(step)
        return self.errors[step]


def _scripted_fit(tmp_path):
    """Images, labels, a fresh model and a stopping monitor whose probe scripts a curve that decides at 256 for 64."""
    x = np.random.default_rng(1).normal(size=(64, 2, 3, 1)).astype("float32")
    y = (x[:, 0, 0, 0] > 0).astype("int64")
    levels = dict(zip(STEPS, [1.0, 1.0, 1.0, 1.0, 0.9, 0.8, 0.7, 0.701, 0.77, 0.85]))
    monitor = PhaseMonitor(tmp_path, x, x, stop=True, log=None)
    monitor.probe = _ScriptedProbe(levels)
    return x, y, _model(), monitor


def test_keras_callback_measures_on_schedule_keeps_the_chosen_weights_and_stops(tmp_path):
    x, y, model, monitor = _scripted_fit(tmp_path)
    weights_at = {}

    class Recorder(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            weights_at[int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))] = [w.copy() for w in self.model.get_weights()]

    model.fit(x, y, batch_size=8, epochs=100, verbose=0, callbacks=[Recorder(), monitor])
    assert monitor.probe.seen == [0, 2, 4, 8, 16, 32, 64, 128, 256]
    assert monitor.decision.chosen_step == 64 and monitor.decision.decided_at == 256
    stopped_at = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert stopped_at == 257, "stop=True ends fit after the deciding step's update"
    chosen = _model()
    chosen.load_weights(monitor.chosen_weights)
    for saved, expected in zip(chosen.get_weights(), weights_at[64]):
        np.testing.assert_array_equal(saved, expected)
    assert sorted(path.name for path in (tmp_path / MONITOR_DIRECTORY).glob("*.weights.h5")) == ["chosen.weights.h5"]


def test_keras_callback_writes_only_the_weights_a_decision_can_still_choose(tmp_path):
    x, y, model, monitor = _scripted_fit(tmp_path)
    written, stored = [], {}
    save = monitor._save_weights

    def recording_save(step, model):
        written.append(step)
        save(step, model)

    monitor._save_weights = recording_save

    class Listing(keras.callbacks.Callback):  # runs after the monitor: what it left on disk at each step
        def on_train_batch_begin(self, batch, logs=None):
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            if step in monitor.probe.errors:
                stored[step] = sorted(path.name for path in (tmp_path / MONITOR_DIRECTORY).glob("*.weights.h5"))

    model.fit(x, y, batch_size=8, epochs=100, verbose=0, callbacks=[monitor, Listing()])
    assert monitor.decision.chosen_step == 64
    # the fall ends at 16, 32 and 64 in turn; 128 and 256 lie above 64's level and can never be chosen
    assert 128 not in written and 256 not in written and {0, 2, 16, 32, 64} <= set(written)
    assert stored[64] == ["step_64.weights.h5"] and stored[128] == ["step_64.weights.h5"]
    assert all(len(names) <= 1 for step, names in stored.items() if step >= 4)
    assert stored[256] == ["chosen.weights.h5"]


def test_keras_callback_resumes_its_curve(tmp_path):
    x = np.random.default_rng(1).normal(size=(64, 2, 3, 1)).astype("float32")
    y = (x[:, 0, 0, 0] > 0).astype("int64")
    levels = dict(zip(STEPS, [1.0, 1.0, 1.0, 1.0, 0.9, 0.8, 0.7, 0.701, 0.77, 0.85]))
    model = _model()
    first = PhaseMonitor(tmp_path, x, x, log=None)
    first.probe = _ScriptedProbe(levels)
    model.fit(x, y, batch_size=8, epochs=5, verbose=0, callbacks=[first])  # 40 updates: 0 .. 32 measured
    assert first.rule.steps == [0, 2, 4, 8, 16, 32] and first.decision is None
    second = PhaseMonitor(tmp_path, x, x, log=None)
    assert second.rule.steps == [0, 2, 4, 8, 16, 32]
    second.probe = _ScriptedProbe(levels)
    model.fit(x, y, batch_size=8, epochs=40, verbose=0, callbacks=[second])
    assert second.probe.seen == [64, 128, 256]
    assert (second.decision.chosen_step, second.decision.decided_at) == (64, 256)


def test_real_probe_measures_a_layer_with_the_ridge_decoder():
    from kphases.monitor import Probe

    x = np.random.default_rng(2).normal(size=(300, 2, 3, 1)).astype("float32")
    model = _model()
    probe = Probe(MonitorSettings(train_subset=200, test_subset=50), x, x[:100])
    assert probe.layer(model) == "hidden" and probe.bn_stats(model) == "stored"
    errors = probe(model)
    assert errors.shape == (50,) and np.all(errors >= 0) and errors.mean() < np.mean(x[:100] ** 2)


def test_worked_example_runs_at_its_small_size(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "stop_pretraining.py"
    spec = importlib.util.spec_from_file_location("stop_pretraining_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main([str(tmp_path), "--small"])
    assert 0.0 <= result["last_accuracy"] <= 1.0
    state = json.loads((tmp_path / MONITOR_DIRECTORY / STATE_FILE).read_text())
    assert state["steps"][:4] == [0, 2, 4, 8]
    if result["decision"] is not None:
        assert result["last_iteration"] == result["decision"].decided_at + 1  # stop=True ended training there
        assert (tmp_path / MONITOR_DIRECTORY / "chosen.weights.h5").is_file()
    else:
        assert result["last_iteration"] >= 200


def test_kphases_train_monitor_flag_records_the_curve_at_the_snapshot_steps(tmp_path):
    from kphases.cli import main as cli_main

    runs = tmp_path / "runs"
    assert cli_main(["train", "--profile", "smoke", "--runs-dir", str(runs), "--no-progress", "--monitor"]) == 0
    (directory,) = [path for path in runs.iterdir() if path.is_dir()]
    state = json.loads((directory / MONITOR_DIRECTORY / STATE_FILE).read_text())
    assert state["steps"] == [0, 2, 4, 8, 16]  # the smoke run's snapshot steps: its checkpoints
    assert len(state["reconstruction_mse"]) == 5 and all(value > 0 for value in state["reconstruction_mse"])
    assert state["settings"]["stop"] is False


def test_training_monitor_refuses_stop():
    from kphases.monitor import TrainingMonitor

    with pytest.raises(ValueError, match=r"stop=True\) is for model.fit"):
        TrainingMonitor(np.zeros((4, 2, 3, 1)), np.zeros((4, 2, 3, 1)), 16, MonitorSettings(stop=True))
