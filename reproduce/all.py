"""Every figure of the suite from one command: `python -m reproduce.all`.

Trains and measures what each figure needs (runs are shared through the run store, so no network
is trained twice), draws every figure into `paper_figures/` (or `--out DIR`), writes the CSV each
was drawn from and `summary.md`, and prints one line per figure with its headline number.

    python -m reproduce.all                    # quick profile: 24.5 min on 2 CPU cores (measured 2026-11-30; 53.5 min on a slower 2-core machine), offline data
    python -m reproduce.all --profile smoke    # seconds per figure, tiny data (the CI test)
    python -m reproduce.all --profile paper    # the papers' settings on tfds data, for GPU machines
    python -m reproduce.all --plot-only        # redraw every figure from the stored CSVs

Options are those of every figure module (`--out`, `--runs-dir`, `--data-dir`, `--no-progress`),
plus `--figures a,b,...` to run only some figures, in the order given.

Many machines (a SLURM array, any scheduler) sharing one run directory:

    python -m reproduce.all --profile paper --shard 3/16 --runs-dir /shared/runs   # on each worker, I = 1..16
    python -m reproduce.all --profile paper --plot-only --runs-dir /shared/runs    # afterwards, anywhere

`--shard I/N` collects the runs every selected figure needs (each figure module's `work`), merges
the measurements different figures ask of the same run into one group per run, and trains and
measures only the groups I, I+N, I+2N, ... of that list; figures whose runs depend on each other
(`early_phase`: pruning rounds and rewinding) are one group each. It draws nothing. Every group is
done under a claim in the shared directory (`kphases.claims`): a group another live worker holds
is skipped with a message, a stale claim (dead process, or no heartbeat for 30 minutes) is taken
over. Re-running a shard after a crash redoes only what is missing.
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import importlib
import sys
import time

FIGURES = ("data_model", "theory", "phases", "layers", "decoders", "reconstructions", "reference_run", "transfer", "early_stopping", "early_phase", "information_plane")


def shard_groups(modules: dict, options) -> list[tuple[str, object]]:
    """The independent pieces of work of the selected figures, in a fixed order: ("run", Work) per
    run (measurements of the same run from several figures merged, first-asked first) and
    ("figure", name) per figure whose runs depend on each other."""
    from reproduce.common import Work

    by_run: dict[str, Work] = {}
    groups: list[tuple[str, object]] = []
    for name, module in modules.items():
        if getattr(module, "SHARD_AS_ONE", False):
            groups.append(("figure", name))
            continue
        for item in getattr(module, "work", lambda options: [])(options):
            key = item.planned.config.hash()
            if key not in by_run:
                by_run[key] = item
                groups.append(("run", key))
            else:
                known = by_run[key]
                by_run[key] = Work(known.planned, known.measures + tuple(m for m in item.measures if m not in known.measures))
    return [(kind, by_run[value] if kind == "run" else value) for kind, value in groups]


def run_shard(modules: dict, argv: list[str]) -> int:
    """Perform the I-th of N slices of the selected figures' work (see the module docstring)."""
    from kphases.claims import Claim, try_claim
    from kphases.store import resolve_runs_dir
    from reproduce.common import ClaimedElsewhere, parse_options, perform

    options = parse_options(__doc__, argv)
    if options.plot_only:
        print("error: --shard computes and --plot-only draws; run them separately", file=sys.stderr)
        return 2
    index, count = options.shard
    groups = shard_groups(modules, options)
    mine = groups[index - 1::count]
    print(f"shard {index}/{count}: {len(mine)} of {len(groups)} pieces of work")
    skipped = 0
    for kind, value in mine:
        label = value.planned.label if kind == "run" else f"figure {value}"
        began = time.perf_counter()
        try:
            if kind == "run":
                run, _ = perform(value, options)
                where = run.directory
            else:
                runs_dir = resolve_runs_dir(options.runs_dir)
                runs_dir.mkdir(parents=True, exist_ok=True)
                claim = try_claim(runs_dir, f"figure-{value}-{options.profile}")
                if not isinstance(claim, Claim):
                    raise ClaimedElsewhere(f"{label} is claimed by {claim.describe()}")
                with claim:
                    modules[value].compute(options)
                where = runs_dir
        except ClaimedElsewhere as error:
            skipped += 1
            print(f"skipped: {error}")
            continue
        print(f"done: {label} ({where}) in {time.perf_counter() - began:.0f} s")
    print(f"shard {index}/{count} finished: {len(mine) - skipped} done, {skipped} held by other workers")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    figures = list(FIGURES)
    if "--figures" in argv:
        position = argv.index("--figures")
        figures = [name for name in argv[position + 1].split(",") if name]
        del argv[position:position + 2]
        unknown = [name for name in figures if name not in FIGURES]
        if unknown:
            print(f"error: unknown figure(s) {unknown}; valid figures: {list(FIGURES)}", file=sys.stderr)
            return 2
    modules = {}
    for name in figures:
        try:
            modules[name] = importlib.import_module(f"reproduce.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"reproduce.{name}":
                raise
            print(f"{name}: not available in this checkout", file=sys.stderr)
    if any(argument == "--shard" or argument.startswith("--shard=") for argument in argv):
        return run_shard(modules, argv)
    began = time.perf_counter()
    lines = []
    for name, module in modules.items():
        started = time.perf_counter()
        line = module.main(argv)
        lines.append(f"{line} [{time.perf_counter() - started:.0f} s]")
    print(f"\nreproduce.all finished in {time.perf_counter() - began:.0f} s:")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
