"""Every figure of the suite from one command: `python -m reproduce.all`.

Trains and measures what each figure needs (runs are shared through the run store, so no network
is trained twice), draws every figure into `paper_figures/` (or `--out DIR`), writes the CSV each
was drawn from and `summary.md`, and prints one line per figure with its headline number.

    python -m reproduce.all                    # quick profile: ~50 min on 2 CPU cores, offline data
    python -m reproduce.all --profile smoke    # seconds per figure, tiny data (the CI test)
    python -m reproduce.all --profile paper    # the papers' settings on tfds data, for GPU machines
    python -m reproduce.all --plot-only        # redraw every figure from the stored CSVs

Options are those of every figure module (`--out`, `--runs-dir`, `--data-dir`, `--no-progress`),
plus `--figures a,b,...` to run only some figures, in the order given.
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import importlib
import sys
import time

FIGURES = ("data_model", "theory", "phases", "layers", "decoders", "reconstructions", "reference_run", "transfer", "early_phase")


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
    began = time.perf_counter()
    lines = []
    for name in figures:
        try:
            module = importlib.import_module(f"reproduce.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"reproduce.{name}":
                raise
            print(f"{name}: not available in this checkout", file=sys.stderr)
            continue
        started = time.perf_counter()
        line = module.main(argv)
        lines.append(f"{line} [{time.perf_counter() - started:.0f} s]")
    print(f"\nreproduce.all finished in {time.perf_counter() - began:.0f} s:")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
