"""What every figure module shares: options, the runs each profile uses, results files, summary.

Every figure module has the same shape (Flax-examples style): `compute(options)` trains and
measures what it needs through the run store (a finished run or measurement cell is reused, so
`reproduce.all` never trains the same network twice) and returns tidy rows; `plot(table, options)`
draws from those rows only and returns a headline; `main(argv)` glues them with `--plot-only`
(redraw from the stored CSV). Outputs: `<out>/<name>.png`, `.pdf`, `.csv`, and the figure's
section in `<out>/summary.md`.

What a figure trains and measures is listed by its `work(options)` (a list of `Work`: one network
and every measurement config the figure needs of it); `compute` performs that list. This is what
makes the paper profile spread over many machines: `python -m reproduce.all --shard I/N` performs
only the I-th of N slices of the union of all figures' work (claimed by atomic file creation in
the shared run directory, `kphases.claims`) and draws nothing; `--plot-only` then draws on any
machine, from the stored CSVs or, where a CSV is missing, read-only from the shared run store.

The runs of each profile are defined once here (`main_runs`), so figures share them:
- smoke: the smoke config (VGG-8 at width 1/8, embedded MNIST, 16 iterations) and a ResNet-10 twin;
- quick: 1,024 iterations of VGG-8 and ResNet-10 (width 1/8) on real MNIST and Fashion-MNIST
  (10,000 train / 2,000 test images from the offline data directory) and VGG-8 on the offline
  CIFAR-10 copy (4,000 / 1,000); without a data directory, the embedded MNIST only (said so);
- paper: VGG-8/11/13/16 and ResNet-10 on MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 from tfds
  with the authors' training (PROTOCOL.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kphases.config import DataConfig, MeasureConfig, ModelConfig, RunConfig, TrainingConfig, measure_profile, profile
from kphases.claims import parse_shard
from kphases.data import DATA_DIR_VARIABLE

REPOSITORY = Path(__file__).resolve().parents[1]
FIGURES_DIR = REPOSITORY / "paper_figures"
PROFILES = ("smoke", "quick", "paper")


@dataclass(frozen=True)
class Options:
    profile: str
    out: Path
    plot_only: bool
    runs_dir: str | None
    data_dir: str | None
    progress: bool
    shard: tuple[int, int] | None = None
    """(I, N): perform only the I-th of N slices of the work (reproduce.all --shard I/N)."""


def parse_options(description: str, argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=PROFILES, default="quick", help="scale of every run (default: quick)")
    parser.add_argument("--out", default=str(FIGURES_DIR), help="where figures, CSVs and summary.md go (default: paper_figures/)")
    parser.add_argument("--plot-only", action="store_true", help="redraw from the stored CSVs in --out; train and measure nothing")
    parser.add_argument("--runs-dir", default=None, help="run directories (default: $KPHASES_RUNS_DIR, else ./runs)")
    parser.add_argument("--data-dir", default=None, help=f"offline <name>.npz directory (default: ${DATA_DIR_VARIABLE})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="reproduce.all only: train and measure the I-th of N slices of every figure's runs, draw nothing")
    args = parser.parse_args(argv)
    try:
        shard = parse_shard(args.shard) if args.shard else None
    except ValueError as error:
        parser.error(str(error))
    return Options(args.profile, Path(args.out), args.plot_only, args.runs_dir, args.data_dir, not args.no_progress, shard)


def data_directory(options: Options) -> Path | None:
    value = options.data_dir or os.environ.get(DATA_DIR_VARIABLE)
    return Path(value) if value and Path(value).is_dir() else None


def has_offline(name: str, options: Options) -> bool:
    directory = data_directory(options)
    return directory is not None and (directory / f"{name}.npz").is_file()


# --- the runs of each profile ------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedRun:
    """One network to train and measure, with the label figures show for it."""

    label: str
    config: RunConfig
    measure: MeasureConfig


QUICK_STEPS = "1024it"  # MNIST-10k: train accuracy ~1.0 by 512, phase 3 visible by 1024 (measured)
QUICK_RESNET_WIDTH = 0.125  # per step on 2 cores: full width ~20x VGG-8, x1/4 ~2x, x1/8 ~1x (benchmarks.training)
QUICK_RESNET_LABEL = "ResNet-10 x1/8"


def _quick_data(name: str, options: Options) -> DataConfig:
    if name == "cifar10":
        return DataConfig(name="cifar10", source="directory")  # the 4,000 / 1,000 lossless copy
    return DataConfig(name=name, source="directory", train_size=10_000, test_size=2_000)


def main_runs(options: Options) -> list[PlannedRun]:
    """Every (dataset, architecture) run of the profile, in the order figures show them."""
    name = options.profile
    measure = measure_profile(name)
    if name == "smoke":
        base = profile("smoke")
        resnet = base.replace(model=ModelConfig("resnet10", width=0.125))
        return [PlannedRun("VGG-8 / MNIST (embedded)", base, measure),
                PlannedRun("ResNet-10 x1/8 / MNIST (embedded)", resnet, measure)]
    if name == "quick":
        # linear_exact is the exact minimiser of the authors' decoder objective; the trained
        # decoder with the authors' 7,820 updates reaches it (decoders figure), at ~90x the cost (benchmarks.measure).
        measure = dataclasses.replace(measure, decoders=("linear_exact",))
        training = TrainingConfig(duration=QUICK_STEPS)
        runs = []
        datasets = [d for d in ("mnist", "fashion_mnist") if has_offline(d, options)]
        if not datasets:
            print(f"quick: no offline MNIST/Fashion-MNIST ({DATA_DIR_VARIABLE} unset or without them): "
                  "using the embedded MNIST subset only", file=sys.stderr)
            config = profile("quick")
            return [PlannedRun("VGG-8 / MNIST (embedded)", config, measure),
                    PlannedRun(f"{QUICK_RESNET_LABEL} / MNIST (embedded)", config.replace(model=ModelConfig("resnet10", QUICK_RESNET_WIDTH)), measure)]
        for dataset in datasets:
            pretty = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}[dataset]
            data = _quick_data(dataset, options)
            runs.append(PlannedRun(f"VGG-8 / {pretty}", RunConfig(data=data, model=ModelConfig("vgg8"), training=training), measure))
            runs.append(PlannedRun(f"{QUICK_RESNET_LABEL} / {pretty}", RunConfig(data=data, model=ModelConfig("resnet10", QUICK_RESNET_WIDTH),
                                                                         training=training), measure))
        return runs
    runs = []
    paper = profile("paper")
    for dataset in ("mnist", "fashion_mnist", "cifar10", "cifar100"):
        for architecture in ("vgg8", "vgg11", "vgg13", "vgg16", "resnet10"):
            config = paper.replace(data=DataConfig(name=dataset, source="tfds"), model=ModelConfig(architecture))
            runs.append(PlannedRun(f"{architecture} / {dataset}", config, measure))
    return runs


def reference_run(options: Options) -> PlannedRun | None:
    """The authors' README run (VGG-8, CIFAR-10, penultimate, colour dominance) at the profile's scale."""
    name = options.profile
    measure = dataclasses.replace(measure_profile(name), transfer=("color_dominance",))
    if name == "paper":
        return PlannedRun("VGG-8 / CIFAR-10 (authors' README run)", profile("paper"), measure)
    if not has_offline("cifar10", options):
        return None
    if name == "smoke":
        smoke = profile("smoke")
        return PlannedRun("VGG-8 / CIFAR-10 (smoke)", smoke.replace(data=DataConfig("cifar10", "directory", train_size=256, test_size=128)), measure)
    config = RunConfig(data=_quick_data("cifar10", options), model=ModelConfig("vgg8"), training=TrainingConfig(duration=QUICK_STEPS))
    return PlannedRun("VGG-8 / CIFAR-10 (4,000-image copy)", config, dataclasses.replace(measure, decoders=("linear_exact", "linear")))


@dataclass(frozen=True)
class Work:
    """One network a figure needs, and every measurement config it needs of it, in order."""

    planned: PlannedRun
    measures: tuple[MeasureConfig, ...]


class ClaimedElsewhere(RuntimeError):
    """Another live worker holds the run (it is being trained or measured right now)."""


def perform(work: Work, options: Options):
    """Train the work's run and take each of its measurements (only what is not done yet);
    return (run, measurement rows). A measurement config's `steps` that the run has no snapshot
    of are dropped (figures ask for fixed steps; short profiles do not reach all of them).

    With `--plot-only` nothing is computed: the run and its cells must already be in the store
    (filled by `--shard` workers or an earlier run), else the error names what is missing.
    Training and measuring hold the run's claim (`kphases.claims`), so two workers sharing a run
    directory never do the same work: the second gets `ClaimedElsewhere`.
    """
    from kphases.claims import Claim, try_claim
    from kphases.data import load_dataset
    from kphases.measurement import measure as run_measure
    from kphases.store import Run, StoreError
    from kphases.training import train

    if options.plot_only:
        try:
            run = Run.open(planned_directory(work.planned, options))
        except StoreError as error:
            raise StoreError(f"--plot-only: {work.planned.label} ({work.planned.config.hash()}) has not been trained: {error}") from None
        if not run.complete:
            raise StoreError(f"--plot-only: run {run.directory} ({work.planned.label}) is not complete; train it first")
    else:
        run = Run.create(options.runs_dir, work.planned.config)
    dataset = load_dataset(work.planned.config.data, options.data_dir)
    claim = None
    if not options.plot_only:
        claim = try_claim(run.directory, "work")
        if not isinstance(claim, Claim):
            raise ClaimedElsewhere(f"{work.planned.label}: run {run.directory} is claimed by {claim.describe()}")
    try:
        run = train(work.planned.config, runs_dir=options.runs_dir, data_dir=options.data_dir, progress=options.progress,
                    dataset=dataset) if not options.plot_only else run
        frame = None
        for config in work.measures:
            if config.steps:
                steps = tuple(step for step in config.steps if step in run.snapshot_steps())
                if not steps:
                    continue  # none of the asked steps exists in this profile's run (an empty tuple would mean all)
                config = dataclasses.replace(config, steps=steps)
            frame = run_measure(run, config, data_dir=options.data_dir, progress=options.progress, dataset=dataset,
                                log=lambda text: None, compute_missing=not options.plot_only)
        if frame is None:
            from kphases.measurement import read_measurements

            frame = read_measurements(run)
    finally:
        if claim is not None:
            claim.release()
    return run, frame


def planned_directory(planned: PlannedRun, options: Options) -> Path:
    from kphases.store import resolve_runs_dir

    return resolve_runs_dir(options.runs_dir) / planned.config.hash()


# --- results files -----------------------------------------------------------------------------

def write_table(table: pd.DataFrame, options: Options, name: str) -> Path:
    options.out.mkdir(parents=True, exist_ok=True)
    path = options.out / f"{name}.csv"
    table.to_csv(path, index=False)
    return path


def read_table(options: Options, name: str) -> pd.DataFrame:
    return pd.read_csv(options.out / f"{name}.csv")


def save_figure(figure, options: Options, name: str) -> Path:
    import matplotlib.pyplot as plt

    options.out.mkdir(parents=True, exist_ok=True)
    png = options.out / f"{name}.png"
    figure.savefig(png, dpi=130, bbox_inches="tight")
    figure.savefig(options.out / f"{name}.pdf", bbox_inches="tight")
    plt.close(figure)
    return png


SUMMARY_HEADER = "# Headline numbers\n\nGenerated by `python -m reproduce.all`; one section per figure.\n"


def update_summary(options: Options, name: str, markdown: str) -> None:
    """Replace the figure's section of `<out>/summary.md` (other figures' sections are kept)."""
    options.out.mkdir(parents=True, exist_ok=True)
    path = options.out / "summary.md"
    text = path.read_text() if path.exists() else SUMMARY_HEADER
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M))
    sections[name] = markdown.strip() + "\n\n"
    body = "".join(f"## {key}\n{value}" for key, value in sections.items())
    path.write_text(SUMMARY_HEADER + "\n" + body)


def run_figure(module_name: str, compute, plot, argv: Sequence[str] | None, description: str) -> str:
    """The `main` of every figure module: compute (unless --plot-only), write CSV, draw, summarise."""
    options = parse_options(description, argv)
    if options.shard is not None:
        raise SystemExit(f"--shard {options.shard[0]}/{options.shard[1]} works on all figures at once: "
                         f"python -m reproduce.all --shard I/N (then --plot-only to draw)")
    if options.plot_only and (options.out / f"{module_name}.csv").is_file():
        table = read_table(options, module_name)
    else:
        table = compute(options)  # with --plot-only: read-only from the run store, or an error naming what is missing
        if not table.empty:
            write_table(table, options, module_name)
    if table.empty:
        # Nothing measured (reference_run without a CIFAR-10 copy, said by compute): what an earlier
        # run wrote to --out for this figure (CSV, PNG, PDF, summary section) stays as it was.
        line = f"{module_name}: skipped, nothing measured; its files in {options.out}, if any, are left as they were"
        print(line)
        return line
    headline, summary = plot(table, options)
    update_summary(options, module_name, f"{description.splitlines()[0]}\n\n{summary}")
    line = f"{module_name}: {options.out / (module_name + '.png')} - {headline}"
    print(line)
    return line


FIGURE_COLUMNS = ["label", "run", "step", "layer", "metric", "split", "value", "instrument", "bn_stats", "update_steps", "data"]


def tidy_rows(planned: PlannedRun, run, frame: pd.DataFrame) -> pd.DataFrame:
    """The run's classifier metrics and measurement rows in one long table labelled for figures."""
    classifier = run.metrics().assign(layer="logits", instrument="classifier", bn_stats="stored", update_steps=run.config.training.duration,
                                      data=f"{run.config.data.name}/{run.config.data.source}", run=run.name)
    measured = frame[frame["metric"] != "seconds"]
    table = pd.concat([classifier, measured], ignore_index=True)
    table["label"] = planned.label
    return table[FIGURE_COLUMNS]


def curve(table: pd.DataFrame, label: str, metric: str, split: str = "test", instrument: str | None = None,
          layer: str | None = None, bn_stats: str | None = None) -> pd.Series:
    """value by step for one (label, metric, split[, instrument, layer, bn_stats]) of a figure table."""
    mask = (table["label"] == label) & (table["metric"] == metric) & (table["split"] == split)
    for column, value in (("instrument", instrument), ("layer", layer), ("bn_stats", bn_stats)):
        if value is not None:
            mask &= table[column] == value
    return table[mask].drop_duplicates("step", keep="last").set_index("step")["value"].sort_index()
