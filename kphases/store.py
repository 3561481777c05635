"""The run store: one directory per run config, holding everything a run produced.

    <runs_dir>/<config-hash>/
        config.json                     the RunConfig (its hash is the directory name)
        provenance.json                 data fingerprint, library versions, machine, timings
        manifest.json                   every snapshot's file, sha256 and size; the last iteration; complete?
        snapshots/step_<s>.weights.h5   the network after s updates (Model.save_weights)
        checkpoint/                     the latest resume state: weights, optimizer variables, step
        metrics.csv                     tidy rows: step, split, metric, value (classifier, eval mode)
        measurements.csv                one row per measured number (kphases.measure), with how it was measured

Every file is written atomically (a temp file in the same directory, then os.replace), so a killed
process leaves either the old file or the new one; temp files of dead writers are removed when the
run is next opened. Files get the permissions the umask allows (a run directory can be shared).
What is checked, and when (docs/guarantees.md says it for users):
- every open: `config.json` hashes to the directory's name (a hand-edited config is refused);
- opening a complete run for training: every snapshot in the manifest exists and matches its checksum;
- loading a snapshot or the resume checkpoint: the file matches the sha256 recorded when it was written;
- reading `metrics.csv` or `measurements.csv`: every row is whole and parses (a torn `metrics.csv` is
  refused; torn measurement rows are set aside, a copy of the file is kept, and their cells are measured again);
- before writing weights: the disk has room for them (h5py on a full disk can crash the process),
  and any write failing for lack of space is one `NoSpaceError` naming the directory and the free space.
Nothing stored is ever silently reused, replaced or dropped.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kphases.config import ModelRunConfig, RunConfig

RUNS_DIR_VARIABLE = "KPHASES_RUNS_DIR"
DEFAULT_RUNS_DIR = "runs"
METRIC_COLUMNS = ("step", "split", "metric", "value")
MEASUREMENT_COLUMNS = (
    "run",
    "step",
    "layer",
    "metric",
    "split",
    "value",
    "instrument",
    "bn_stats",
    "update_steps",
    "epochs",
    "data",
    "seed",
    "protocol",
)
MEASUREMENTS_FILE = "measurements.csv"
# Fields of a measurement row that identify its cell (kphases.measurement: a cell is computed at once).
_CELL_FIELDS = ("step", "layer", "bn_stats", "instrument", "protocol")
FREE_SPACE_MARGIN = 1 << 20  # bytes kept free beyond a write's own size: metadata and the file system's slack
ORPHAN_AGE_SECONDS = 3600.0  # a temp file of another host (or an older kphases) this old has no live writer


class StoreError(RuntimeError):
    """The run directory is not in the state the operation needs."""


class CorruptSnapshotError(StoreError):
    """A stored file does not match the checksum recorded when it was written."""


class DamagedFileError(StoreError):
    """A stored table has a torn or unparsable row."""


class NoSpaceError(StoreError):
    """The disk of a run directory has no room for a write; nothing of the run was changed."""


class DamagedFileWarning(UserWarning):
    """Rows of a measurement file were torn; they were set aside (a copy of the file is kept)."""


def resolve_runs_dir(runs_dir: str | os.PathLike | None) -> Path:
    """The argument, else $KPHASES_RUNS_DIR, else ./runs."""
    return Path(runs_dir or os.environ.get(RUNS_DIR_VARIABLE) or DEFAULT_RUNS_DIR).expanduser()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- free space ---------------------------------------------------------------------------------


def _size(count: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def _free_bytes(directory: Path) -> int:
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def ensure_free_space(directory: Path, needed: int, what: str) -> None:
    """Refuse (NoSpaceError) before writing `needed` bytes of `what` into `directory` if the disk cannot hold them."""
    free = _free_bytes(directory)
    if free < needed + FREE_SPACE_MARGIN:
        raise NoSpaceError(
            f"not enough space on the disk of {directory}: {what} needs about {_size(needed + FREE_SPACE_MARGIN)}, "
            f"{_size(free)} free; nothing was written. Free some space and run the same command again "
            "(a run resumes where it stopped)"
        )


def _is_no_space(error: BaseException) -> bool:
    text = str(error)
    return getattr(error, "errno", None) == errno.ENOSPC or "No space left" in text or "errno = 28" in text


# --- atomic writes and their temp files -----------------------------------------------------------

_TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}(?P<suffix>\..*)?$")
_OLD_TEMP_PATTERN = re.compile(r"^\..+\.tmp(\..*)?$")  # mkstemp names of earlier kphases versions (no writer recorded)


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path` in one rename.

    The temp file is created with mode 0o666 less the umask (as `open` would), and its name records
    host and process id so that `remove_orphan_temps` can tell a dead writer's file from a live one.
    A write that fails for lack of space raises `NoSpaceError`; `path` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = path.parent / f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}{suffix}"
    os.close(os.open(temp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield temp_path
        os.replace(temp_path, path)
    except Exception as error:
        if _is_no_space(error):
            raise NoSpaceError(
                f"no space left on the disk of {path.parent} ({_size(_free_bytes(path.parent))} free) while writing "
                f"{path.name}; {path.name} was left as it was. Free some space and run the same command again "
                "(a run resumes where it stopped)"
            ) from error
        raise
    finally:
        if temp_path.exists():
            temp_path.unlink()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_orphan_temps(directory: Path) -> list[Path]:
    """Delete the temp files killed writers left in `directory` and its subdirectories; return them.

    A temp file of this host whose process is gone is an orphan; one of another host, or without a
    recorded writer, when it is older than ORPHAN_AGE_SECONDS. Live writers' files are kept.
    """
    removed = []
    host = socket.gethostname()
    for folder in [directory, *(child for child in directory.iterdir() if child.is_dir())] if directory.is_dir() else []:
        for path in folder.iterdir():
            match = _TEMP_PATTERN.match(path.name)
            if match is None and not _OLD_TEMP_PATTERN.match(path.name):
                continue
            try:
                if match is not None and match["host"] == host:
                    orphan = not _process_alive(int(match["pid"]))
                else:
                    orphan = time.time() - path.stat().st_mtime > ORPHAN_AGE_SECONDS
                if orphan and path.is_file():
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:  # its writer finished (renamed it) meanwhile
                continue
    return removed


def write_text_atomic(path: Path, text: str) -> None:
    ensure_free_space(path.parent, len(text.encode()), path.name)
    with atomic_path(path) as temp:
        temp.write_text(text)


def write_json_atomic(path: Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def jsonable(value: Any) -> Any:
    """A JSON-safe copy of `value`: numpy scalars and arrays become Python numbers and lists, any other
    object JSON cannot hold becomes its repr (kept readable in the file rather than refused)."""

    def default(item: Any) -> Any:
        if isinstance(item, np.generic):
            return item.item()
        if isinstance(item, np.ndarray):
            return item.tolist()
        return repr(item)

    return json.loads(json.dumps(value, default=default))


# --- validated tables ---------------------------------------------------------------------------


def _csv_records(path: Path) -> tuple[list[str] | None, list[tuple[int, list[str], bool]]]:
    """(header, [(line number, fields, whole?)]) of a CSV file; `whole` is False for a last row that
    lacks its line end (the file was cut while being written, or copied incompletely)."""
    text = path.read_text()
    reader = csv.reader(io.StringIO(text))
    records, header = [], None
    for fields in reader:
        if header is None:
            header = fields
            continue
        records.append((reader.line_num, fields, True))
    if records and not text.endswith("\n"):
        records[-1] = (records[-1][0], records[-1][1], False)
    elif header is not None and not records and not text.endswith("\n"):
        header = None  # even the header is cut
    return header, records


def _parses(text: str, kind: type, empty_ok: bool = False) -> bool:
    if text == "":
        return empty_ok
    try:
        kind(text)
    except ValueError:
        return False
    return True


def environment() -> dict[str, Any]:
    """What every run's provenance.json records of the software and the machine: versions, host, CPUs."""
    import platform

    import keras
    import numpy
    import tensorflow

    from kphases import __version__

    return {
        "kphases": __version__,
        "python": platform.python_version(),
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "numpy": numpy.__version__,
        "machine": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


class Run:
    """A run directory and the operations on it. Create with `Run.create` or open with `Run.open`."""

    def __init__(self, directory: Path, config: RunConfig):
        self.directory = Path(directory)
        self.config = config

    # --- creation and lookup -------------------------------------------------------------------
    @classmethod
    def find(cls, runs_dir: str | os.PathLike | None, config: RunConfig) -> "Run | None":
        """The existing run of `config` under `runs_dir` (checked as `create` checks it), or None; creates nothing."""
        directory = resolve_runs_dir(runs_dir) / config.hash()
        config_path = directory / "config.json"
        if not config_path.exists():
            return None
        stored = cls._read_config(config_path)
        if stored != config:
            raise StoreError(
                f"{config_path} holds a different config than the one hashed to {config.hash()}; "
                "the directory was edited by hand: move it away"
            )
        run = cls(directory, config)
        run._opened()
        if run.complete:
            run.verify_complete()
        return run

    @classmethod
    def create(cls, runs_dir: str | os.PathLike | None, config: RunConfig) -> "Run":
        """The run of `config` under `runs_dir`, created if new. An existing directory must hold the same
        config, and if it says it is complete, every snapshot its manifest records (`verify_complete`)."""
        run = cls.find(runs_dir, config)
        if run is not None:
            return run
        directory = resolve_runs_dir(runs_dir) / config.hash()
        text = config.to_json() + "\n"
        ensure_free_space(directory, len(text.encode()), "config.json")  # before mkdir: a refusal leaves no empty run directory
        directory.mkdir(parents=True, exist_ok=True)
        write_text_atomic(directory / "config.json", text)
        return cls(directory, config)

    @classmethod
    def open(cls, path: str | os.PathLike, runs_dir: str | os.PathLike | None = None) -> "Run":
        """Open an existing run by directory path, or by its hash (or unique hash prefix) under `runs_dir`.

        The config must hash to the directory's name (a run of `kphases train`), or, for a run of
        `kphases.SnapshotCallback`, its recorded architecture must be unchanged."""
        candidate = Path(path)
        if not (candidate / "config.json").is_file():
            text = str(path)
            root = resolve_runs_dir(runs_dir)
            if candidate.is_absolute() or os.sep in text or "/" in text or text in ("", ".", ".."):
                # A path, not a hash: never a pattern (a glob of an absolute path raises in pathlib).
                what = (
                    "is not a run directory (it does not exist)"
                    if not candidate.exists()
                    else "is not a run directory (no config.json in it)"
                )
                raise StoreError(f"{text!r} {what}; give a run directory or a run hash under {str(root)!r}")
            matches = (
                sorted(p for p in root.iterdir() if p.name.startswith(text) and (p / "config.json").is_file()) if root.is_dir() else []
            )
            if len(matches) != 1:
                known = [p.name for p in root.iterdir() if (p / "config.json").is_file()] if root.is_dir() else []
                what = "matches several runs" if matches else "is not a run directory or a run hash"
                raise StoreError(f"{text!r} {what} under {str(root)!r}; known runs: {sorted(known) or 'none'}")
            candidate = matches[0]
        run = cls(candidate, cls._read_config(candidate / "config.json"))
        run._opened()
        return run

    def _opened(self) -> None:
        """What every open does: check the config against the directory, clear dead writers' temp files."""
        self.verify_identity()
        remove_orphan_temps(self.directory)

    def verify_identity(self) -> None:
        """StoreError unless `config.json` belongs to this directory (its hash is the name; for a
        SnapshotCallback run, `model.json` still has the checksum recorded at its creation)."""
        config = self.config
        if isinstance(config, RunConfig):
            expected = config.hash()
            if expected != self.directory.name:
                raise StoreError(
                    f"{self.directory / 'config.json'} hashes to {expected}, not to its directory's name {self.directory.name}: "
                    f"config.json was edited by hand (its snapshots belong to the config that hashes to {self.directory.name}), "
                    f"or the directory was renamed or written by a kphases whose hash differs. Restore the original config.json, "
                    f"or, if it is unedited, rename the directory to {expected}"
                )
            return
        architecture = self.directory / "model.json"
        recorded = getattr(config, "architecture_sha256", None)
        if recorded and architecture.is_file() and hashlib.sha256(architecture.read_bytes()).hexdigest() != recorded:
            raise StoreError(
                f"{architecture} does not match the checksum recorded in {self.directory / 'config.json'} when the "
                "run was created: it was edited; restore it (its snapshots belong to the recorded architecture)"
            )

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

    # --- one trainer at a time ---------------------------------------------------------------------
    @contextlib.contextmanager
    def training_lock(self, wait: bool = True) -> Iterator[None]:
        """Hold the run's training lock (`filelock`: an OS lock on `.train.lock`, freed when its process
        dies, so a killed trainer never blocks the next). A second process waits for it, saying who
        holds it (`.train.lock.holder`), or with `wait=False` gets a StoreError naming the holder."""
        import socket
        import sys

        import filelock

        lock, holder = filelock.FileLock(self.directory / ".train.lock"), self.directory / ".train.lock.holder"
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            who = holder.read_text().strip() if holder.is_file() else "another process"
            if not wait:
                raise StoreError(f"run {self.directory} is being trained by {who}") from None
            print(f"run {self.name} is being trained by {who}; waiting for it", file=sys.stderr, flush=True)
            lock.acquire()
        try:
            write_text_atomic(holder, f"{socket.gethostname()} pid {os.getpid()}\n")
            yield
        finally:
            holder.unlink(missing_ok=True)
            lock.release()

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

    def verify_complete(self) -> None:
        """CorruptSnapshotError unless every snapshot of the schedule is recorded, present and matches its checksum."""
        manifest = self.manifest()
        records = manifest.get("snapshots", {})
        missing = [step for step in manifest.get("schedule", []) if str(step) not in records]
        if missing:
            raise CorruptSnapshotError(
                f"run {self.directory} is marked complete but its manifest records no snapshot at steps "
                f"{missing} of its schedule: the manifest was edited. Move the run directory away and train again"
            )
        for step in sorted(records, key=int):
            self.verify_file(self.snapshot_path(int(step)), records[step])

    # --- snapshots ------------------------------------------------------------------------------
    def snapshot_path(self, step: int) -> Path:
        return self.directory / "snapshots" / f"step_{step}.weights.h5"

    def _weights_bytes(self, model) -> int:
        """About how many bytes a weights file of `model` takes (the largest recorded snapshot, else 4 per parameter)."""
        recorded = [record.get("bytes", 0) for record in self.manifest().get("snapshots", {}).values()]
        count_params = getattr(model, "count_params", None)
        estimate = 4 * int(count_params()) if callable(count_params) else 0
        return max([estimate, *recorded])

    def save_snapshot(self, model, step: int) -> Path:
        path = self.snapshot_path(step)
        ensure_free_space(path.parent, self._weights_bytes(model), f"the snapshot at step {step}")
        with atomic_path(path, suffix=".weights.h5") as temp:
            model.save_weights(temp)
            record = {"file": str(path.relative_to(self.directory)), "sha256": sha256_file(temp), "bytes": temp.stat().st_size}
        manifest = self.manifest()
        manifest["snapshots"][str(step)] = record
        write_json_atomic(self.manifest_path, manifest)
        return path

    def verify_file(self, path: Path, record: dict[str, Any]) -> None:
        if not path.is_file():
            raise CorruptSnapshotError(
                f"{path} is recorded in {self.manifest_path} but missing. "
                f"Move the run directory {self.directory} away and train again to rebuild it"
            )
        size = path.stat().st_size
        if size != record["bytes"] or sha256_file(path) != record["sha256"]:
            raise CorruptSnapshotError(
                f"{path} does not match its manifest record (expected {record['bytes']} bytes, sha256 {record['sha256'][:12]}..., "
                f"found {size} bytes): truncated or corrupt. Delete the run directory {self.directory} to retrain it."
            )

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
        """Everything needed to continue at `step`: weights, optimizer variables, and the step.

        `state.json` is written last and names the files of its step, so a kill at any moment leaves the
        previous state or this one, whole."""
        weights_path = self.checkpoint_dir / f"step_{step}.weights.h5"
        optimizer_path = self.checkpoint_dir / f"step_{step}.optimizer.npz"
        needed = self._weights_bytes(model) + sum(int(np.asarray(value).nbytes) for value in optimizer_variables)
        ensure_free_space(self.checkpoint_dir, needed, f"the resume checkpoint at step {step}")
        with atomic_path(weights_path, suffix=".weights.h5") as temp:
            model.save_weights(temp)
        with atomic_path(optimizer_path, suffix=".npz") as temp:
            np.savez(temp, *optimizer_variables)
        state = {
            "step": step,
            "files": {path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size} for path in (weights_path, optimizer_path)},
        }
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
        """The rows of `metrics.csv`, each checked whole: a torn or unparsable row is a DamagedFileError naming it."""
        if not self.metrics_path.exists():
            return []
        header, records = _csv_records(self.metrics_path)
        if header != list(METRIC_COLUMNS):
            raise DamagedFileError(
                f"{self.metrics_path} does not start with the header {','.join(METRIC_COLUMNS)} (found {header}): "
                f"it is damaged. Restore it from a copy, or move the run directory {self.directory} away and train again"
            )
        rows = []
        for line, fields, whole in records:
            if (
                not whole
                or len(fields) != len(METRIC_COLUMNS)
                or not _parses(fields[0], int)
                or not _parses(fields[3], float)
                or not fields[1]
                or not fields[2]
            ):
                raise DamagedFileError(
                    f"{self.metrics_path} line {line} is {'cut off' if not whole else 'not a whole row'} ({','.join(fields)!r}): the file "
                    f"is damaged (a copy or write that stopped). Restore it from a copy, or move the run directory {self.directory} "
                    "away and train again"
                )
            rows.append(dict(zip(METRIC_COLUMNS, fields)))
        return rows

    def metrics(self):
        """The classifier metrics as a pandas DataFrame (step, split, metric, value), every row checked."""
        import pandas as pd

        rows = self.read_metric_rows()
        if not rows:
            return pd.DataFrame(columns=list(METRIC_COLUMNS))
        return pd.DataFrame(
            {
                "step": [int(row["step"]) for row in rows],
                "split": [row["split"] for row in rows],
                "metric": [row["metric"] for row in rows],
                "value": [float(row["value"]) for row in rows],
            }
        )

    # --- measurements (kphases.measurement) ---------------------------------------------------------
    @property
    def measurements_path(self) -> Path:
        return self.directory / MEASUREMENTS_FILE

    def read_measurements(self):
        """Every measurement row of the run as a DataFrame (MEASUREMENT_COLUMNS); an empty frame if none.

        Rows that are torn or do not parse are left out together with every row of their cell, so the
        cell counts as not measured and is measured again; the damaged file is copied aside
        (`measurements.csv.damaged-<sha>`, once) and a DamagedFileWarning says so."""
        import pandas as pd

        path = self.measurements_path
        if not path.exists():
            return pd.DataFrame(columns=list(MEASUREMENT_COLUMNS))
        header, records = _csv_records(path)
        width = len(MEASUREMENT_COLUMNS)
        index = {name: position for position, name in enumerate(MEASUREMENT_COLUMNS)}

        def intact(fields: list[str], whole: bool) -> bool:
            return (
                whole
                and len(fields) == width
                and _parses(fields[index["step"]], int)
                and _parses(fields[index["value"]], float, empty_ok=True)
                and all(fields[index[name]] for name in ("run", "layer", "metric", "split", "instrument", "bn_stats", "protocol"))
            )

        if header != list(MEASUREMENT_COLUMNS):
            good, damaged = [], [(line, fields) for line, fields, _ in records] or [(1, header or [])]
        else:
            good = [fields for _, fields, whole in records if intact(fields, whole)]
            damaged = [(line, fields) for line, fields, whole in records if not intact(fields, whole)]
        if damaged:
            good = _without_cells_of(good, [fields for _, fields in damaged], index)
            aside = path.with_name(f"{path.name}.damaged-{sha256_file(path)[:12]}")
            if not aside.exists():
                shutil.copyfile(path, aside)
            warnings.warn(
                f"{path}: {len(damaged)} torn or unparsable row(s) (line(s) {[line for line, _ in damaged][:5]}); "
                f"a copy of the file is kept as {aside.name}, and the cells of those rows will be measured again",
                DamagedFileWarning,
                stacklevel=2,
            )
        if not good:
            return pd.DataFrame(columns=list(MEASUREMENT_COLUMNS))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(MEASUREMENT_COLUMNS)
        writer.writerows(good)
        buffer.seek(0)
        return pd.read_csv(buffer)

    def append_measurements(self, rows) -> None:
        """Add measurement rows (a DataFrame with MEASUREMENT_COLUMNS): read, extend and atomically replace
        the file while holding its lock (`measurements.csv.lock`, an OS file lock that ends with its
        process), so workers measuring the same run never lose each other's rows."""
        import pandas as pd
        from filelock import FileLock

        self.directory.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.directory / f"{MEASUREMENTS_FILE}.lock")):
            frame = self.read_measurements()
            frame = pd.concat([frame, rows], ignore_index=True) if len(frame) else rows
            frame = frame.sort_values(["step", "layer", "bn_stats", "instrument", "metric", "split"], kind="stable", ignore_index=True)
            buffer = io.StringIO()
            frame.to_csv(buffer, index=False, columns=list(MEASUREMENT_COLUMNS))
            write_text_atomic(self.measurements_path, buffer.getvalue())

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
            described = {
                "dataset": f"{self.config.data.name}/{self.config.data.source}",
                "model": f"{self.config.model.architecture}x{self.config.model.width:g}",
                "duration": self.config.training.duration,
            }
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


def _without_cells_of(good: list[list[str]], damaged: list[list[str]], index: dict[str, int]) -> list[list[str]]:
    """`good` rows minus every row whose cell a damaged row may belong to.

    A torn row is the beginning of a real row: its fields before the last are whole, the last may be
    cut, the rest are unknown. An intact row may share the damaged row's cell if it agrees on every
    known cell field (and starts with a cut one); every row of every such cell is dropped, so no cell
    is kept with a row missing (at worst a few more cells are measured again)."""
    positions = [index[name] for name in _CELL_FIELDS]

    def may_share(row: list[str], fields: list[str]) -> bool:
        last = len(fields) - 1
        return all(
            position > last or (row[position] == fields[position] if position < last else row[position].startswith(fields[position]))
            for position in positions
        )

    cells_to_drop = {tuple(row[position] for position in positions) for row in good if any(may_share(row, fields) for fields in damaged)}
    return [row for row in good if tuple(row[position] for position in positions) not in cells_to_drop]


def read_measurements(run: Run):
    """All measurement rows of a run (`Run.read_measurements`)."""
    return run.read_measurements()


def done_cells(frame) -> set[tuple]:
    """The (step, layer, bn_stats, instrument, protocol) cells that have rows in a measurement frame."""
    return set(zip(frame["step"].astype(int), frame["layer"], frame["bn_stats"], frame["instrument"], frame["protocol"]))


def list_runs(runs_dir: str | os.PathLike | None = None) -> list[Run]:
    """Every run under `runs_dir`, each checked as `Run.open` checks it (a bad one is an error naming it, not skipped)."""
    root = resolve_runs_dir(runs_dir)
    if not root.is_dir():
        return []
    return [Run.open(path) for path in sorted(root.iterdir()) if (path / "config.json").is_file()]
