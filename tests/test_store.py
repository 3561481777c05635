import numpy as np
import pytest

from kphases.config import RunConfig, TrainingConfig
from kphases.store import CorruptSnapshotError, Run, StoreError, atomic_path, list_runs


def test_create_writes_config_named_by_hash(tmp_path):
    run = Run.create(tmp_path, RunConfig())
    assert run.directory == tmp_path / RunConfig().hash()
    assert RunConfig.from_json((run.directory / "config.json").read_text()) == RunConfig()
    assert Run.open(RunConfig().hash()[:6], runs_dir=tmp_path).directory == run.directory
    assert [r.name for r in list_runs(tmp_path)] == [run.name]


def test_open_unknown_run_names_the_known_ones(tmp_path):
    Run.create(tmp_path, RunConfig())
    with pytest.raises(StoreError, match=rf"'nope' is not a run directory or a run hash .* known runs: \['{RunConfig().hash()}'\]"):
        Run.open("nope", runs_dir=tmp_path)


def test_edited_config_is_refused(tmp_path):
    run = Run.create(tmp_path, RunConfig())
    other = RunConfig().replace(training=TrainingConfig(seed=5))
    (run.directory / "config.json").write_text(other.to_json())
    with pytest.raises(StoreError, match="holds a different config"):
        Run.create(tmp_path, RunConfig())


def test_metrics_rows_are_tidy_and_replace_duplicates(tmp_path):
    run = Run.create(tmp_path, RunConfig())
    run.append_metrics(
        [
            {"step": 2, "split": "test", "metric": "classifier_accuracy", "value": 0.5},
            {"step": 0, "split": "test", "metric": "classifier_accuracy", "value": 0.1},
        ]
    )
    run.append_metrics([{"step": 2, "split": "test", "metric": "classifier_accuracy", "value": 0.6}])
    frame = run.metrics()
    assert list(frame.columns) == ["step", "split", "metric", "value"]
    assert frame["step"].tolist() == [0, 2] and frame["value"].tolist() == [0.1, 0.6]


def test_atomic_path_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temp:
            temp.write_text("half written")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


class _Weights:
    """Stands in for a Keras model: save_weights writes bytes."""

    def __init__(self, payload: bytes):
        self.payload = payload

    def save_weights(self, path):
        path.write_bytes(self.payload)

    def load_weights(self, path):
        self.loaded = path.read_bytes()


def test_snapshot_checksum_catches_flipped_byte_and_missing_file(tmp_path):
    run = Run.create(tmp_path, RunConfig())
    run.save_snapshot(_Weights(b"x" * 1000), 4)
    model = _Weights(b"")
    run.load_snapshot(model, 4)
    assert model.loaded == b"x" * 1000
    path = run.snapshot_path(4)
    path.write_bytes(b"x" * 999 + b"y")  # same size, other content
    with pytest.raises(CorruptSnapshotError, match="does not match its manifest record"):
        run.load_snapshot(model, 4)
    path.unlink()
    with pytest.raises(CorruptSnapshotError, match="missing"):
        run.load_snapshot(model, 4)
    with pytest.raises(StoreError, match=r"no snapshot at step 8; it has steps \[4\]"):
        run.load_snapshot(model, 8)


def test_checkpoint_round_trip_and_corruption(tmp_path):
    run = Run.create(tmp_path, RunConfig())
    variables = [np.arange(3.0), np.ones((2, 2), np.float32)]
    run.save_checkpoint(_Weights(b"w1"), variables, 10)
    run.save_checkpoint(_Weights(b"w2"), variables, 20)
    assert sorted(p.name for p in run.checkpoint_dir.iterdir()) == ["state.json", "step_20.optimizer.npz", "step_20.weights.h5"]
    model = _Weights(b"")
    step, loaded = run.load_checkpoint(model)
    assert step == 20 and model.loaded == b"w2" and all(np.array_equal(a, b) for a, b in zip(loaded, variables))
    (run.checkpoint_dir / "step_20.weights.h5").write_bytes(b"w3")
    with pytest.raises(CorruptSnapshotError):
        run.load_checkpoint(model)
