"""What Ray costs: the smoke task graph executed serially in this process and on a local Ray cluster, side by side.

    python -m benchmarks.engine [--figures phases] [--ray-cpus 1]

Plans the smoke profile's graph of the given figures (`reproduce.plan`), then executes it three
times into fresh run directories: serially (the same task functions, in graph order, in this
process), and with `kphases.cluster.execute` on a local Ray cluster of `--ray-cpus` CPUs (1: one
task at a time, so the difference to serial is the engine's overhead: cluster start-up, worker
processes importing TensorFlow, object transfer), and of 2 CPUs if this machine has them (the
speed-up two workers bring). Prints seconds and the ratios to the serial time. The figures are not
drawn. Numbers depend on the machine and on what else runs on it: compare ratios from one run.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import tempfile
import time
from pathlib import Path

from kphases.cluster import connect, execute, measure_task, train_task
from kphases.store import Run
from reproduce.all import AllOptions, load_modules
from reproduce.common import parse_options
from reproduce.plan import plan


def serial(nodes, runs_dir: Path, data_dir) -> float:
    began = time.perf_counter()
    for node in nodes:
        if node.kind == "train":
            train_task(node, str(runs_dir), data_dir, None)
        else:
            rows = measure_task(node, str(runs_dir), data_dir, None)
            if len(rows):
                Run.open(runs_dir / node.config.hash()).append_measurements(rows)
    return time.perf_counter() - began


def on_ray(nodes, runs_dir: Path, data_dir, cpus: int) -> tuple[float, float]:
    """(start-up seconds, graph seconds) on a fresh local cluster of `cpus` CPUs."""
    import ray  # the optional `ray` extra: only this measurement needs it

    began = time.perf_counter()
    connect("local", num_cpus=cpus)
    started = time.perf_counter()
    try:
        execute(nodes, runs_dir=runs_dir, data_dir=data_dir, progress=False, log=lambda text: None)
    finally:
        ray.shutdown()
    return started - began, time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", default="phases", help="figures whose smoke graph is executed (comma-separated; default: phases)")
    parser.add_argument("--ray-cpus", type=int, default=1, help="CPUs of the local cluster for the overhead row (default: 1)")
    args = parser.parse_args(argv)
    options = parse_options("", ["--profile", "smoke", "--figures", args.figures], AllOptions)
    graph = plan(load_modules(args.figures.split(",")), options)
    nodes = list(graph.nodes.values())
    data_dir = options.data_dir or os.environ.get("KPHASES_DATA_DIR")
    print(f"smoke graph of {args.figures}: {len(nodes)} tasks ({sum(node.kind == 'train' for node in nodes)} training)")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        # Warm-up: TensorFlow, the datasets and the traced functions are then loaded in this process, as
        # they are in a Ray worker after its first task, so the serial row is not charged for them twice.
        serial(nodes[:1], scratch / "warm-up", data_dir)
        seconds = serial(nodes, scratch / "serial", data_dir)
        print(f"serial (this process)          {seconds:8.1f} s")
        rows = [(args.ray_cpus, *on_ray(nodes, scratch / f"ray-{args.ray_cpus}", data_dir, args.ray_cpus))]
        if args.ray_cpus != 2 and (os.cpu_count() or 1) >= 2:
            rows.append((2, *on_ray(nodes, scratch / "ray-2", data_dir, 2)))
        for cpus, startup, graph_seconds in rows:
            print(
                f"ray local, {cpus} CPU{'s' if cpus > 1 else ' '}             {graph_seconds:8.1f} s  "
                f"(+ {startup:.1f} s cluster start-up)  ratio to serial {graph_seconds / seconds:.2f}, "
                f"with start-up {(graph_seconds + startup) / seconds:.2f}"
            )


if __name__ == "__main__":
    main()
