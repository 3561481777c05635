import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from kphases.config import DataConfig, ModelConfig, RunConfig, TrainingConfig, profile
from kphases.models import build_model
from kphases.placement import batch_indices
from kphases.store import CorruptSnapshotError, Run
from kphases.training import TrainingError, make_plan, train

TINY = RunConfig(
    data=DataConfig(name="digits", source="embedded", train_size=200, test_size=60),
    model=ModelConfig(architecture="vgg8", width=0.125),
    training=TrainingConfig(duration="16it", batch_size=32, learning_rate=0.05),
)


def snapshot_weights(run: Run, step: int) -> list[np.ndarray]:
    model = build_model(run.config.model, (32, 32, 1), 10)
    run.load_snapshot(model, step)
    return [w.copy() for w in model.get_weights()]


def test_batches_cover_each_epoch_once_with_a_smaller_last_batch():
    batches = [batch_indices(step, 70, 32, seed=3) for step in range(3)]
    assert [len(b) for b in batches] == [32, 32, 6]
    assert sorted(np.concatenate(batches).tolist()) == list(range(70))
    assert not np.array_equal(batch_indices(3, 70, 32, seed=3), batches[0])  # next epoch reshuffles


def test_plan_arithmetic_matches_the_authors_cifar10_run():
    plan = make_plan(profile("paper"), train_size=50_000)
    assert (plan.steps_per_epoch, plan.last_iteration, len(plan.snapshot_steps)) == (391, 100_487, 17)
    with pytest.raises(ValueError, match="lr_milestones"):
        make_plan(TINY.replace(training=TrainingConfig(duration="16it", lr_milestones=("20it",))), 200)


def test_training_learns_loss_falls_and_accuracy_rises_well_above_chance(tmp_path):
    # Known answer for TINY (16 updates on 200 digits, 10 classes): at step 0 the loss is ~ln 10 and
    # the accuracy ~chance; after 16 updates the train loss is below 1.3 and both accuracies above
    # 0.6 (measured: loss 2.31 -> 0.96, train 0.10 -> 0.77, test 0.10 -> 0.78). A step that ascends
    # the gradient, a step that updates nothing, or metrics of the wrong model fail this.
    metrics = train(TINY, runs_dir=tmp_path, progress=False).metrics()
    value = {(row.step, row.split, row.metric): row.value for row in metrics.itertuples()}
    assert abs(value[0, "train", "classifier_loss"] - np.log(10)) < 0.1
    assert value[0, "train", "classifier_accuracy"] < 0.2
    assert value[16, "train", "classifier_loss"] < 1.3 < value[0, "train", "classifier_loss"] - 1.0
    assert value[16, "train", "classifier_accuracy"] > 0.6 and value[16, "test", "classifier_accuracy"] > 0.6


def test_run_writes_schedule_snapshots_metrics_and_calls_callbacks(tmp_path):
    seen = []
    run = train(TINY, runs_dir=tmp_path, progress=False, callbacks=[lambda run, step, model, optimizer: seen.append(step)])
    assert seen == list(range(17))
    assert run.snapshot_steps() == [0, 2, 4, 8, 16] and run.complete
    metrics = run.metrics()
    assert set(metrics["metric"]) == {"classifier_accuracy", "classifier_loss"}
    assert sorted(set(metrics["step"])) == [0, 2, 4, 8, 16]
    config = json.loads((run.directory / "config.json").read_text())
    assert RunConfig.from_dict(config) == TINY and run.directory.name == TINY.hash()
    # A finished run is returned as it is, not retrained.
    stamp = run.snapshot_path(16).stat().st_mtime_ns
    assert train(TINY, runs_dir=tmp_path, progress=False).snapshot_path(16).stat().st_mtime_ns == stamp


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    first = train(TINY, runs_dir=tmp_path / "a", progress=False)
    second = train(TINY, runs_dir=tmp_path / "b", progress=False)
    other = train(
        TINY.replace(training=TrainingConfig(duration="16it", batch_size=32, learning_rate=0.05, seed=1)),
        runs_dir=tmp_path / "a",
        progress=False,
    )
    for a, b in zip(snapshot_weights(first, 16), snapshot_weights(second, 16)):
        assert np.array_equal(a, b)
    assert not np.array_equal(snapshot_weights(first, 0)[0], snapshot_weights(other, 0)[0])


def test_nan_loss_stops_with_the_step(tmp_path):
    exploding = TINY.replace(training=TrainingConfig(duration="16it", batch_size=32, learning_rate=1e12))
    with pytest.raises(TrainingError, match=r"loss is (nan|inf) at step \d+"):
        train(exploding, runs_dir=tmp_path, progress=False)


def test_corrupt_snapshot_is_detected_not_reused(tmp_path):
    run = train(TINY, runs_dir=tmp_path, progress=False)
    path = run.snapshot_path(4)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptSnapshotError, match="step_4.weights.h5 does not match its manifest record"):
        snapshot_weights(run, 4)


def test_killed_run_resumes_to_identical_weights(tmp_path):
    """Kill a real training process (SIGKILL, no clean-up) after a checkpoint, resume, compare."""
    args = ["--profile", "smoke", "--training.duration", "400it", "--checkpoint-every", "25", "--no-progress"]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": ""}
    process = subprocess.Popen(
        [sys.executable, "-m", "kphases", "train", "--runs-dir", str(tmp_path / "killed"), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    state = None
    deadline = time.time() + 240
    try:
        while time.time() < deadline and process.poll() is None:
            found = list((tmp_path / "killed").glob("*/checkpoint/state.json"))
            if found:
                state = json.loads(found[0].read_text())
                if state["step"] >= 50:
                    break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed: " + process.stderr.read().decode()[-2000:]
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    run_dir = next((tmp_path / "killed").iterdir())
    killed = Run.open(run_dir)
    assert not killed.complete and state is not None and state["step"] < 400

    from kphases.cli import parse_train

    config = parse_train(args).run_config()
    resumed = train(config, runs_dir=tmp_path / "killed", progress=False)
    uninterrupted = train(config, runs_dir=tmp_path / "clean", progress=False)
    assert resumed.snapshot_steps() == uninterrupted.snapshot_steps() == [0, 2, 4, 8, 16, 32, 64, 128, 256]
    for a, b in zip(snapshot_weights(resumed, 256), snapshot_weights(uninterrupted, 256)):
        assert np.array_equal(a, b)
    assert resumed.metrics().equals(uninterrupted.metrics())
