"""Every figure of the suite from one command: `python -m reproduce.all` (`--help` lists the options).

Trains and measures what each figure needs (runs are shared through the run store, so no network
is trained twice), draws every figure into `paper_figures/` (or `--out DIR`), writes the CSV each
was drawn from and `summary.md`, and prints one line per figure with its headline number.

    python -m reproduce.all                    # quick profile: embedded MNIST, no download; --dry-run estimates its time here
    python -m reproduce.all --profile smoke    # seconds per figure, tiny data (the CI test)
    python -m reproduce.all --profile full --out paper_figures   # the committed figures: offline real data, 3 seeds; resumable
    python -m reproduce.all --profile paper    # the papers' settings on tfds data, for GPU machines
    python -m reproduce.all --plot-only        # redraw every figure from the stored CSVs
    python -m reproduce.all --profile full --dry-run   # per figure: runs, iterations, cells, estimated seconds on this machine
    python -m reproduce.all --profile paper --ray auto --runs-dir /shared/runs   # on a Ray cluster (docs/cluster.md)

The default, quick, is every figure of both papers on the embedded MNIST (no download) at the
smallest scale that still shows each figure's point: one VGG-8 x1/8 network of 1,024 iterations
(and its tanh and 20%-label-noise twins), one seed, the many-layer and many-decoder figures at 6 of
its snapshots, the theory's regimes and a 12-cell map, and 9 short early-phase runs (one condition
of each kind). Its verdicts carry intervals over one seed's test images; the early-phase
comparisons say they need 3 seeds. It is sized to finish within 15 minutes on a 2-core CPU without
AVX-512 (`--dry-run` prints the estimate for this machine), and ends by comparing its headline
numbers and verdicts with the committed reference `paper_figures/embedded/`. The seed-level
evidence is the full profile's.

With `--ray [ADDRESS]` the selected figures' work is planned as one task graph (`reproduce.plan`)
and executed on a Ray cluster (`kphases.cluster`; `local`, the default of a bare `--ray`, starts
one on this machine), then every figure is drawn here from the run store, as `--plot-only` would.
Without `--ray`, everything runs in this process, figure after figure; at the end it prints, and
writes as the `timing` section of summary.md, each figure's measured seconds beside the calibrated
estimate (`reproduce.costs`). Killed and run again, it continues: the run store resumes runs and
measurement cells, and a figure whose CSVs are finished for the same work is redrawn from them
(`--recompute` to redo it).
"""

from __future__ import annotations

import importlib
import sys
import time
from dataclasses import dataclass

import tensorflow as tf

from kphases import cluster, entry
from kphases.cli import bare_ray_flag as expand
from kphases.store import resolve_runs_dir
from reproduce.common import FIGURES_DIR, Options, parse_options, update_summary
from reproduce.compare import reference_directory, report
from reproduce.costs import Calibration, estimate, estimate_table, measured_table
from reproduce.plan import describe, plan

FIGURES = (
    "data_model",
    "theory",
    "phases",
    "layers",
    "decoders",
    "reconstructions",
    "reference_run",
    "transfer",
    "early_stopping",
    "early_phase",
    "information_plane",
    "label_noise",
)


@dataclass(frozen=True)
class AllOptions(Options):
    """The options of every figure, and which figures to make and where."""

    figures: str = ",".join(FIGURES)
    """Figures to make, comma-separated, in this order."""
    dry_run: bool = False
    """Print the task graph of the selected figures and, per figure, its runs, iterations, measurement cells and estimated seconds on this machine (calibrated from a few timed steps); train nothing."""
    ray: str | None = None
    """Execute the task graph on a Ray cluster: local (start one on this machine; a bare --ray), auto (the cluster this machine belongs to), or the head's host:port."""
    ray_cpus: int | None = None
    """CPUs of a local Ray cluster (default: every core of this machine)."""
    cpus_per_task: float = 1.0
    """CPUs Ray reserves for each training or measurement task."""
    gpus_per_task: float | None = None
    """GPUs (a fraction shares one) Ray reserves per task; default: 0.25 on a cluster with GPUs, else 0."""
    max_retries: int = 3
    """Times Ray reruns a task whose worker or node died (a training resumes from its checkpoint)."""


def bare_ray_flag(argv: list[str]) -> list[str]:
    """`--ray` without a value (last, or followed by another flag) means `--ray local`."""
    return expand(argv)


def load_modules(figures: list[str]) -> dict:
    modules = {}
    for name in figures:
        try:
            modules[name] = importlib.import_module(f"reproduce.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"reproduce.{name}":
                raise
            print(f"{name}: not available in this checkout", file=sys.stderr)
    return modules


def run_on_ray(modules: dict, options: AllOptions) -> None:
    """Plan the figures' work and execute it on Ray; the figures are drawn afterwards by `main`."""
    graph = plan(modules, options)
    print(describe(graph))
    cluster.execute(  # looked up on the module at call time, so a test can wrap it
        list(graph.nodes.values()),
        runs_dir=options.runs_dir,
        data_dir=options.data_dir,
        address=options.ray,
        num_cpus=options.ray_cpus,
        progress=options.progress,
        resources=cluster.Resources(options.cpus_per_task, options.gpus_per_task, options.max_retries),
    )


def estimate_text(modules: dict, options: AllOptions):
    """(per-figure costs, their table) of the selected figures, calibrated on this machine now (`reproduce.costs`)."""
    calibration = Calibration()
    costs = estimate(modules, options, calibration)
    return costs, estimate_table(costs, calibration=calibration)


def write_timing(modules: dict, measured: dict[str, float], options: AllOptions) -> None:
    """The estimate beside the measured seconds: printed (the run's log) and the `timing` section of summary.md.

    The calibration runs after the figures (the estimate does not depend on what the run stored) and is
    skipped at smoke, whose whole run is shorter than a calibration: there the table has the measured seconds only."""
    if options.profile == "smoke":
        table, what = measured_table(measured), "measured (no estimate at smoke)"
    else:
        calibration = Calibration()
        costs = estimate(modules, options, calibration)
        table, what = (
            estimate_table(costs, measured, calibration),
            "estimated (calibrated on this machine right after the run) and measured",
        )
    print(f"\n{what} seconds per figure:\n\n{table}")
    note = f"Wall time per figure of `python -m reproduce.all --profile {options.profile}` on this machine" + (
        ": measured (smoke has no estimate: a calibration would take longer than the run)."
        if options.profile == "smoke"
        else ": the estimate `--dry-run` prints, calibrated from timed steps, beside the measured seconds. A figure that found "
        "its runs, cells or finished CSV from an earlier invocation measures less than its estimate."
    )
    update_summary(options, "timing", f"{note}\n\n{table}")


def main(argv=None) -> int:
    """Make the figures; Ctrl-C ends it with one line saying where it stopped (exit status 130)."""
    try:
        return _main(argv)
    except KeyboardInterrupt as error:
        return entry.interrupted(error, "reproduce.all")


def _main(argv=None) -> int:
    argv = bare_ray_flag(list(sys.argv[1:] if argv is None else argv))
    options = parse_options(__doc__, argv, AllOptions, prog="python -m reproduce.all")
    figures = [name for name in options.figures.split(",") if name]
    unknown = [name for name in figures if name not in FIGURES]
    if unknown or not figures:
        print(f"error: --figures {options.figures!r}: unknown figure(s) {unknown}; valid figures: {list(FIGURES)}", file=sys.stderr)
        return 2
    if options.ray is not None and (options.plot_only or options.dry_run):
        print("error: --ray computes; --plot-only and --dry-run compute nothing: use one of them", file=sys.stderr)
        return 2
    entry.start_tensorflow(gpu_requested=bool(options.gpus_per_task))
    modules = load_modules(figures)
    if options.dry_run:
        print(f"profile {options.profile}:")
        print(describe(plan(modules, options)))
        print(f"\nestimated wall time on this machine (calibrated from timed steps; {options.profile} profile, one process):\n")
        print(estimate_text(modules, options)[1])
        return 0

    # Before any figure computes on this process: the driver-side numbers (early_phase's gradient norms)
    # are then bit-identical whether this process trained the runs (serial) or Ray workers did.
    tf.config.experimental.enable_op_determinism()
    began = time.perf_counter()
    if options.ray is not None:
        run_on_ray(modules, options)
        root = resolve_runs_dir(options.runs_dir)
        planned = {path.name for path in root.iterdir()} if root.is_dir() else set()
    lines, measured = [], {}
    for name, module in modules.items():
        started = time.perf_counter()
        line = module.main(options)
        measured[name] = time.perf_counter() - started
        lines.append(f"{line} [{measured[name]:.0f} s]")
    if options.ray is not None:
        unplanned = sorted({path.name for path in root.iterdir()} - planned) if root.is_dir() else []
        if unplanned:  # the planner missed runs a figure needs: they were trained here, serially
            print(f"warning: the figure pass trained {len(unplanned)} runs the task graph did not hold: {unplanned}", file=sys.stderr)
    print(f"\nreproduce.all finished in {time.perf_counter() - began:.0f} s:")
    print("\n".join(lines))
    if options.ray is None and not options.plot_only:
        write_timing(modules, measured, options)
    if set(figures) == set(FIGURES) and options.profile in ("quick", "full"):  # the references are of whole runs
        print("\n" + "\n".join(report(options.out, reference_directory(options.profile == "full", FIGURES_DIR))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
