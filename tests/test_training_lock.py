"""One trainer per run directory (kphases.store.Run.training_lock): a second waits or is refused naming the
holder, and a killed holder never blocks the next (the lock is the operating system's, freed with its process)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kphases.config import DataConfig, ModelConfig, RunConfig, TrainingConfig
from kphases.store import Run, StoreError

TINY = RunConfig(
    data=DataConfig(name="digits", source="embedded", train_size=100, test_size=50),
    model=ModelConfig(architecture="vgg8", width=0.125),
    training=TrainingConfig(duration="2it", batch_size=50),
)

HOLD = """
import json, sys
from kphases.config import RunConfig
from kphases.store import Run
run = Run.create(sys.argv[1], RunConfig.from_dict(json.loads(sys.argv[2])))
with run.training_lock():
    print("held", flush=True)
    sys.stdin.read()  # until the test closes stdin (or kills this process)
"""


def _holder(runs_dir):
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(runs_dir), TINY.to_json()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )  # this checkout's kphases
    assert process.stdout.readline().strip() == "held"
    return process


def test_second_trainer_is_refused_naming_the_holder_then_free_after_a_kill(tmp_path):
    holder = _holder(tmp_path)
    run = Run.create(tmp_path, TINY)
    try:
        with pytest.raises(StoreError, match=rf"is being trained by \S+ pid {holder.pid}"):
            with run.training_lock(wait=False):
                pass
    finally:
        holder.kill()  # kill -9: no cleanup runs in the holder
        holder.wait()
    with run.training_lock(wait=False):  # the dead holder's lock is gone at once
        assert (run.directory / ".train.lock.holder").read_text().split()[-1] == str(__import__("os").getpid())


def test_second_trainer_waits_for_the_first(tmp_path, capfd):
    holder = _holder(tmp_path)
    run = Run.create(tmp_path, TINY)
    acquired = threading.Event()

    def wait_for_lock():
        with run.training_lock():
            acquired.set()

    waiter = threading.Thread(target=wait_for_lock)
    waiter.start()
    time.sleep(1.0)
    assert not acquired.is_set()  # still held by the first process
    holder.stdin.close()  # the first finishes
    holder.wait()
    waiter.join(timeout=30)
    assert acquired.is_set()
    assert f"pid {holder.pid}; waiting for it" in capfd.readouterr().err


def test_train_takes_the_lock(tmp_path, capfd):
    from kphases.training import train

    holder = _holder(tmp_path)
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("run", train(TINY, runs_dir=tmp_path, progress=False)))
    try:
        worker.start()
        said, deadline = "", time.monotonic() + 240
        while f"pid {holder.pid}; waiting for it" not in said and "run" not in result and time.monotonic() < deadline:
            time.sleep(0.2)
            said += capfd.readouterr().err
        assert f"pid {holder.pid}; waiting for it" in said and "run" not in result  # train reached the lock and waits
        assert not Run.create(tmp_path, TINY).snapshot_steps()
    finally:
        holder.stdin.close()
        holder.wait()
    worker.join(timeout=300)
    assert result["run"].complete
