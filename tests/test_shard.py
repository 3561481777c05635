"""Several workers sharing one run directory: claims, shard slices, and `reproduce.all --shard`."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from kphases.claims import Claim, ClaimInfo, claim_path, parse_shard, read_claim, try_claim

REPOSITORY = Path(__file__).resolve().parents[1]

CLAIM_RACE = """
import sys, time
from kphases.claims import Claim, try_claim
directory, start = sys.argv[1], float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
claim = try_claim(directory, "work")
print("won" if isinstance(claim, Claim) else "lost", flush=True)
time.sleep(1.0)  # hold it while the others try
"""


def test_exactly_one_of_several_processes_gets_a_claim(tmp_path):
    start = time.time() + 2.0
    workers = [subprocess.Popen([sys.executable, "-c", CLAIM_RACE, str(tmp_path), str(start)], stdout=subprocess.PIPE, text=True)
               for _ in range(6)]
    results = [worker.communicate(timeout=60)[0].strip() for worker in workers]
    assert sorted(results) == ["lost"] * 5 + ["won"]
    # The winner exited without releasing (a killed worker): its claim is stale, the next worker takes it.
    assert read_claim(claim_path(tmp_path, "work")) is not None
    taken = try_claim(tmp_path, "work")
    assert isinstance(taken, Claim)
    taken.release()


def test_a_held_claim_is_refused_then_free_after_release(tmp_path):
    claim = try_claim(tmp_path, "run")
    assert isinstance(claim, Claim) and claim.held
    other = try_claim(tmp_path, "run")
    assert isinstance(other, ClaimInfo) and other.pid == os.getpid() and "pid" in other.describe()
    claim.release()
    assert not claim_path(tmp_path, "run").exists()
    with try_claim(tmp_path, "run") as again:
        assert again.held


def _write_claim(directory: Path, what: str, host: str, pid: int, age: float) -> Path:
    path = claim_path(directory, what)
    path.write_text(json.dumps({"host": host, "pid": pid, "started": time.time() - age}))
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_claim_of_a_dead_process_is_taken_over_and_kept_aside(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    _write_claim(tmp_path, "run", socket.gethostname(), int(dead), age=5)
    claim = try_claim(tmp_path, "run")
    assert isinstance(claim, Claim) and claim.held
    aside = list(tmp_path.glob("claim.run.stale-*.json"))
    assert len(aside) == 1 and json.loads(aside[0].read_text())["pid"] == int(dead)  # nothing deleted
    claim.release()


def test_claim_of_another_host_is_stale_only_without_heartbeat(tmp_path):
    _write_claim(tmp_path, "fresh", "elsewhere", 12345, age=60)
    assert isinstance(try_claim(tmp_path, "fresh", stale_after=600), ClaimInfo)
    _write_claim(tmp_path, "old", "elsewhere", 12345, age=3600)
    taken = try_claim(tmp_path, "old", stale_after=600)
    assert isinstance(taken, Claim)
    taken.release()


def test_heartbeat_refreshes_the_claim_file(tmp_path):
    claim = try_claim(tmp_path, "run", heartbeat=0.05)
    os.utime(claim.path, (time.time() - 1000, time.time() - 1000))
    time.sleep(0.3)
    assert time.time() - read_claim(claim.path).heartbeat < 5
    claim.release()


def test_a_taken_over_claim_is_no_longer_held(tmp_path):
    claim = try_claim(tmp_path, "run", heartbeat=3600)
    os.utime(claim.path, (time.time() - 7200, time.time() - 7200))
    thief = try_claim(tmp_path, "run", stale_after=600)
    assert isinstance(thief, Claim) and thief.held and not claim.held
    claim.release()  # must not remove the thief's file
    assert thief.held
    thief.release()


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/2/3", ""])
def test_bad_shard_names_the_value(text):
    with pytest.raises(ValueError, match="--shard"):
        parse_shard(text)


def test_shard_slices_cover_every_piece_of_work_exactly_once():
    import importlib

    from reproduce.all import FIGURES, shard_groups
    from reproduce.common import Options

    modules = {name: importlib.import_module(f"reproduce.{name}") for name in FIGURES}
    options = Options("smoke", Path("unused"), False, None, None, False)
    groups = shard_groups(modules, options)
    keys = [value.planned.config.hash() if kind == "run" else value for kind, value in groups]
    assert len(keys) == len(set(keys)), "a run appears in two groups: two workers could train it"
    for count in (1, 2, 3, 7):
        slices = [groups[index::count] for index in range(count)]
        assert sorted(map(repr, sum(slices, []))) == sorted(map(repr, groups))
    # The first main run is needed by several figures: one group holds all their measurements.
    first = next(value for kind, value in groups if kind == "run")
    phases, layers, decoders = (modules[name].work(options)[0] for name in ("phases", "layers", "decoders"))
    assert phases.planned.config == layers.planned.config == first.planned.config
    for measure in (*phases.measures, *layers.measures, *decoders.measures):
        assert measure in first.measures
    assert ("figure", "early_phase") in groups


def _reproduce(*arguments, runs, out):
    command = [sys.executable, "-m", "reproduce.all", "--profile", "smoke", "--figures", "phases,layers",
               "--runs-dir", str(runs), "--out", str(out), "--no-progress", *arguments]
    environment = {**os.environ, "KPHASES_DATA_DIR": ""}
    return subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)


def test_concurrent_shards_never_train_or_measure_twice_and_plot_only_draws(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    # Shards 1/2 and 2/2, plus a duplicate launch of 1/2 (a scheduler retry): all at once.
    workers = [_reproduce("--shard", shard, runs=runs, out=out) for shard in ("1/2", "2/2", "1/2")]
    logs = [worker.communicate(timeout=900)[0] for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), logs
    assert not out.exists() or not list(out.glob("*.png")), "a shard worker drew a figure"
    directories = [path for path in runs.iterdir() if (path / "config.json").is_file()]
    assert len(directories) == 2  # the smoke profile's VGG-8 and ResNet-10 twin
    for directory in directories:
        metrics = pd.read_csv(directory / "metrics.csv")
        assert not metrics.duplicated(["step", "split", "metric"]).any(), f"{directory} was trained twice"
        measured = pd.read_csv(directory / "measurements.csv")
        cells = ["step", "layer", "metric", "split", "instrument", "bn_stats", "protocol"]
        assert not measured.duplicated(cells).any(), f"{directory} was measured twice"
        assert not list(directory.glob("claim.*.json")) or all("stale" in p.name for p in directory.glob("claim.*.json"))
    drawn = _reproduce("--plot-only", runs=runs, out=out)
    log = drawn.communicate(timeout=600)[0]
    assert drawn.returncode == 0, log
    for name in ("phases", "layers"):
        assert (out / f"{name}.png").stat().st_size > 0
    assert sorted(path.name for path in runs.iterdir() if (path / "config.json").is_file()) == sorted(d.name for d in directories)


def test_shard_with_plot_only_is_refused(tmp_path):
    from reproduce import all as reproduce_all

    assert reproduce_all.main(["--profile", "smoke", "--figures", "phases", "--shard", "1/2", "--plot-only",
                               "--runs-dir", str(tmp_path)]) == 2


def test_a_single_figure_refuses_shard(tmp_path):
    from reproduce import phases

    with pytest.raises(SystemExit, match="reproduce.all --shard"):
        phases.main(["--profile", "smoke", "--shard", "1/2", "--runs-dir", str(tmp_path), "--out", str(tmp_path)])


def test_measure_shards_and_a_duplicate_worker_split_the_steps_and_union_on_read(tmp_path):
    import dataclasses

    from kphases.config import DataConfig, ModelConfig, RunConfig, TrainingConfig, measure_profile
    from kphases.measurement import measure, read_measurements
    from kphases.training import train

    config = RunConfig(data=DataConfig(name="digits", source="embedded", train_size=200, test_size=100),
                       model=ModelConfig(architecture="vgg8", width=0.125),
                       training=TrainingConfig(duration="8it", batch_size=32, learning_rate=0.05))
    run = train(config, runs_dir=tmp_path, progress=False)
    flags = ["--profile", "smoke", "--decoders", "linear_exact", "--no-probe", "--transfer", "--no-progress", "--runs-dir", str(tmp_path)]
    command = [sys.executable, "-m", "kphases", "measure", run.name, *flags]
    workers = [subprocess.Popen([*command, "--shard", shard], cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for shard in ("1/2", "2/2", "2/2")]
    logs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), logs
    files = sorted(path.name for path in run.directory.glob("measurements*.csv"))
    assert files == ["measurements.shard-1-of-2.csv", "measurements.shard-2-of-2.csv"]
    one = pd.read_csv(run.directory / files[0])
    two = pd.read_csv(run.directory / files[1])
    assert sorted(one["step"].unique()) == [0, 4] and sorted(two["step"].unique()) == [2, 8]  # steps 0, 2, 4, 8 dealt out
    cells = ["step", "layer", "metric", "split", "instrument", "bn_stats", "protocol"]
    assert not two.duplicated(cells).any(), "the duplicate 2/2 worker measured a cell twice"
    union = read_measurements(run)
    assert len(union) == len(one) + len(two)
    # An unsharded measurement afterwards finds every cell done and computes nothing.
    messages = []
    same = dataclasses.replace(measure_profile("smoke"), decoders=("linear_exact",), probe=False, transfer=())
    again = measure(run, same, progress=False, log=messages.append)
    assert len(again) == len(union) and "already measured" in messages[0]
    assert not list(run.directory.glob("claim.*.json"))


def test_measure_cli_rejects_a_bad_shard(tmp_path):
    from kphases.cli import main

    assert main(["measure", "whatever", "--shard", "3/2", "--runs-dir", str(tmp_path)]) == 2
