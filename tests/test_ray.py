"""The smoke graph of two figures on a local 2-CPU Ray cluster, against the same figures run serially.

One Ray execution (module fixture) with two workers killed mid-training (`_train_task_killed_once`:
`os._exit` at step 8 on the first attempt): the `layers` run (it has a checkpoint at step 8) and
one IMP round of `early_phase` (its only checkpoint is its start, the rewind step). `layers` is the
one training figure: its closed-form decoders are the cells most sensitive to how a worker computes
(BLAS threads). Ray start-up and TensorFlow in each worker cost tens of seconds, so every assertion
reads this one execution, and `kphases measure --ray` reuses the same cluster and its warm workers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from kphases import cluster  # noqa: E402
from kphases.store import Run, sha256_file  # noqa: E402
from reproduce import all as reproduce_all  # noqa: E402

pytestmark = pytest.mark.slow
FIGURES = "layers,early_phase"
ARGS = ["--profile", "smoke", "--figures", FIGURES, "--no-progress"]


def _train_task_killed_once(kills: dict[str, tuple[int, str]]):
    """A stand-in for `cluster.train_task` whose worker exits hard at a step of a node's training, on the first attempt.

    `kills`: node key -> (step, marker path). The worker calls `os._exit` at that step (after its snapshot
    and checkpoint are written), as a killed process or a lost node would end; the marker file written
    just before lets the retry run through. Defined inside this function, the stand-in is sent to the
    workers by value (cloudpickle), so the workers need not import this test module.
    """

    def train_task(node, *args):
        from kphases import cluster as worker_cluster  # the worker's own module, which the driver's patch does not reach

        if node.key not in kills:
            return worker_cluster.train_task(node, *args)
        kill_step, marker = kills[node.key]
        train_lineage = worker_cluster.train_lineage

        def exit_once(run, step, *model_and_optimizer):
            if step == kill_step and not os.path.exists(marker):
                Path(marker).write_text(f"{node.key} exited at step {step}\n")
                os._exit(1)

        worker_cluster.train_lineage = lambda *positional, **keywords: train_lineage(*positional, callbacks=[exit_once], **keywords)
        try:
            return worker_cluster.train_task(node, *args)
        finally:
            worker_cluster.train_lineage = train_lineage  # the worker runs other tasks after this one

    return train_task


def _graph(options_args):
    from reproduce.all import AllOptions, load_modules
    from reproduce.common import parse_options
    from reproduce.plan import plan

    options = parse_options("", options_args, AllOptions)
    return plan(load_modules(FIGURES.split(",")), options)


@pytest.fixture(scope="module")
def local_cluster():
    """The module's local 2-CPU cluster; `--ray` and `measure --ray` join it, so its workers (TensorFlow imported) are reused."""
    cluster.connect("local", num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def executions(tmp_path_factory, local_cluster, smoke_output):
    root = tmp_path_factory.mktemp("ray")
    # The serial reference is the session's smoke run of every figure (tests/conftest.py): a figure's
    # CSV does not depend on which other figures measured the same runs, so its layers and early_phase
    # files are what a serial run of these two figures alone writes.
    serial_out, serial_runs = smoke_output

    graph = _graph(ARGS)
    layers_run = next(node for node in graph.nodes.values() if node.kind == "train" and "layers" in node.figures)
    imp_round = next(
        node
        for node in graph.nodes.values()
        if node.kind == "train"
        and node.config.lineage.mask_run
        and node.config.lineage.perturbation == "none"
        and node.config.lineage.rewind_step == 4
    )
    journal = root / "journal.jsonl"
    kills = {layers_run.key: (8, str(root / "killed-layers")), imp_round.key: (8, str(root / "killed-imp"))}

    real_execute = cluster.execute
    ray_out, ray_runs = root / "ray" / "out", root / "ray" / "runs"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cluster, "execute", lambda *args, **kwargs: real_execute(*args, **kwargs, journal=journal))
        patch.setattr(cluster, "train_task", _train_task_killed_once(kills))
        reproduce_all.main([*ARGS, "--out", str(ray_out), "--runs-dir", str(ray_runs), "--ray"])
    # Drawn again from the store alone: a cell the graph missed is an error here, not computed on the driver.
    plot_only_out = root / "ray" / "plot-only"
    reproduce_all.main([*ARGS, "--out", str(plot_only_out), "--runs-dir", str(ray_runs), "--plot-only"])
    attempts = [json.loads(line) for line in journal.read_text().splitlines()]
    return {
        "serial": (serial_out, serial_runs),
        "ray": (ray_out, ray_runs),
        "plot_only": plot_only_out,
        "graph": graph,
        "attempts": attempts,
        "killed": (layers_run, imp_round),
        "markers": [Path(marker) for _, marker in kills.values()],
    }


def test_ray_graph_gives_byte_identical_csvs_and_runs(executions):
    (serial_out, serial_runs), (ray_out, ray_runs) = executions["serial"], executions["ray"]
    for name in FIGURES.split(","):
        serial = (serial_out / f"{name}.csv").read_bytes()
        assert (ray_out / f"{name}.csv").read_bytes() == serial, name
        assert (executions["plot_only"] / f"{name}.csv").read_bytes() == serial, name
    # Ray trained exactly the graph's runs, each also in the serial store (which holds every figure's runs).
    trained = {node.config.hash() for node in executions["graph"].nodes.values() if node.kind == "train"}
    assert {path.name for path in ray_runs.iterdir()} == trained
    assert trained <= {path.name for path in serial_runs.iterdir()}
    # The driver wrote the measurements; the rows are the serial run's rows of the same cells (timings aside;
    # the serial store also holds the cells other figures measured of the same runs).
    key = ["step", "layer", "bn_stats", "instrument", "protocol", "metric", "split"]
    measured = [name for name in trained if (ray_runs / name / "measurements.csv").is_file()]
    assert measured, "the graph measured nothing"
    for name in measured:
        other = pd.read_csv(ray_runs / name / "measurements.csv").query("metric != 'seconds'").sort_values(key, ignore_index=True)
        serial = pd.read_csv(serial_runs / name / "measurements.csv").query("metric != 'seconds'")
        serial = serial.merge(other[key], on=key).sort_values(key, ignore_index=True)
        pd.testing.assert_frame_equal(serial, other, check_exact=True)


def test_each_task_ran_once_except_the_two_killed_ones(executions):
    attempts, graph = executions["attempts"], executions["graph"]
    layers_run, imp_round = executions["killed"]
    assert all(marker.is_file() for marker in executions["markers"])  # both faults fired
    counts = pd.Series([attempt["node"] for attempt in attempts]).value_counts().to_dict()
    assert counts == {key: 2 if key in (layers_run.key, imp_round.key) else 1 for key in graph.nodes}


def test_killed_training_resumed_from_its_checkpoint_bit_identically(executions):
    (_, serial_runs), (_, ray_runs) = executions["serial"], executions["ray"]
    layers_run, imp_round = executions["killed"]
    tries = [attempt for attempt in executions["attempts"] if attempt["node"] == layers_run.key]
    assert [attempt["resume_step"] for attempt in tries] == [None, 8]  # the retry resumed at step 8
    assert tries[0]["pid"] != tries[1]["pid"]  # in a new worker process
    for node in (layers_run, imp_round):
        name = node.config.hash()
        ours, theirs = Run.open(ray_runs / name), Run.open(serial_runs / name)
        assert ours.complete and ours.snapshot_steps() == theirs.snapshot_steps()
        for step in ours.snapshot_steps():
            assert sha256_file(ours.snapshot_path(step)) == sha256_file(theirs.snapshot_path(step)), (name, step)


def test_killed_imp_round_is_redone_alone(executions):
    _, imp_round = executions["killed"]
    tries = [attempt for attempt in executions["attempts"] if attempt["node"] == imp_round.key]
    # Its only checkpoint is the one of its start (the rewind step, 4; none between it and its end, 16):
    # the retry trains the whole round again, and nothing of its lineage (the counts above).
    assert [attempt["resume_step"] for attempt in tries] == [None, imp_round.config.lineage.rewind_step]
    assert tries[0]["pid"] != tries[1]["pid"]


def test_measure_on_ray_gives_the_serial_rows(executions, tmp_path):
    """`kphases measure <run> --ray` on the module's cluster: a task per snapshot, rows written by this
    process, equal to the serial figure pass's rows of the same cells (timings aside)."""
    import shutil

    from kphases.cli import main as kphases_main

    (_, serial_runs), (layers_run, _) = executions["serial"], executions["killed"]
    name = layers_run.config.hash()
    shutil.copytree(serial_runs / name, tmp_path / name, ignore=shutil.ignore_patterns("measurements.csv"))
    argv = ["measure", str(tmp_path / name), "--profile", "smoke", "--ray", "--no-progress"]
    assert kphases_main([*argv, "--layers", "block4", "--decoders", "linear_exact", "linear_ridge", "--transfer"]) == 0
    key = ["step", "layer", "bn_stats", "instrument", "protocol", "metric", "split"]
    ours = pd.read_csv(tmp_path / name / "measurements.csv").query("metric != 'seconds'")
    serial = pd.read_csv(serial_runs / name / "measurements.csv").query("metric != 'seconds'")
    assert set(ours["instrument"]) == {"linear_exact", "linear_ridge", "probe"} and set(ours["layer"]) == {"block4"}
    assert sorted(set(ours["step"])) == Run.open(tmp_path / name).snapshot_steps()
    serial = serial.merge(ours[key], on=key).sort_values(key, ignore_index=True)  # the same cells of the serial pass
    pd.testing.assert_frame_equal(ours.sort_values(key, ignore_index=True), serial, check_exact=True)


def test_bare_ray_flag_means_local():
    from kphases.cli import bare_ray_flag

    assert bare_ray_flag(["--ray", "--no-progress"]) == ["--ray", "local", "--no-progress"]
    assert bare_ray_flag(["--ray"]) == ["--ray", "local"]
    assert bare_ray_flag(["--ray", "head:6379"]) == ["--ray", "head:6379"]
