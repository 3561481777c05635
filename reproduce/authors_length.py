"""Figure `authors_length`: the authors' README run at its full length, 65,536 iterations, beside theirs.

The first paper's public README reports, for VGG-8 on CIFAR-10 (penultimate layer, linear decoder,
BatchNorm in batch mode), the reconstruction loss, the colour-dominance transfer accuracy and the
classifier's accuracies at iterations 0 ... 65,536 (docs/protocol.md, section "The authors'
published numbers"). `reference_run` stops where a profile's budget ends; this figure runs the
same network to the authors' last reported iteration, so the two curves can be compared where their
headline lies (the rise after the minimum).

What is run: VGG-8 on the 30,000-image train split of the JPEG (quality 75) CIFAR-10 copy
`cifar10_jpeg_q75.npz` (offline data directory), all its 10,000 test images, 65,536 iterations
(280 epochs), snapshots 0, 2, 4, ..., 65,536 (17), one run per seed (`--seeds`, default 0,1,2).
Measured at every snapshot: the ridge decoder (`linear_ridge`), the linear probe and the
colour-dominance head, fitted on a fixed stratified subset of 10,000 train images and evaluated on
a fixed stratified subset of 2,000 test images (the same for every seed and step); for seed 0 also
the authors' trained `linear` decoder (7,820 Adam updates) at every iteration the authors report.
The classifier's accuracies are on the full splits, so the summary's table gives the train
accuracy at each snapshot beside the reconstruction loss: where the rise happens relative to
fitting the train set.

What the reader gets: `authors_length.png` (reference_run's four panels), `authors_length.csv`,
and a section of `summary.md` with the side-by-side table at every iteration the authors report,
the per-snapshot table, and the phase verdict: across seeds with 3 or more, over the test images
of one seed with one (the summary says which noise its intervals carry). The numbers are in those files, not here.

Not part of `python -m reproduce.all`: training alone is about 65,536 VGG-8 steps per seed, hours
on a 2-core CPU (the dry-run of `reproduce.all` prices a step). It resumes from the run store after
a kill; a seed already trained and measured is read, not recomputed, so seeds can be added one at
a time (`--seeds 0`, then `--seeds 0,1`, ...) and committed as each finishes.

    python -m reproduce.authors_length --out paper_figures [--seeds 0,1,2] [--plot-only]
    python -m reproduce.authors_length --profile smoke --out /tmp/x   # 64 iterations on 256 images, the test path
"""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from kphases.config import AUTHORS_DECODER_UPDATE_STEPS, DataConfig, ModelConfig, RunConfig, TrainingConfig, measure_profile
from reproduce import reference_run
from reproduce.common import Options, PlannedRun, Work, data_directory, parse_options, run_figure

NAME = "authors_length"
FILE = "cifar10_jpeg_q75.npz"
SMOKE_FILE = "cifar10.npz"
ITERATIONS = 65_536
SMOKE_ITERATIONS = 64


@dataclass(frozen=True)
class LengthOptions(Options):
    """The figure options, and which seeds to train and measure."""

    seeds: str = "0,1,2"
    """Seeds to train and measure, comma-separated (each is its own run; a finished one is read from the run store)."""


def seeds_of(options: Options) -> tuple[int, ...]:
    text = getattr(options, "seeds", "0,1,2")
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--seeds {text!r}: expected comma-separated non-negative integers, such as 0,1,2") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: expected distinct non-negative integers, such as 0,1,2")
    return seeds


def run_config(options: Options, seed: int) -> RunConfig:
    """The network of one seed: the authors' README run on the 30,000-image copy, at their length."""
    if options.profile == "smoke":
        data = DataConfig("cifar10", "directory", train_size=256, test_size=128)
        return RunConfig(data=data, model=ModelConfig("vgg8"), training=TrainingConfig(duration=f"{SMOKE_ITERATIONS}it", seed=seed))
    data = DataConfig("cifar10", "directory", file=FILE)
    return RunConfig(data=data, model=ModelConfig("vgg8"), training=TrainingConfig(duration=f"{ITERATIONS}it", seed=seed))


def work(options: Options) -> list[Work]:
    """One run per seed with the ridge decoder, probe and colour head at every snapshot; seed 0 also
    with the authors' trained decoder at the iterations they report."""
    smoke = options.profile == "smoke"
    measure = dataclasses.replace(measure_profile("smoke" if smoke else "full"), transfer=("color_dominance",))
    if not smoke:
        # reference_run's measurement at full (fixed subsets; the colour heads keep the authors' 7,820
        # updates), and the probe as well, so the long run shows what the classifier's features still separate
        measure = dataclasses.replace(measure, train_size=10_000, test_size=2_000, probe_min_update_steps=AUTHORS_DECODER_UPDATE_STEPS)
    items = []
    for seed in seeds_of(options):
        seeded = dataclasses.replace(measure, decoders=("linear_ridge",), seed=seed)
        measures = [seeded]
        if seed == 0:
            trained = dataclasses.replace(seeded, decoders=("linear",), probe=False, transfer=(), steps=tuple(reference_run.AUTHORS))
            measures.append(trained)
        items.append(Work(PlannedRun(f"seed {seed}", run_config(options, seed), seeded), tuple(measures)))
    return items


def compute(options: Options) -> pd.DataFrame:
    file = SMOKE_FILE if options.profile == "smoke" else FILE
    directory = data_directory(options)
    if directory is None or not (directory / file).is_file():
        print(f"{NAME}: skipped: no {file} in the offline data directory (set KPHASES_DATA_DIR or --data-dir)")
        return pd.DataFrame(columns=["label"])
    return reference_run.perform_all(work(options), options, NAME)


def snapshot_table(table: pd.DataFrame) -> str:
    """Every snapshot: reconstruction loss (ridge, mean and range over seeds), train and test accuracy,
    and the authors' numbers where they report that iteration."""
    selection = dict(instrument="linear_ridge", bn_stats="batch", layer="penultimate")
    reconstruction = reference_run.seed_curves(table, "reconstruction_mse", **selection)
    train = reference_run.seed_curves(table, "classifier_accuracy", "train")
    test = reference_run.seed_curves(table, "classifier_accuracy", "test")
    lines = [
        f"Every snapshot ({reconstruction.shape[1]} seed(s); ours: mean, min..max over seeds; authors' reconstruction divided by "
        f"{reference_run.AUTHORS_TEST_BATCHES}):",
        "",
        "| iteration | reconstruction (ours) | authors | train acc (ours) | authors | test acc (ours) | authors |",
        "|---|---|---|---|---|---|---|",
    ]
    for step in reconstruction.index:
        theirs = reference_run.AUTHORS.get(int(step))
        ours = reconstruction.loc[step]
        cells = [
            f"{ours.mean():.4f} ({ours.min():.4f}..{ours.max():.4f})",
            f"{theirs[0] / reference_run.AUTHORS_TEST_BATCHES:.4f}" if theirs else "",
            f"{train.loc[step].mean():.3f}" if step in train.index else "",
            f"{theirs[3]:.3f}" if theirs else "",
            f"{test.loc[step].mean():.3f}" if step in test.index else "",
            f"{theirs[2]:.3f}" if theirs else "",
        ]
        lines.append(f"| {int(step)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(table: pd.DataFrame, options: Options):
    headline, markdown = reference_run.plot(table, options, name=NAME, scale="the authors' length" if options.profile != "smoke" else None)
    return headline, markdown + "\n\n" + snapshot_table(table)


def main(argv: Sequence[str] | Options | None = None) -> str:
    options = argv if isinstance(argv, Options) else parse_options(__doc__, argv, LengthOptions, prog=f"python -m reproduce.{NAME}")
    return run_figure(NAME, compute, plot, options, __doc__)


if __name__ == "__main__":
    main()
