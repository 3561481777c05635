"""Training and measuring on a Ray cluster: a task graph executed with Ray Core, the run store as its result.

    python -m reproduce.all --profile paper --ray auto       # every figure's graph (reproduce.plan) on the cluster
    python -m kphases measure <run> --ray                    # one run's snapshots, a task per step, on a local cluster

A graph is a list of `Node`s, parents first: a training task per run (`train:<run hash>`) and a
measurement task per (run, snapshot step) (`measure:<run hash>@<step>`). Each node becomes one Ray
task (`ray.remote` with `num_cpus`, `num_gpus` and `max_retries`); a node's parents' object
references are its arguments, so Ray starts it when they are done, and independent branches run
at the same time.

- The run store is the durable result: a training task writes its run directory (snapshots,
  checkpoints) and returns its hash. If its worker or node dies, Ray runs the task again
  (`max_retries`), and the training resumes from its last checkpoint, ending bit-identical to an
  uninterrupted run (`kphases.training`). A run already complete is not submitted.
- A measurement task computes its cells in the worker and returns the rows; the driver (the
  process that called `execute`) is the only writer of `measurements.csv`. A cell already measured
  is not recomputed, so a retried measurement task is harmless.
- An error in a task (a NaN loss, bad data) is not retried (`retry_exceptions` stays off); its
  dependants fail with it, every other branch still runs, and `execute` ends with a `ClusterError`
  naming each failed task.

Resources: `cpus_per_task` (default 1) and `gpus_per_task` (default: 0.25 of a GPU on a cluster
with GPUs, so four of the suite's small networks share one GPU, else none). TensorFlow in each
worker allocates GPU memory as it grows (`TF_FORCE_GPU_ALLOW_GROWTH`), which fractional sharing needs.
`ray.init` starts a local cluster for address `local` (`num_cpus` of this machine unless given),
joins a running one for `auto` or `<head>:6379` (docs/cluster.md). Workers import the same
`kphases` as the driver (its directory goes first on their PYTHONPATH).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import tensorflow as tf
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from kphases.config import MeasureConfig, RunConfig
from kphases.data import load_dataset
from kphases.early_phase import train_lineage
from kphases.measurement import PendingRows, measure, read_measurements, summary_table
from kphases.store import Run, resolve_runs_dir
from kphases.tensorboard import write_measurements

# `ray` is imported where it is used: it is an optional dependency (the `ray` extra), and every
# other function of this module (the graph's types, the task functions) works without it.

DEFAULT_GPU_FRACTION = 0.25
"""A GPU's share per task on a cluster with GPUs: the suite's networks (VGG-8..16, ResNet-10/20 on 32x32 images) are small."""


BLAS_THREADS_VARIABLE = "KPHASES_BLAS_THREADS"
"""Set by `connect` for the workers when the driver's environment names a BLAS thread count."""


class ClusterError(RuntimeError):
    """Some tasks of the graph failed; the message names each with its error."""


def train_node_key(config: RunConfig) -> str:
    return f"train:{config.hash()}"


def measure_node_key(config: RunConfig, step: int) -> str:
    return f"measure:{config.hash()}@{step}"


@dataclass(frozen=True)
class Node:
    """One task of the graph."""

    key: str
    kind: str
    """train or measure."""
    config: RunConfig
    """The run trained, or the run measured."""
    parents: tuple[str, ...] = ()
    """Keys of the nodes that must be done first."""
    iterations: int = 0
    """Training iterations of the task (0 for a measurement)."""
    figures: tuple[str, ...] = ()
    """Figures that need it (reports only)."""
    snapshot_steps: tuple[int, ...] = ()
    """Training: the run's snapshot steps."""
    step: int | None = None
    """Measurement: the snapshot step measured."""
    measures: tuple[MeasureConfig, ...] = ()
    """Measurement: the configs taken of that step, in order (each limited to the step)."""


@dataclass(frozen=True)
class Resources:
    """What each task asks of the cluster."""

    cpus_per_task: float = 1.0
    gpus_per_task: float | None = None
    """None: DEFAULT_GPU_FRACTION on a cluster with GPUs, else 0."""
    max_retries: int = 3
    """Runs of a task again after its worker or node died (not after an error in the task)."""


# --- in the worker -------------------------------------------------------------------------------
# A worker runs one task after another: `load_dataset` keeps the last datasets in memory (kphases.data).


def _journal(path: str | None, node: Node, **values) -> None:
    """One JSON line per task attempt (tests and post-mortems: which tasks ran, and where training resumed)."""
    if path is None:
        return
    line = json.dumps({"node": node.key, "pid": os.getpid(), **values}) + "\n"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)


def _compute_as_a_serial_process() -> None:
    """Give this worker the numerical settings of a process that runs the suite serially on this node.

    - BLAS threads: Ray sets OMP_NUM_THREADS to the task's CPUs (1 by default) in each worker, so
      OpenBLAS runs one thread where a serial process runs one per core, and the closed-form
      decoders' LAPACK solves (Cholesky, eigh) then sum in another order: `linear_exact` and
      `linear_ridge` cells differed from the serial run's in their last digits. The threads are
      set back to this node's cores (threadpoolctl), or to the count the driver's environment
      names (OPENBLAS_NUM_THREADS, else OMP_NUM_THREADS: a serial run would use it). Two tasks
      on a node then share its cores for their solves; the bits depend on the thread count, and
      this count is the serial run's.
      (A node with another number of cores, or another CPU, gives other last digits, as a serial
      run there would.)
    - TensorFlow op determinism, as a process that trained has it (training enables it): a worker
      that only measures would otherwise compute the same cells with other reduction orders.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threadpool_limits(int(os.environ.get(BLAS_THREADS_VARIABLE) or cores), user_api="blas")
    tf.config.experimental.enable_op_determinism()


def train_task(node: Node, runs_dir: str, data_dir: str | None, journal: str | None, *parents) -> str:
    """Train (or resume, or reuse) the node's run; its parents' runs are complete when Ray starts this."""
    _compute_as_a_serial_process()

    directory = Path(runs_dir) / node.config.hash()
    state = Run(directory, node.config).checkpoint_state() if (directory / "config.json").is_file() else None
    _journal(journal, node, resume_step=state["step"] if state else None)
    train_lineage(
        node.config,
        runs_dir,
        data_dir,
        progress=False,
        dataset=load_dataset(node.config.data, data_dir),
    )
    return node.config.hash()


def measure_task(node: Node, runs_dir: str, data_dir: str | None, journal: str | None, *parents) -> pd.DataFrame:
    """The node's new measurement rows (computed here, written by the driver)."""
    _compute_as_a_serial_process()
    _journal(journal, node)
    run = Run.open(Path(runs_dir) / node.config.hash())
    rows = PendingRows()
    for config in node.measures:
        measure(
            run,
            config,
            data_dir=data_dir,
            progress=False,
            dataset=load_dataset(node.config.data, data_dir),
            log=lambda text: None,
            rows=rows,
        )
    return rows.new_rows()


# --- on the driver -------------------------------------------------------------------------------


def connect(address: str = "local", num_cpus: int | None = None) -> None:
    """Start a local Ray cluster (`local`) or join one (`auto`, `<head>:6379`); reuse one already joined."""
    import ray

    if ray.is_initialized():
        return
    source = str(Path(__file__).resolve().parents[1])  # the directory that holds this kphases package
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])),
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",
        "KERAS_BACKEND": "tensorflow",
    }
    named = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    if named:  # the driver's BLAS thread count, which Ray's OMP_NUM_THREADS in workers would hide
        env[BLAS_THREADS_VARIABLE] = named
    if address == "local":
        ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=True)
    else:
        if num_cpus is not None:
            raise ValueError(f"num_cpus {num_cpus} sizes a local cluster; a running cluster at {address!r} has its own")
        ray.init(address=address, runtime_env={"env_vars": env})


def _gpus(resources: Resources) -> float:
    import ray

    if resources.gpus_per_task is not None:
        return resources.gpus_per_task
    return DEFAULT_GPU_FRACTION if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def execute(
    nodes: Sequence[Node],
    runs_dir: str | os.PathLike | None,
    data_dir: str | os.PathLike | None = None,
    address: str = "local",
    num_cpus: int | None = None,
    resources: Resources = Resources(),
    progress: bool = True,
    log: Callable[[str], None] = print,
    journal: str | os.PathLike | None = None,
    written: Callable | None = None,
) -> dict[str, str]:
    """Run the graph on Ray; return {node key: 'done' | 'reused'}. Raises ClusterError naming every failed task.
    `written(run, rows)`: called after the driver stored a measurement task's rows."""
    import ray

    connect(address, num_cpus)
    runs_dir = str(resolve_runs_dir(runs_dir).resolve())  # workers may start in another directory
    data_dir = str(Path(data_dir).resolve()) if data_dir else os.environ.get("KPHASES_DATA_DIR")
    journal = str(journal) if journal else None
    gpus = _gpus(resources)
    options = dict(num_cpus=resources.cpus_per_task, num_gpus=gpus, max_retries=resources.max_retries, retry_exceptions=False)
    remote_train, remote_measure = ray.remote(train_task), ray.remote(measure_task)
    references, status, by_reference = {}, {}, {}
    began = time.perf_counter()
    for node in nodes:
        if node.kind == "train":
            directory = Path(runs_dir) / node.config.hash()
            if (directory / "config.json").is_file() and Run.open(directory).complete:
                status[node.key] = "reused"  # its children need no reference: the run is in the store
                continue
        parents = [references[key] for key in node.parents if key in references]
        function = remote_train if node.kind == "train" else remote_measure
        reference = function.options(name=node.key, **options).remote(node, runs_dir, data_dir, journal, *parents)
        references[node.key] = reference
        by_reference[reference] = node
    log(
        f"ray: {len(references)} tasks submitted ({len(status)} runs already complete), "
        f"{options['num_cpus']:g} CPU and {gpus:g} GPU per task, up to {resources.max_retries} retries"
    )
    bar = tqdm(total=len(references), desc="ray tasks", unit="task", dynamic_ncols=True) if progress else None
    pending, failures = list(references.values()), []
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        node = by_reference[ready[0]]
        try:
            result = ray.get(ready[0])
        except Exception as error:  # RayTaskError wraps the task's exception; a dependant carries its parent's
            failures.append((node.key, str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)))
            status[node.key] = "failed"
        else:
            if node.kind == "measure" and len(result):
                run = Run.open(Path(runs_dir) / node.config.hash())
                run.append_measurements(result)  # the driver: the only writer
                if written is not None:
                    written(run, result)
            status[node.key] = "done"
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    log(f"ray: {sum(value == 'done' for value in status.values())} tasks done in {time.perf_counter() - began:.0f} s")
    if failures:
        raise ClusterError(
            f"{len(failures)} of {len(references)} tasks failed: " + "; ".join(f"{key}: {message}" for key, message in failures)
        )
    return status


def measure_on_ray(
    run,
    config: MeasureConfig = MeasureConfig(),
    address: str = "local",
    data_dir=None,
    runs_dir=None,
    progress: bool = True,
    tensorboard=False,
    num_cpus: int | None = None,
    resources: Resources = Resources(),
    log: Callable[[str], None] = print,
    partial_verdicts: bool = False,
) -> pd.DataFrame:
    """`kphases measure <run> --ray`: one task per requested snapshot step; the rows are written here; return all of the run's rows.
    `partial_verdicts`: as `kphases.measure`'s (verdicts in the summary of a run that is not complete)."""
    run = run if isinstance(run, Run) else Run.open(run, runs_dir)
    available = run.snapshot_steps()
    steps = list(config.steps) or available
    missing = [step for step in steps if step not in available]
    if not available or missing:
        raise ValueError(f"run {run.directory} has no snapshots at steps {missing or steps}; it has {available or 'none (train it first)'}")
    nodes = [
        Node(
            key=measure_node_key(run.config, step),
            kind="measure",
            config=run.config,
            step=step,
            measures=(dataclasses.replace(config, steps=(step,)),),
        )
        for step in steps
    ]
    execute(
        nodes,
        runs_dir=run.directory.parent,
        data_dir=data_dir,
        address=address,
        num_cpus=num_cpus,
        resources=resources,
        progress=progress,
        log=log,
        written=(lambda run, rows: write_measurements(run, rows.to_dict("records"), tensorboard)) if tensorboard else None,
    )
    frame = read_measurements(run)
    log(summary_table(run, frame, verdicts=partial_verdicts or run.complete))
    return frame


__all__ = ["Node", "Resources", "ClusterError", "execute", "measure_on_ray", "connect", "train_node_key", "measure_node_key"]
