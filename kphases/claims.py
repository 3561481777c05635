"""Claims: one worker at a time per piece of work, across processes and machines sharing a directory.

Used when several workers share one run directory (`python -m reproduce.all --shard I/N` on a
SLURM array, `kphases measure --shard I/N`): before training or measuring, a worker creates
`<directory>/claim.<what>.json` with `O_CREAT | O_EXCL`, which succeeds for exactly one process
(also on NFS v3+ and Lustre). The file records host and process id; its modification time is the
heartbeat, which a background thread refreshes (`os.utime`) while the claim is held. The file is
removed on release.

A claim is stale, and may be taken over, when its process is gone (same host, process id not
alive) or its heartbeat is older than `stale_after` seconds (another host, or a killed job whose
claim file survived). Taking over renames the stale file aside first (an atomic rename that only
one contender wins), so two workers never both take the same stale claim, and nothing is deleted:
the old file stays as `claim.<what>.stale-<time>.json` for inspection.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HEARTBEAT_SECONDS = 60.0
STALE_AFTER_SECONDS = 30 * 60.0  # thirty missed heartbeats: a busy file server never makes a live claim look dead


@dataclass(frozen=True)
class ClaimInfo:
    """What a claim file says about its holder."""

    path: Path
    host: str
    pid: int
    started: float
    heartbeat: float
    """The file's modification time."""

    def describe(self) -> str:
        age = time.time() - self.heartbeat
        return f"{self.host} pid {self.pid} (heartbeat {age:.0f} s ago, file {self.path})"


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 1 <= I <= N; anything else is an error naming the value."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 2/8), got {text!r}") from None
    if not 1 <= index <= count:
        raise ValueError(f"--shard {text!r}: I must be between 1 and N={count}")
    return index, count


def claim_path(directory: str | os.PathLike, what: str) -> Path:
    if not what or "/" in what or os.sep in what:
        raise ValueError(f"claim name must be a non-empty file-name part, got {what!r}")
    return Path(directory) / f"claim.{what}.json"


def read_claim(path: Path) -> ClaimInfo | None:
    """The claim at `path`, or None if there is none. An unreadable file (a writer died between
    create and write) counts as a claim whose heartbeat is the file's modification time."""
    try:
        text = path.read_text()
        modified = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        values = json.loads(text)
        return ClaimInfo(path, str(values["host"]), int(values["pid"]), float(values["started"]), modified)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return ClaimInfo(path, "unknown", -1, modified, modified)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(info: ClaimInfo, stale_after: float = STALE_AFTER_SECONDS) -> bool:
    if info.host == socket.gethostname() and info.pid > 0 and not _process_alive(info.pid):
        return True
    return time.time() - info.heartbeat > stale_after


class Claim:
    """A held claim: refreshes its heartbeat in a daemon thread; `release()` (or leaving the
    `with` block) removes the file. Obtain one with `try_claim`."""

    def __init__(self, path: Path, heartbeat: float):
        self.path = path
        self._stop = threading.Event()
        self._started = time.time()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat,), daemon=True)
        self._thread.start()

    def _contents(self) -> str:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": self._started})

    def _beat(self, every: float) -> None:
        # Touch, never rewrite: a rewrite could clobber the claim of a worker that took ours over.
        while not self._stop.wait(every):
            try:
                os.utime(self.path)
            except OSError:
                return  # the file was moved aside or the directory went away: nothing to refresh

    @property
    def held(self) -> bool:
        """Still ours: the file exists and names this process (false once taken over as stale)."""
        info = read_claim(self.path)
        return info is not None and info.host == socket.gethostname() and info.pid == os.getpid() and info.started == self._started

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.held:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def try_claim(directory: str | os.PathLike, what: str, stale_after: float = STALE_AFTER_SECONDS,
              heartbeat: float = HEARTBEAT_SECONDS) -> Claim | ClaimInfo:
    """Claim `what` in `directory`: a `Claim` if this process now holds it, else the `ClaimInfo`
    of the live holder. A stale claim is moved aside and taken over."""
    path = claim_path(directory, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            info = read_claim(path)
            if info is None:
                continue  # released between our attempt and the read: try again
            if not is_stale(info, stale_after):
                return info
            aside = path.with_name(f"claim.{what}.stale-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.json")
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                continue  # another contender moved it first; race for the fresh file
            moved = read_claim(aside)
            if moved is not None and (moved.host, moved.pid, moved.started) != (info.host, info.pid, info.started):
                # Between our read and our rename another contender took the stale claim over and
                # created a fresh one, which we just moved: put it back (link fails if the name is
                # taken again) and leave the work to that contender.
                try:
                    os.link(aside, path)
                    os.unlink(aside)
                except FileExistsError:
                    pass
                return moved
            continue
        claim = Claim(path, heartbeat)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(claim._contents())
        return claim
    info = read_claim(path)
    if info is None:
        raise RuntimeError(f"could not claim {path}: it kept appearing and disappearing")
    return info
