"""The run store: one directory per run config, holding everything a run produced.

    <runs_dir>/<config-hash>/
        config.json                     the RunConfig (its hash is the directory name)
        provenance.json                 data fingerprint, library versions, machine, timings
        manifest.json                   every snapshot's file, sha256 and size; the last iteration; complete?
        snapshots/step_<s>.weights.h5   the network after s updates (Model.save_weights)
        checkpoint/                     the latest resume state: weights, optimizer variables, step
        metrics.csv                     tidy rows: step, split, metric, value (classifier, eval mode)

Every file is written atomically (a temp file in the same directory, then os.replace), so a killed
process leaves either the old file or the new one. Snapshots are verified against the manifest's
checksum when loaded: a truncated or corrupt snapshot raises `CorruptSnapshotError`, it is never
silently reused or replaced.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kphases.config import ModelRunConfig, RunConfig

RUNS_DIR_VARIABLE = "KPHASES_RUNS_DIR"
DEFAULT_RUNS_DIR = "runs"
METRIC_COLUMNS = ("step", "split", "metric", "value")


class StoreError(RuntimeError):
    """The run directory is not in the state the operation needs."""


class CorruptSnapshotError(StoreError):
    """A stored file does not match the checksum recorded when it was written."""


def resolve_runs_dir(runs_dir: str | os.PathLike | None) -> Path:
    """The argument, else $KPHASES_RUNS_DIR, else ./runs."""
    return Path(runs_dir or os.environ.get(RUNS_DIR_VARIABLE) or DEFAULT_RUNS_DIR).expanduser()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path` in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(handle)
    temp_path = Path(temp)
    try:
        yield temp_path
        os.replace(temp_path, path)
    finally:
        if temp_path.exists():
            temp_path.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text)


def write_json_atomic(path: Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


class Run:
    """A run directory and the operations on it. Create with `Run.create` or open with `Run.open`."""

    def __init__(self, directory: Path, config: RunConfig):
        self.directory = Path(directory)
        self.config = config

    # --- creation and lookup -------------------------------------------------------------------
    @classmethod
    def create(cls, runs_dir: str | os.PathLike | None, config: RunConfig) -> "Run":
        """The run of `config` under `runs_dir`, created if new. An existing directory must hold the same config."""
        directory = resolve_runs_dir(runs_dir) / config.hash()
        config_path = directory / "config.json"
        if config_path.exists():
            stored = cls._read_config(config_path)
            if stored != config:
                raise StoreError(f"{config_path} holds a different config than the one hashed to {config.hash()}; "
                                 "the directory was edited by hand: move it away")
        else:
            directory.mkdir(parents=True, exist_ok=True)
            write_text_atomic(config_path, config.to_json() + "\n")
        return cls(directory, config)

    @classmethod
    def open(cls, path: str | os.PathLike, runs_dir: str | os.PathLike | None = None) -> "Run":
        """Open an existing run by directory path, or by its hash (or unique hash prefix) under `runs_dir`."""
        candidate = Path(path)
        if not (candidate / "config.json").is_file():
            root = resolve_runs_dir(runs_dir)
            matches = sorted(p for p in root.glob(f"{path}*") if (p / "config.json").is_file()) if root.is_dir() else []
            if len(matches) != 1:
                known = [p.name for p in list_runs(root)] if root.is_dir() else []
                what = "matches several runs" if matches else "is not a run directory or a run hash"
                raise StoreError(f"{str(path)!r} {what} under {str(root)!r}; known runs: {known or 'none'}")
            candidate = matches[0]
        return cls(candidate, cls._read_config(candidate / "config.json"))

    @staticmethod
    def _read_config(path: Path) -> RunConfig:
        try:
            values = json.loads(path.read_text())
            if isinstance(values, dict) and values.get("kind") == "keras_model":
                # A run recorded by kphases.SnapshotCallback from a user's own Keras model (kphases.callback).
                return ModelRunConfig.from_dict(values)
            return RunConfig.from_dict(values)
        except (json.JSONDecodeError, ValueError, TypeError) as error:
            raise StoreError(f"cannot read run config {path}: {error}") from error

    @property
    def name(self) -> str:
        return self.directory.name

    # --- manifest -------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.json"

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"snapshots": {}, "complete": False}
        try:
            return json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as error:
            raise StoreError(f"corrupt manifest {self.manifest_path}: {error}") from error

    def update_manifest(self, **changes: Any) -> None:
        manifest = self.manifest()
        manifest.update(changes)
        write_json_atomic(self.manifest_path, manifest)

    @property
    def complete(self) -> bool:
        return bool(self.manifest().get("complete"))

    def snapshot_steps(self) -> list[int]:
        """Steps whose snapshot has been written (and recorded in the manifest), ascending."""
        return sorted(int(step) for step in self.manifest()["snapshots"])

    # --- snapshots ------------------------------------------------------------------------------
    def snapshot_path(self, step: int) -> Path:
        return self.directory / "snapshots" / f"step_{step}.weights.h5"

    def save_snapshot(self, model, step: int) -> Path:
        path = self.snapshot_path(step)
        with atomic_path(path, suffix=".weights.h5") as temp:
            model.save_weights(temp)
            record = {"file": str(path.relative_to(self.directory)), "sha256": sha256_file(temp), "bytes": temp.stat().st_size}
        manifest = self.manifest()
        manifest["snapshots"][str(step)] = record
        write_json_atomic(self.manifest_path, manifest)
        return path

    def verify_file(self, path: Path, record: dict[str, Any]) -> None:
        if not path.is_file():
            raise CorruptSnapshotError(f"{path} is recorded in {self.manifest_path} but missing")
        size = path.stat().st_size
        if size != record["bytes"] or sha256_file(path) != record["sha256"]:
            raise CorruptSnapshotError(
                f"{path} does not match its manifest record (expected {record['bytes']} bytes, sha256 {record['sha256'][:12]}..., "
                f"found {size} bytes): truncated or corrupt. Delete the run directory {self.directory} to retrain it.")

    def load_snapshot(self, model, step: int) -> None:
        """Load the step's weights into `model` after checking the file against the manifest."""
        records = self.manifest()["snapshots"]
        if str(step) not in records:
            raise StoreError(f"run {self.name} has no snapshot at step {step}; it has steps {self.snapshot_steps()}")
        path = self.snapshot_path(step)
        self.verify_file(path, records[str(step)])
        model.load_weights(path)

    # --- resume checkpoint ----------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.directory / "checkpoint"

    def save_checkpoint(self, model, optimizer_variables: list[np.ndarray], step: int) -> None:
        """Everything needed to continue at `step`: weights, optimizer variables, and the step."""
        weights_path = self.checkpoint_dir / f"step_{step}.weights.h5"
        optimizer_path = self.checkpoint_dir / f"step_{step}.optimizer.npz"
        with atomic_path(weights_path, suffix=".weights.h5") as temp:
            model.save_weights(temp)
        with atomic_path(optimizer_path, suffix=".npz") as temp:
            np.savez(temp, *optimizer_variables)
        state = {"step": step, "files": {
            path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size} for path in (weights_path, optimizer_path)}}
        previous = self.checkpoint_state()
        write_json_atomic(self.checkpoint_dir / "state.json", state)
        if previous and previous["step"] != step:  # the old state's files are no longer referenced
            for name in previous["files"]:
                (self.checkpoint_dir / name).unlink(missing_ok=True)

    def remove_checkpoint(self) -> None:
        if self.checkpoint_dir.is_dir():
            shutil.rmtree(self.checkpoint_dir)

    def checkpoint_state(self) -> dict[str, Any] | None:
        path = self.checkpoint_dir / "state.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise CorruptSnapshotError(f"corrupt checkpoint state {path}: {error}") from error

    def load_checkpoint(self, model) -> tuple[int, list[np.ndarray]] | None:
        """(step, optimizer variables) of the latest checkpoint with its weights loaded into `model`; None if none."""
        state = self.checkpoint_state()
        if state is None:
            return None
        for name, record in state["files"].items():
            self.verify_file(self.checkpoint_dir / name, record)
        step = state["step"]
        model.load_weights(self.checkpoint_dir / f"step_{step}.weights.h5")
        with np.load(self.checkpoint_dir / f"step_{step}.optimizer.npz") as archive:
            optimizer_variables = [archive[f"arr_{index}"] for index in range(len(archive.files))]
        return step, optimizer_variables

    # --- metrics --------------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.directory / "metrics.csv"

    def append_metrics(self, rows: Iterable[dict[str, Any]]) -> None:
        """Add (step, split, metric, value) rows; rows for a (step, split, metric) already present replace it."""
        existing = {(row["step"], row["split"], row["metric"]): row for row in self.read_metric_rows()}
        for row in rows:
            key = (str(row["step"]), row["split"], row["metric"])
            existing[key] = {"step": str(row["step"]), "split": row["split"], "metric": row["metric"], "value": repr(float(row["value"]))}
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for key in sorted(existing, key=lambda key: (int(key[0]), key[1], key[2])):
            writer.writerow(existing[key])
        write_text_atomic(self.metrics_path, buffer.getvalue())

    def read_metric_rows(self) -> list[dict[str, str]]:
        if not self.metrics_path.exists():
            return []
        with open(self.metrics_path, newline="") as handle:
            return list(csv.DictReader(handle))

    def metrics(self):
        """The classifier metrics as a pandas DataFrame (step, split, metric, value)."""
        import pandas as pd

        if not self.metrics_path.exists():
            return pd.DataFrame(columns=list(METRIC_COLUMNS))
        return pd.read_csv(self.metrics_path)

    # --- provenance -----------------------------------------------------------------------------
    @property
    def provenance_path(self) -> Path:
        return self.directory / "provenance.json"

    def provenance(self) -> dict[str, Any]:
        return json.loads(self.provenance_path.read_text()) if self.provenance_path.exists() else {}

    def update_provenance(self, **values: Any) -> None:
        provenance = self.provenance()
        provenance.update(values)
        write_json_atomic(self.provenance_path, provenance)

    def summary(self) -> dict[str, Any]:
        """One line of `kphases list`: what the run is and how far it got."""
        manifest = self.manifest()
        steps = self.snapshot_steps()
        checkpoint = self.checkpoint_state()
        if isinstance(self.config, RunConfig):
            described = {"dataset": f"{self.config.data.name}/{self.config.data.source}",
                         "model": f"{self.config.model.architecture}x{self.config.model.width:g}",
                         "duration": self.config.training.duration}
        else:  # a run recorded by kphases.SnapshotCallback
            described = self.config.summary_fields()
        return {
            "run": self.name,
            **described,
            "snapshots": f"{len(steps)}/{len(manifest.get('schedule', [])) or '?'}",
            "step": max([*steps, checkpoint["step"] if checkpoint else 0]) if steps else 0,
            "last_iteration": manifest.get("last_iteration", "?"),
            "status": "complete" if manifest.get("complete") else ("partial" if steps else "new"),
        }


def list_runs(runs_dir: str | os.PathLike | None = None) -> list[Run]:
    """Every run under `runs_dir` (unreadable directories are reported by `Run.open`, not skipped)."""
    root = resolve_runs_dir(runs_dir)
    if not root.is_dir():
        return []
    return [Run(path, Run._read_config(path / "config.json")) for path in sorted(root.iterdir()) if (path / "config.json").is_file()]
