"""The run store: one directory per run config, holding everything a run produced.

    <runs_dir>/<config-hash>/
        config.json                     the RunConfig (its hash is the directory name)
        provenance.json                 data fingerprint, library versions, machine, timings
        manifest.json                   every snapshot's file, sha256 and size; the last iteration; complete?
        snapshots/step_<s>.weights.h5   the network after s updates (Model.save_weights)
        checkpoint/                     the latest resume state: weights, optimizer variables, step (gone once complete)
        metrics.csv                     tidy rows: step, split, metric, value (classifier, eval mode)
        measurements.csv                one row per measured number (kphases.measure), with how it was measured
        measurements.csv.record.json    its row count, size and sha256 (and those of the version before it)
        per_image_errors/<instrument>-<protocol>/<layer>/<bn_stats>/step-<s>.npy
                                        one decoder cell's test error per image (float32), with its
                                        `.record.json` (image count, size, sha256)

Every file is written atomically (a temp file in the same directory, then os.replace), so a killed
process leaves either the old file or the new one; temp files of dead writers, at any depth of the
run directory, are removed when the run is next opened. Files get the permissions the umask allows
(a run directory can be shared). What is checked, and when (docs/guarantees.md says it for users):
- every open: `config.json` hashes to the directory's name (a hand-edited config is refused); a
  complete run's leftover `checkpoint/` (a kill between marking it complete and removing it) is removed;
- reading the manifest: snapshots without a `manifest.json` are refused (their checksums are lost);
- opening a complete run for training: every snapshot in the manifest exists and matches its checksum;
- loading a snapshot or the resume checkpoint: the file matches the sha256 recorded when it was written;
- reading `metrics.csv` or `measurements.csv`: every row is whole and parses (a torn `metrics.csv` is
  refused; torn measurement rows are set aside, a copy of the file is kept, and their cells are measured
  again); `measurements.csv` with whole rows that does not match its record (rows cut at a line end,
  values edited) is refused;
- reading a per-image error file: it matches its record (a damaged one is named; `measure` measures its cell again);
- before writing weights: the disk has room for them (h5py on a full disk can crash the process),
  and any write failing for lack of space is one `NoSpaceError` naming the directory and the free space.
Two measurers of one run take a lock per snapshot step (`.measure-step-<s>.lock`), so each cell is
measured once; rows of a cell written again replace its old rows. Nothing stored is ever silently
reused, replaced or dropped.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import os
import platform
import re
import secrets
import shutil
import socket
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import filelock
import numpy as np
import pandas as pd

from kphases import __version__
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
_TEXT_COLUMNS = ("run", "layer", "metric", "split", "instrument", "bn_stats", "data", "protocol")  # read as text, never as numbers
PER_IMAGE_DIRECTORY = "per_image_errors"
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


class UnrecordedFileWarning(UserWarning):
    """A results file has no record to check it against (written before records existed, or the record was deleted)."""


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
# Temp names that record no host (mkstemp's `.<name>.tmp*`, a writer's `.<name>.<pid>.partial`): orphans by age only.
_OLD_TEMP_PATTERNS = (re.compile(r"^\..+\.tmp(\..*)?$"), re.compile(r"^\..+\.\d+\.partial$"))


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


def _is_orphan(path: Path, host: str) -> bool:
    """Whether `path` is a temp file no live writer will rename (False for any other file)."""
    match = _TEMP_PATTERN.match(path.name)
    if match is None and not any(pattern.match(path.name) for pattern in _OLD_TEMP_PATTERNS):
        return False
    if match is not None and match["host"] == host:
        return not _process_alive(int(match["pid"]))
    return time.time() - path.stat().st_mtime > ORPHAN_AGE_SECONDS


def remove_orphan_temps(directory: Path, recursive: bool = True) -> list[Path]:
    """Delete the temp files killed writers left in `directory` (and, `recursive`, at any depth below it); return them.

    A temp file of this host whose process is gone is an orphan; one of another host, or without a
    recorded writer, when it is older than ORPHAN_AGE_SECONDS. Live writers' files are kept.
    """
    removed = []
    host = socket.gethostname()
    for folder, _, names in os.walk(directory) if Path(directory).is_dir() else ():
        for name in names:
            path = Path(folder) / name
            try:
                if _is_orphan(path, host):
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:  # its writer finished (renamed it) meanwhile
                continue
        if not recursive:
            break
    return removed


def write_text_atomic(path: Path, text: str) -> None:
    ensure_free_space(path.parent, len(text.encode()), path.name)
    with atomic_path(path) as temp:
        temp.write_text(text)


def write_json_atomic(path: Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


# --- records: what detects a results file cut at a line end, edited, or swapped --------------------

RECORD_SUFFIX = ".record.json"


def record_path(path: Path) -> Path:
    """`<file>.record.json`, beside the file it describes."""
    return path.with_name(path.name + RECORD_SUFFIX)


def _describe(data: bytes, rows: int) -> dict[str, Any]:
    return {"rows": rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(record_path(path).read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise DamagedFileError(
            f"{record_path(path)} is not a record ({error}): it was cut or edited. Delete it; {path.name} is then "
            "read unchecked until it is next written"
        ) from error
    return record if isinstance(record, dict) else {}


def _entries(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The versions a record accepts: the one written last and, for a kill between the record and its
    file, the version before it."""
    return [entry for entry in (record, record.get("previous")) if isinstance(entry, dict) and "sha256" in entry]


def _accepted_entry(path: Path) -> dict[str, Any] | None:
    """The record entry of the file now at `path` if its record accepts it (a file without a record is
    accepted as it is, as readers accept it); None for a file that does not match its record."""
    data = path.read_bytes()
    record = _read_record(path)
    if record is None:
        return {"rows": None, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    digest = hashlib.sha256(data).hexdigest()
    entry = next((entry for entry in _entries(record) if entry["sha256"] == digest), None)
    return None if entry is None else {key: entry.get(key) for key in ("rows", "bytes", "sha256")}


def accepted_sha256(path: Path) -> str | None:
    """The sha256 of the file now at `path` if its record accepts it; None if the file or its record is
    missing or damaged, or the record does not accept the file. What a record over other files (a
    figure's `.finished.json`, `reproduce.common`) lists of each, so every file has one checksum."""
    if not path.is_file() or not record_path(path).is_file():
        return None
    try:
        entry = _accepted_entry(path)
    except DamagedFileError:
        return None
    return None if entry is None else entry["sha256"]


def write_recorded(path: Path, data: bytes, rows: int) -> None:
    """Write `path` atomically with its record (row count, size, sha256).

    The record is written first and keeps the entry of the file it replaces (if that file matched
    its record), so a kill at any moment leaves a file its record accepts."""
    ensure_free_space(path.parent, 2 * len(data), path.name)
    previous = _accepted_entry(path) if path.exists() else None
    write_json_atomic(record_path(path), {"file": path.name, **_describe(data, rows), "previous": previous})
    try:
        with atomic_path(path) as temp:
            temp.write_bytes(data)
    except Exception:
        if not path.exists():  # a first write that failed (a full disk) leaves nothing, its record included
            record_path(path).unlink(missing_ok=True)
        raise


def record_mismatch(path: Path, data: bytes, rows: int | None = None) -> str | None:
    """None if `data` (the bytes of `path`) is a version its record accepts; else what differs, in words.

    A file without a record gives an UnrecordedFileWarning and None: it can be checked only for
    whole rows (it was written before records existed, or its record was deleted)."""
    record = _read_record(path)
    if record is None:
        warnings.warn(
            f"{path} has no record ({record_path(path).name}) to check it against: cut or edited rows cannot be detected "
            "until it is next written",
            UnrecordedFileWarning,
            stacklevel=3,
        )
        return None
    digest = hashlib.sha256(data).hexdigest()
    if any(entry["sha256"] == digest for entry in _entries(record)):
        return None
    found = f"{rows} rows in {len(data)} bytes" if rows is not None else f"{len(data)} bytes"
    return (
        f"holds {found}, its record {record_path(path).name} says {record.get('rows', '?')} rows in {record.get('bytes', '?')} bytes "
        f"(sha256 {str(record.get('sha256'))[:12]}...)"
    )


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


def _csv_records(text: str) -> tuple[list[str] | None, list[tuple[int, list[str], bool]]]:
    """(header, [(line number, fields, whole?)]) of a CSV file's text; `whole` is False for a last row that
    lacks its line end (the file was cut while being written, or copied incompletely)."""
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
    import keras
    import tensorflow

    return {
        "kphases": __version__,
        "python": platform.python_version(),
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "numpy": np.__version__,
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
        """What every open does: check the config against the directory, clear dead writers' temp files,
        and remove the resume state a complete run no longer needs (left if a kill came between marking
        the run complete and removing it)."""
        self.verify_identity()
        remove_orphan_temps(self.directory)
        if self.checkpoint_dir.is_dir() and self.complete:
            self.remove_checkpoint()

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
        """The manifest; an empty one for a run without snapshots yet. Snapshots without a manifest are a
        StoreError: their checksums and the run's schedule are lost, and training over them would replace them."""
        if not self.manifest_path.exists():
            stored = sorted(self.directory.glob("snapshots/step_*.weights.h5"))
            if stored:
                raise StoreError(
                    f"{self.manifest_path} is missing, but {len(stored)} snapshot(s) are in {stored[0].parent} "
                    f"({', '.join(path.name for path in stored[:3])}{', ...' if len(stored) > 3 else ''}): the manifest that records "
                    "their checksums was deleted. Restore it from a copy, or move the run directory away and train again"
                )
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
        manifest = self.manifest()  # before the snapshot exists: a first snapshot must not look like one whose manifest was lost
        ensure_free_space(path.parent, self._weights_bytes(model), f"the snapshot at step {step}")
        with atomic_path(path, suffix=".weights.h5") as temp:
            model.save_weights(temp)
            record = {"file": str(path.relative_to(self.directory)), "sha256": sha256_file(temp), "bytes": temp.stat().st_size}
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
        # Another process opening the complete run may remove it at the same moment: only what is
        # still there after both is an error.
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        if self.checkpoint_dir.exists():
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
        header, records = _csv_records(self.metrics_path.read_text())
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
        (`measurements.csv.damaged-<sha>`, once) and a DamagedFileWarning says so. A file of whole rows
        that its record (`measurements.csv.record.json`) does not accept, rows cut at a line end or values
        edited, is a DamagedFileError: which cells lost rows cannot be told, so none of it is used."""
        path = self.measurements_path
        if not path.exists():
            return pd.DataFrame(columns=list(MEASUREMENT_COLUMNS))
        data = path.read_bytes()
        header, records = _csv_records(data.decode(errors="replace"))
        good, damaged = _split_measurement_rows(header, records)
        if damaged:
            good = self._set_aside_damaged_rows(path, good, damaged)
        else:
            mismatch = record_mismatch(path, data, len(records))
            if mismatch:
                raise DamagedFileError(
                    f"{path} {mismatch}: rows were cut or values edited after it was written, and which cells lost rows cannot "
                    f"be told. Restore it from a copy, or move it aside (mv {path} {path}.cut) and measure the run again"
                )
        if not good:
            return pd.DataFrame(columns=list(MEASUREMENT_COLUMNS))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(MEASUREMENT_COLUMNS)
        writer.writerows(good)
        buffer.seek(0)
        return pd.read_csv(buffer, dtype=dict.fromkeys(_TEXT_COLUMNS, str))

    def _set_aside_damaged_rows(self, path: Path, good: list[list[str]], damaged: list[tuple[int, list[str]]]) -> list[list[str]]:
        """`good` without the cells of the damaged rows; the file copied aside once, and a warning saying so."""
        index = {name: position for position, name in enumerate(MEASUREMENT_COLUMNS)}
        good = _without_cells_of(good, [fields for _, fields in damaged], index)
        aside = path.with_name(f"{path.name}.damaged-{sha256_file(path)[:12]}")
        if not aside.exists():
            shutil.copyfile(path, aside)
        warnings.warn(
            f"{path}: {len(damaged)} torn or unparsable row(s) (line(s) {[line for line, _ in damaged][:5]}); "
            f"a copy of the file is kept as {aside.name}, and the cells of those rows will be measured again",
            DamagedFileWarning,
            stacklevel=3,
        )
        return good

    def append_measurements(self, rows) -> None:
        """Add measurement rows (a DataFrame with MEASUREMENT_COLUMNS): read, extend and atomically replace
        the file and its record while holding its lock (`measurements.csv.lock`, an OS file lock that ends
        with its process), so workers measuring the same run never lose each other's rows. The new rows
        of a cell replace the cell's stored rows (a cell is measured at once), so no cell is stored twice."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(self.directory / f"{MEASUREMENTS_FILE}.lock")):
            frame = self.read_measurements()
            if len(frame):
                replaced = set(cell_keys(rows))
                frame = frame[[key not in replaced for key in cell_keys(frame)]]
            frame = pd.concat([frame, rows], ignore_index=True) if len(frame) else rows
            frame = frame.sort_values(["step", "layer", "bn_stats", "instrument", "metric", "split"], kind="stable", ignore_index=True)
            buffer = io.StringIO()
            frame.to_csv(buffer, index=False, columns=list(MEASUREMENT_COLUMNS))
            write_recorded(self.measurements_path, buffer.getvalue().encode(), len(frame))

    @contextlib.contextmanager
    def measuring_lock(self, step: int) -> Iterator[None]:
        """Hold the lock of one snapshot step's measurement cells (`.measure-step-<s>.lock`, an OS lock freed
        when its process dies): a second measurer of the step waits, then finds the cells measured."""
        with filelock.FileLock(str(self.directory / f".measure-step-{int(step)}.lock")):
            yield

    # --- per-image errors: what the noise-aware phase verdicts resample (kphases.phases.phase_verdict) ---
    def per_image_errors_path(self, step: int, layer: str, bn_stats: str, instrument: str, protocol: str, refits: bool = False) -> Path:
        """`<run>/per_image_errors/<instrument>-<protocol>/<layer>/<bn_stats>/step-<step>.npy`: float32, one
        MSE per test image, in the measurement test split's order (the same order at every step).
        `refits`: `step-<step>-refits.npy`, refits x images, the cell's decoder refitted on halves of the
        train split (`MeasureConfig.decoder_refits`)."""
        parts = [quote(str(part), safe="") for part in (f"{instrument}-{protocol}", layer, bn_stats)]
        return self.directory.joinpath(PER_IMAGE_DIRECTORY, *parts, f"step-{int(step)}{'-refits' if refits else ''}.npy")

    def write_per_image_errors(
        self, step: int, layer: str, bn_stats: str, instrument: str, protocol: str, errors: np.ndarray, refits: bool = False
    ) -> Path:
        """Write one cell's per-image errors and their record atomically (a reader never sees half a file)."""
        path = self.per_image_errors_path(step, layer, bn_stats, instrument, protocol, refits)
        errors = np.asarray(errors, dtype=np.float32)
        buffer = io.BytesIO()
        np.save(buffer, errors)
        write_recorded(path, buffer.getvalue(), len(errors))
        return path

    def per_image_errors_problem(
        self, step: int, layer: str, bn_stats: str, instrument: str, protocol: str, refits: bool = False
    ) -> str | None:
        """What is wrong with one cell's per-image file, in words; None if it matches its record, or if the
        cell has neither file nor record (measured before per-image files existed, or without refits)."""
        path = self.per_image_errors_path(step, layer, bn_stats, instrument, protocol, refits)
        return _per_image_problem(path, path.read_bytes() if path.exists() else None)

    def read_per_image_errors_file(
        self, step: int, layer: str, bn_stats: str, instrument: str, protocol: str, refits: bool = False
    ) -> np.ndarray | None:
        """One cell's per-image errors, checked against their record; None if the cell has none (measured
        before per-image files existed). A damaged file is a DamagedFileError naming it and what to do."""
        path = self.per_image_errors_path(step, layer, bn_stats, instrument, protocol, refits)
        data = path.read_bytes() if path.exists() else None  # read once: what is checked is what is loaded
        problem = _per_image_problem(path, data)
        if problem is None and data is None:
            return None
        if problem is None:
            try:
                return np.load(io.BytesIO(data))
            except ValueError as error:
                problem = f"does not read as an array ({error})"
        raise DamagedFileError(
            f"{path} {problem}: it was cut, edited or lost after it was written. Measure its cell again: the command that "
            f"measured it (python -m kphases measure {self.directory} with the same settings, or the figure without "
            "--plot-only) measures every cell whose per-image file is damaged again"
        )

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


def _per_image_problem(path: Path, data: bytes | None) -> str | None:
    """What is wrong with a per-image file whose bytes are `data` (None: no file), in words; None if its
    record accepts it, or if there is neither file nor record."""
    has_record = record_path(path).exists()
    if data is None:
        return f"is missing (its record {record_path(path).name} remains)" if has_record else None
    if not has_record:
        return f"has no record ({record_path(path).name}) to check it against"
    try:
        return record_mismatch(path, data)
    except DamagedFileError as error:
        return f"cannot be checked: {error}"


def _split_measurement_rows(
    header: list[str] | None, records: list[tuple[int, list[str], bool]]
) -> tuple[list[list[str]], list[tuple[int, list[str]]]]:
    """(intact rows, [(line, fields)] of torn or unparsable ones) of a measurement file; every row is
    damaged if the header is."""
    if header != list(MEASUREMENT_COLUMNS):
        return [], [(line, fields) for line, fields, _ in records] or [(1, header or [])]
    index = {name: position for position, name in enumerate(MEASUREMENT_COLUMNS)}

    def intact(fields: list[str], whole: bool) -> bool:
        return (
            whole
            and len(fields) == len(MEASUREMENT_COLUMNS)
            and _parses(fields[index["step"]], int)
            and _parses(fields[index["value"]], float, empty_ok=True)
            and all(fields[index[name]] for name in ("run", "layer", "metric", "split", "instrument", "bn_stats", "protocol"))
        )

    good = [fields for _, fields, whole in records if intact(fields, whole)]
    return good, [(line, fields) for line, fields, whole in records if not intact(fields, whole)]


def cell_keys(frame) -> list[tuple]:
    """The (step, layer, bn_stats, instrument, protocol) cell of every row of a measurement frame."""
    columns = [frame[name].astype(str) for name in _CELL_FIELDS[1:]]
    return list(zip(frame["step"].astype(int), *columns))


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
    return set(cell_keys(frame))


def list_runs(runs_dir: str | os.PathLike | None = None) -> list[Run]:
    """Every run under `runs_dir`, each checked as `Run.open` checks it (a bad one is an error naming it, not skipped)."""
    root = resolve_runs_dir(runs_dir)
    if not root.is_dir():
        return []
    return [Run.open(path) for path in sorted(root.iterdir()) if (path / "config.json").is_file()]


def read_per_image_errors(
    run: Run, frame: pd.DataFrame, layer: str, instrument: str, bn_stats: str, steps: list[int] | None = None, refits: bool = False
) -> tuple[list[int], np.ndarray] | None:
    """(steps, errors of shape steps x images) of one curve, the steps measured under the protocol of its
    latest row; None when any of those steps has no per-image file (cells measured before the files existed).
    `refits`: the decoder refits' errors instead, of shape steps x refits x images (None without refits).

    Raises DamagedFileError (naming the file) if a per-image file does not match its record, and
    ValueError if the steps' files hold different numbers of images (not one paired split)."""
    selected = frame[
        (frame["metric"] == "reconstruction_mse")
        & (frame["split"] == "test")
        & (frame["layer"] == layer)
        & (frame["instrument"] == instrument)
        & (frame["bn_stats"] == bn_stats)
    ]
    if steps is not None:
        selected = selected[selected["step"].isin(steps)]
    if selected.empty:
        return None
    # One protocol: a curve measured under two settings (e.g. two update budgets) is two curves. The
    # protocol of the latest row wins, as in `curves`.
    protocol = selected["protocol"].iloc[-1]
    latest = selected[selected["protocol"] == protocol].drop_duplicates("step", keep="last").set_index("step").sort_index()
    arrays = []
    for step, protocol in latest["protocol"].items():
        errors = run.read_per_image_errors_file(int(step), layer, bn_stats, instrument, str(protocol), refits)
        if errors is None:
            return None
        arrays.append(errors)
    sizes = sorted({array.shape for array in arrays})
    if len(sizes) != 1:
        raise ValueError(
            f"run {run.name}: per-image errors of [{layer}, {instrument}, bn={bn_stats}] have different shapes "
            f"{sizes} (images, or refits x images) across steps; they are not one paired test split"
        )
    return [int(step) for step in latest.index], np.stack(arrays)
