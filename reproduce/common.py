"""What every figure module shares: options, the runs each profile uses, results files, summary.

Every figure module has the same shape (Flax-examples style): `compute(options)` trains and
measures what it needs through the run store (a finished run or measurement cell is reused, so
`reproduce.all` never trains the same network twice) and returns tidy rows; `plot(table, options)`
draws from those rows only and returns a headline; `main(argv)` glues them with `--plot-only`
(redraw from the stored CSV). Outputs: `<out>/<name>.png`, `.pdf`, `.csv` with its record
(`.csv.record.json`: row count and checksum, checked when the CSV is read back), and the figure's
section (`<out>/summary_sections/<name>.md`), from which `<out>/summary.md` is rebuilt. Every file is
written to a temp name and renamed over the old one.

What a figure trains and measures is listed by its `work(options)` (a list of `Work`: one network
and every measurement config it needs of it); `compute` performs that list. `reproduce.plan` turns
every figure's work into one task graph (a training task per run, a measurement task per run and
snapshot step, the `early_phase` lineages as chains) and `reproduce.cluster` executes that graph on
a Ray cluster (`python -m reproduce.all --ray [ADDRESS]`); `--plot-only` then draws on any machine,
from the stored CSVs or, where a CSV is missing, read-only from the shared run store.

The runs of each profile are defined once here (`main_runs`, `replicas`, `reference_run`), so figures share them:
- smoke: the smoke config (VGG-8 at width 1/8, embedded MNIST, 16 iterations) and a ResNet-10 twin;
  the CI path, every figure within 2 minutes;
- quick (the default, no data directory read): 1,024 iterations of VGG-8 at width 1/8 on the embedded
  4,000 / 1,000 MNIST images, one seed; the figures that measure many layers, decoders or runs
  measure 6 of its 11 snapshots (`measured_steps`); no ResNet and no CIFAR-10 reference run. Every figure within 15 minutes on a
  2-core CPU without AVX-512 (`--dry-run` estimates it here);
- full (the committed paper_figures): 1,024 iterations of VGG-8 and ResNet-10 x1/8 on real MNIST
  and Fashion-MNIST (10,000 train / 2,000 test images of the offline copies), 3 seeds, the figures
  that measure many cells at 6 of the 11 snapshots as quick, and 3 seeds of 2,048 iterations
  of VGG-8 on the 30,000 / 10,000-image JPEG q75 CIFAR-10 copy (`cifar10_jpeg_q75.npz`) for
  `reference_run`; a missing offline file is an error naming it. Within 2.5 hours on a 2-core CPU
  without AVX-512 is its budget (`--dry-run` estimates it here; CHANGELOG.md records measured runs);
- paper: VGG-8/11/13/16 and ResNet-10 on MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 from tfds
  with the authors' training (docs/protocol.md, "Training the classifier (paper profile)").
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib
import io
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt
import pandas as pd
from filelock import FileLock

from kphases.config import (
    AUTHORS_DECODER_UPDATE_STEPS,
    DataConfig,
    MeasureConfig,
    ModelConfig,
    RunConfig,
    TrainingConfig,
    measure_profile,
    profile,
)
from kphases.data import DATA_DIR_VARIABLE, load_dataset
from kphases.entry import interrupted, parse_flags, start_tensorflow
from kphases.measurement import CELL_COLUMNS, MEASUREMENT_COLUMNS, MissingMeasurementError, enable_op_determinism
from kphases.measurement import measure as run_measure
from kphases.store import (
    Run,
    StoreError,
    accepted_sha256,
    atomic_path,
    record_mismatch,
    remove_orphan_temps,
    resolve_runs_dir,
    write_json_atomic,
    write_recorded,
    write_text_atomic,
)
from kphases.training import TrainingError, train

REPOSITORY = Path(__file__).resolve().parents[1]
FIGURES_DIR = REPOSITORY / "paper_figures"
PROFILES = ("smoke", "quick", "full", "paper")


ProfileName = Literal["smoke", "quick", "full", "paper"]


@dataclass(frozen=True)
class Options:
    """The options every figure module takes (`python -m reproduce.<figure> --help` lists them)."""

    profile: ProfileName = "quick"
    """Scale of every run: smoke (seconds, tiny data), quick (minutes on 2 CPU cores, embedded MNIST, no download), full (the committed paper_figures: offline real data, 3 seeds, hours on 2 CPU cores), paper (the papers' settings, for GPU machines)."""
    out: Path = Path("results")
    """Where figures, CSVs and summary.md go (untracked by default; the committed reference is paper_figures/: pass --out paper_figures to rewrite it)."""
    plot_only: bool = False
    """Redraw from the stored CSVs in --out (or read-only from the run store where a CSV is missing); train and measure nothing."""
    runs_dir: str | None = None
    """Directory of run directories (default: $KPHASES_RUNS_DIR, else ./runs)."""
    data_dir: str | None = None
    """Directory of offline <name>.npz files (default: $KPHASES_DATA_DIR)."""
    progress: bool = True
    """Show progress bars."""
    recompute: bool = False
    """Compute every figure again even where --out holds its finished CSV for the same work (see `finished_table`)."""


def parse_options(description: str, argv: Sequence[str] | None = None, options_type: type = Options, prog: str | None = None) -> Options:
    """`options_type` (Options or a dataclass extending it) from the command line, by tyro: the flags,
    their help and defaults come from the dataclass's fields, so `--help` lists them all."""
    return parse_flags(options_type, args=None if argv is None else list(argv), description=description, prog=prog)


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


MAIN_STEPS = "1024it"  # train accuracy ~1.0 by 512 on 4,000 or 10,000 MNIST images, the rise visible by 1,024 (measured)
RESNET_WIDTH = 0.125  # per step on 2 cores: full width ~20x VGG-8, x1/4 ~2x, x1/8 ~1x (benchmarks.training)
RESNET_LABEL = "ResNet-10 x1/8"
QUICK_VGG_WIDTH = 0.125  # three phases at x1/8 on the embedded MNIST (information_plane's ReLU run, which this run is)
SEEDS = {"smoke": (0,), "quick": (0,), "full": (0, 1, 2), "paper": (0,)}
"""Training seeds of the main runs: quick one (intervals over test images only), full three; paper as the authors ran it."""
MEASURED_STEPS = (0, 4, 16, 64, 256, 1024)
"""Every second snapshot of quick's and full's doubling schedule: the plateau (0, 4), the fall (16, 64) and the rise (256, 1,024)
keep two points each, at about half the cells. The main run's own measurement (phases, transfer, early_stopping) keeps
every snapshot: the monitor may stop at any of them."""
REFERENCE_STEPS = {"full": "2048it", "paper": None}
"""Length of the CIFAR-10 reference runs (None: the paper profile's 257 epochs); the 65,536-iteration run is its own module."""
REFERENCE_FILE = "cifar10_jpeg_q75.npz"  # 30,000 / 10,000 real CIFAR-10 images, JPEG quality 75


def measured_steps(options: Options) -> tuple[int, ...]:
    """The snapshots a figure that measures many layers, decoders or runs asks for: `MEASURED_STEPS` at quick and full
    (for their time budgets), else all (())."""
    return MEASURED_STEPS if options.profile in ("quick", "full") else ()


def _offline_data(name: str, options: Options) -> DataConfig:
    """10,000 / 2,000 images of an offline copy; the profile fails with one line if the copy is missing."""
    if not has_offline(name, options):
        raise ValueError(
            f"profile {options.profile} needs {name}.npz in the data directory (--data-dir or {DATA_DIR_VARIABLE}); "
            f"not found in {data_directory(options)}. The quick profile needs no data directory."
        )
    return DataConfig(name=name, source="directory", train_size=10_000, test_size=2_000)


def main_runs(options: Options) -> list[PlannedRun]:
    """Every (dataset, architecture) run of the profile at seed 0, in the order figures show them (`replicas` adds the other seeds)."""
    name = options.profile
    measure = measure_profile(name)
    if name == "smoke":
        base = profile("smoke")
        resnet = base.replace(model=ModelConfig("resnet10", width=0.125))
        return [PlannedRun("VGG-8 / MNIST (embedded)", base, measure), PlannedRun("ResNet-10 x1/8 / MNIST (embedded)", resnet, measure)]
    if name == "paper":
        paper = profile("paper")
        return [
            PlannedRun(
                f"{architecture} / {dataset}",
                paper.replace(data=DataConfig(name=dataset, source="tfds"), model=ModelConfig(architecture)),
                measure,
            )
            for dataset in ("mnist", "fashion_mnist", "cifar10", "cifar100")
            for architecture in ("vgg8", "vgg11", "vgg13", "vgg16", "resnet10")
        ]
    # linear_ridge: the closed-form affine decoder with its ridge chosen by GCV on the train split
    # (linear_exact, unregularised, overfits wide block outputs); ~90x cheaper than the trained one (benchmarks.measure).
    measure = dataclasses.replace(measure, decoders=("linear_ridge",))
    training = TrainingConfig(duration=MAIN_STEPS)
    if name == "quick":
        # The embedded 4,000 / 1,000 MNIST images (no download), VGG-8 x1/8 only: the ResNet (4x its step time)
        # showed no phase (iii) at this scale, and every figure that needs a second network has one at full.
        data = DataConfig(name="mnist", source="embedded")
        vgg = ModelConfig("vgg8", width=QUICK_VGG_WIDTH)
        return [PlannedRun("VGG-8 x1/8 / MNIST (embedded)", RunConfig(data=data, model=vgg, training=training), measure)]
    runs = []
    for dataset, pretty in (("mnist", "MNIST"), ("fashion_mnist", "Fashion-MNIST")):
        data = _offline_data(dataset, options)
        runs.append(PlannedRun(f"VGG-8 / {pretty}", RunConfig(data=data, model=ModelConfig("vgg8"), training=training), measure))
        runs.append(
            PlannedRun(
                f"{RESNET_LABEL} / {pretty}", RunConfig(data=data, model=ModelConfig("resnet10", RESNET_WIDTH), training=training), measure
            )
        )
    return runs


SEED_MARK = " / seed "
"""Between a run's label and its seed in the labels of `replicas`."""


def replicas(planned: PlannedRun, options: Options) -> list[PlannedRun]:
    """`planned` at every further seed of the profile (`SEEDS`), labelled '<label> / seed <n>'; empty where the profile has one."""
    return [
        PlannedRun(
            f"{planned.label}{SEED_MARK}{seed}",
            planned.config.replace(training=dataclasses.replace(planned.config.training, seed=seed)),
            planned.measure,
        )
        for seed in SEEDS[options.profile][1:]
    ]


def reference_run(options: Options) -> PlannedRun | None:
    """The authors' README run (VGG-8, CIFAR-10, penultimate, colour dominance) at the profile's scale; None where the
    profile has none (quick: it has no CIFAR-10; smoke: without a `cifar10.npz` in the data directory)."""
    name = options.profile
    measure = dataclasses.replace(measure_profile(name), transfer=("color_dominance",))
    if name == "paper":
        return PlannedRun("VGG-8 / CIFAR-10 (authors' README run)", profile("paper"), measure)
    if name == "quick":
        return None
    if name == "smoke":
        directory = data_directory(options)
        if directory is None or not (directory / "cifar10.npz").is_file():
            return None
        smoke = profile("smoke")
        return PlannedRun(
            "VGG-8 / CIFAR-10 (smoke)", smoke.replace(data=DataConfig("cifar10", "directory", train_size=256, test_size=128)), measure
        )
    # full: the 30,000 / 10,000-image JPEG (q75) copy; decoders and heads are fitted on fixed stratified
    # subsets of 10,000 train / 2,000 test images (the classifier is scored on all of both splits).
    directory = data_directory(options)
    if directory is None or not (directory / REFERENCE_FILE).is_file():
        raise ValueError(
            f"profile full needs {REFERENCE_FILE} in the data directory (--data-dir or {DATA_DIR_VARIABLE}); not found in {directory}"
        )
    config = RunConfig(
        data=DataConfig("cifar10", "directory", file=REFERENCE_FILE),
        model=ModelConfig("vgg8"),
        training=TrainingConfig(duration=REFERENCE_STEPS["full"]),
    )
    # The colour-dominance heads keep the authors' 7,820 updates (their numbers are drawn beside ours); no
    # probe: the figure compares reconstruction, transfer and the classifier.
    return PlannedRun(
        "VGG-8 / CIFAR-10 (30,000 / 10,000 JPEG q75 copy)",
        config,
        dataclasses.replace(
            measure,
            decoders=("linear_ridge", "linear"),
            train_size=10_000,
            test_size=2_000,
            probe=False,
            probe_min_update_steps=AUTHORS_DECODER_UPDATE_STEPS,
        ),
    )


@dataclass(frozen=True)
class Work:
    """One network a figure needs, and every measurement config it needs of it, in order."""

    planned: PlannedRun
    measures: tuple[MeasureConfig, ...]


def perform(work: Work, options: Options):
    """Train the work's run and take each of its measurements (only what is not done yet);
    return (run, measurement rows). A measurement config's `steps` that the run has no snapshot
    of are dropped (figures ask for fixed steps; short profiles do not reach all of them).

    With `--plot-only` nothing is computed: the run and its cells must already be in the store
    (filled by `--ray` or an earlier run), else the error names what is missing. Two processes
    on one run directory do not train it twice (`train` holds the run's file lock), nor measure a cell
    twice (`measure` holds a lock per snapshot step; `kphases.store`).
    """
    if options.plot_only:
        try:
            run = Run.open(planned_directory(work.planned, options))
        except StoreError as error:
            raise StoreError(f"--plot-only: {work.planned.label} ({work.planned.config.hash()}) has not been trained: {error}") from None
        if not run.complete:
            raise StoreError(f"--plot-only: run {run.directory} ({work.planned.label}) is not complete; train it first")
    dataset = load_dataset(work.planned.config.data, options.data_dir)
    if not options.plot_only:
        run = train(work.planned.config, runs_dir=options.runs_dir, data_dir=options.data_dir, progress=options.progress, dataset=dataset)
    frames = []
    for config in work.measures:
        config = steps_of_run(config, run.snapshot_steps())
        if config is None:
            continue  # none of the asked steps exists in this profile's run (an empty tuple would mean all)
        frames.append(
            run_measure(
                run,
                config,
                data_dir=options.data_dir,
                progress=options.progress,
                dataset=dataset,
                log=lambda text: None,
                compute_missing=not options.plot_only,
                requested_only=True,
            )
        )
    # The rows this work asked for, not everything measured of the run so far: a figure's table must not
    # depend on which other figures (or earlier invocations) measured the same run first.

    frames = [frame for frame in frames if len(frame)]
    frame = (
        pd.concat(frames, ignore_index=True).drop_duplicates(CELL_COLUMNS, ignore_index=True)
        if frames
        else pd.DataFrame(columns=list(MEASUREMENT_COLUMNS))
    )
    return run, frame


def steps_of_run(config: MeasureConfig, snapshot_steps: Sequence[int]) -> MeasureConfig | None:
    """`config` limited to the asked steps the run has (all of its steps if it asks for none); None if it has none of them."""
    if not config.steps:
        return config
    steps = tuple(step for step in config.steps if step in snapshot_steps)
    return dataclasses.replace(config, steps=steps) if steps else None


def planned_directory(planned: PlannedRun, options: Options) -> Path:
    return resolve_runs_dir(options.runs_dir) / planned.config.hash()


# --- results files -----------------------------------------------------------------------------


class TableError(ValueError):
    """A figure's CSV in --out is damaged (torn, unparsable, or not what its record says); the message names the file."""


def write_table(table: pd.DataFrame, options: Options, name: str) -> Path:
    """Write `<out>/<name>.csv` and its record atomically: a kill leaves the old file or the new one, never a torn one."""
    return write_table_file(options.out / f"{name}.csv", table)


def write_table_file(path: Path, table: pd.DataFrame, float_format: str | None = None) -> Path:
    """Write a results CSV atomically with its record (`<name>.csv.record.json`: row count, size, sha256),
    which `read_table_file` checks, so rows cut at a line end or edited values are named, not drawn."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_recorded(path, table.to_csv(index=False, float_format=float_format).encode(), len(table))
    return path


def read_table(options: Options, name: str) -> pd.DataFrame:
    """`<out>/<name>.csv`, refused (TableError) if a row is torn, has another number of fields than the
    header, or the file is not what its record says."""
    return read_table_file(options.out / f"{name}.csv")


def read_table_file(path: Path) -> pd.DataFrame:
    """A results CSV, refused (TableError, naming the file) if a row is torn or has another number of fields
    than the header, or if its record does not accept it (rows cut at a line end, values edited). A CSV
    without a record (written before records existed) is read with an UnrecordedFileWarning."""
    data = path.read_bytes()
    text = data.decode(errors="replace")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    redo = "redraw it without --plot-only, or restore it from git"
    if not header or not text.endswith("\n"):
        raise TableError(f"{path} is cut off (its last line has no end): {redo}")
    rows = 0
    for fields in reader:
        if len(fields) != len(header):
            raise TableError(
                f"{path} line {reader.line_num} has {len(fields)} fields, the header {len(header)}: the file is damaged; {redo}"
            )
        rows += 1
    mismatch = record_mismatch(path, data, rows)
    if mismatch:
        raise TableError(f"{path} {mismatch}: rows were cut or values edited after it was written; {redo}")
    return pd.read_csv(io.StringIO(text))


def save_figure(figure, options: Options, name: str) -> Path:
    """Write `<out>/<name>.png` and `.pdf`, each to a temp file renamed over it: a kill leaves the old figure or the new one."""
    options.out.mkdir(parents=True, exist_ok=True)
    png = options.out / f"{name}.png"
    with atomic_path(png, suffix=".png") as temp:
        figure.savefig(temp, format="png", dpi=130, bbox_inches="tight")
    with atomic_path(options.out / f"{name}.pdf", suffix=".pdf") as temp:
        figure.savefig(temp, format="pdf", bbox_inches="tight")
    plt.close(figure)
    return png


SUMMARY_HEADER = "# Headline numbers\n\nGenerated by `python -m reproduce.all`; one section per figure.\n"
SECTIONS_DIRECTORY = "summary_sections"
"""`<out>/summary_sections/<figure>.md`: each figure's section; `summary.md` is rebuilt from all of them."""
_SECTION_PATTERN = re.compile(r"^## (\S+)\n(.*?)(?=^## |\Z)", flags=re.S | re.M)


def update_summary(options: Options, name: str, markdown: str) -> None:
    """Write the figure's section to `<out>/summary_sections/<name>.md`, then rebuild `<out>/summary.md`
    from every section file there, each write atomic and the two under one lock: a run of one figure
    never drops another's section, and a kill leaves the old summary whole.

    Sections of a `summary.md` written before section files existed are kept as section files first."""
    sections = options.out / SECTIONS_DIRECTORY
    sections.mkdir(parents=True, exist_ok=True)
    summary = options.out / "summary.md"
    with FileLock(str(sections / ".lock")):
        existing = dict(_SECTION_PATTERN.findall(summary.read_text())) if summary.exists() else {}
        for key, text in existing.items():
            if not (sections / f"{key}.md").exists():
                write_text_atomic(sections / f"{key}.md", text.strip() + "\n")
        write_text_atomic(sections / f"{name}.md", markdown.strip() + "\n")
        present = {path.stem: path.read_text() for path in sections.glob("*.md")}
        order = [key for key in existing if key in present] + sorted(key for key in present if key not in existing)
        body = "".join(f"## {key}\n{present[key].strip()}\n\n" for key in order)
        write_text_atomic(summary, SUMMARY_HEADER + "\n" + body)


def run_figure(module_name: str, compute, plot, argv: Sequence[str] | Options | None, description: str) -> str:
    """The `main` of every figure module: compute (unless --plot-only), write CSV, draw, summarise.
    `argv`: the command line, or options already parsed (`reproduce.all` passes its own).

    Bad input and a store in the wrong state (an untrained run for --plot-only, a corrupt snapshot, a
    damaged CSV, a missing measurement) end it with one line on stderr naming the problem and exit
    status 2, as the kphases CLI does; KPHASES_DEBUG=1 shows the traceback instead. TensorFlow's op
    determinism is on before anything is computed, so the numbers do not depend on which process
    (this one, a Ray worker, an earlier `kphases measure`) computed them."""
    options = argv if isinstance(argv, Options) else parse_options(description, argv, prog=f"python -m reproduce.{module_name}")
    start_tensorflow()

    enable_op_determinism()
    for directory in (options.out, options.out / SECTIONS_DIRECTORY):
        remove_orphan_temps(directory, recursive=False)  # left by a figure writer that was killed
    try:
        return _run_figure(module_name, compute, plot, options, description)
    except (ValueError, StoreError, TrainingError, MissingMeasurementError, OSError) as error:
        if os.environ.get("KPHASES_DEBUG"):
            raise
        print(f"error: {module_name}: " + " ".join(str(error).split()), file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt as error:
        raise SystemExit(interrupted(error, f"figure {module_name}")) from None


def _run_figure(module_name: str, compute, plot, options: Options, description: str) -> str:
    finished = None if options.recompute else finished_table(module_name, options)
    if options.plot_only and (options.out / f"{module_name}.csv").is_file():
        table = read_table(options, module_name)
    elif finished is not None:
        table = finished
        print(
            f"{module_name}: its CSV in {options.out} is finished for this work ({COMPLETION_SUFFIX}); drawn from it (--recompute to redo)"
        )
    else:
        table = compute(options)  # with --plot-only: read-only from the run store, or an error naming what is missing
        if not table.empty:
            write_table(table, options, module_name)
            record_finished(module_name, options)
    if table.empty:
        # Nothing measured (reference_run without a CIFAR-10 copy, said by compute): what an earlier
        # run wrote to --out for this figure (CSV, PNG, PDF, summary section) stays as it was.
        line = f"{module_name}: skipped, nothing measured; its files in {options.out}, if any, are left as they were"
        print(line)
        return line
    headline, summary = plot(table, options)
    # the headline line too, so that every number a reader is told (and the README quotes) is in the results
    update_summary(options, module_name, f"{description.splitlines()[0]}\n\nHeadline: {headline}\n\n{summary}")
    line = f"{module_name}: {options.out / (module_name + '.png')} - {headline}"
    print(line)
    return line


COMPLETION_SUFFIX = ".finished.json"
"""`<out>/<figure>.finished.json`: the work a figure's CSVs were computed for, and the checksum each CSV's
own record (`<file>.record.json`, `kphases.store`) accepted when the figure finished."""


def work_fingerprint(module_name: str, options: Options) -> str:
    """What a figure computes at these options: its runs (by config hash) and measurement configs, or, for a
    figure that lists no work, its profile. The same fingerprint and intact CSVs mean the same table."""
    module = importlib.import_module(f"reproduce.{module_name}")
    items = module.work(options) if hasattr(module, "work") else []
    described = {
        "figure": module_name,
        "profile": options.profile,
        "work": [[item.planned.label, item.planned.config.hash(), [measure.to_dict() for measure in item.measures]] for item in items],
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def _figure_files(module_name: str, options: Options) -> list[Path]:
    """The CSVs a figure's compute writes: `<figure>.csv` and, where it keeps them, `<figure>_per_image.csv`."""
    return [path for path in (options.out / f"{module_name}.csv", options.out / f"{module_name}_per_image.csv") if path.is_file()]


def record_finished(module_name: str, options: Options) -> None:
    """After a figure's CSVs are written with their records: record the work they were computed for and the
    checksum each one's record accepts (a CSV its record does not accept is not recorded as finished)."""
    files = {path.name: accepted_sha256(path) for path in _figure_files(module_name, options)}
    if not files or None in files.values():
        return
    write_json_atomic(
        options.out / f"{module_name}{COMPLETION_SUFFIX}", {"fingerprint": work_fingerprint(module_name, options), "files": files}
    )


def finished_table(module_name: str, options: Options) -> pd.DataFrame | None:
    """The figure's table from `<out>/<figure>.csv` if an earlier invocation finished it for the same work, else None.

    Finished and checked: the completion record names this work's fingerprint (`work_fingerprint`) and
    every CSV it lists is present, accepted by its own record, with the checksum listed (a CSV edited,
    torn, missing or without its record since is recomputed), so a killed `reproduce.all` run again
    redraws the figures it had finished instead of recomputing their driver-side work. The run store
    already resumes runs and measurement cells."""
    path = options.out / f"{module_name}{COMPLETION_SUFFIX}"
    if options.plot_only or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a torn record: recompute
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or not files or record.get("fingerprint") != work_fingerprint(module_name, options):
        return None
    if any(accepted_sha256(options.out / name) != digest for name, digest in files.items()):
        return None
    return read_table(options, module_name)


FIGURE_COLUMNS = ["label", "run", "step", "layer", "metric", "split", "value", "instrument", "bn_stats", "update_steps", "data"]


def tidy_rows(planned: PlannedRun, run, frame: pd.DataFrame) -> pd.DataFrame:
    """The run's classifier metrics and measurement rows in one long table labelled for figures."""
    classifier = run.metrics().assign(
        layer="logits",
        instrument="classifier",
        bn_stats="stored",
        update_steps=run.config.training.duration,
        data=_classifier_data(run.config.data, run.provenance().get("data", {})),
        run=run.name,
    )
    measured = frame[frame["metric"] != "seconds"]
    table = pd.concat([classifier, measured], ignore_index=True)
    table["label"] = planned.label
    return table[FIGURE_COLUMNS]


def _classifier_data(data: DataConfig, trained_on: dict) -> str:
    """The classifier rows' `data`: dataset/source, the npz file if one is named, the label noise if any, then
    the sizes of the splits the classifier was trained and scored on and their fingerprint (from the run's
    provenance, `Dataset.describe`; left out for a run that recorded none)."""
    text = f"{data.name}/{data.source}" + (f":{data.file}" if data.file else "")
    text += f" label_noise={data.label_noise:g}" if data.label_noise else ""
    if {"train_size", "test_size", "fingerprint"} <= set(trained_on):
        text += f" train={trained_on['train_size']} test={trained_on['test_size']} fingerprint={trained_on['fingerprint']}"
    return text


def curve(
    table: pd.DataFrame,
    label: str,
    metric: str,
    split: str = "test",
    instrument: str | None = None,
    layer: str | None = None,
    bn_stats: str | None = None,
) -> pd.Series:
    """value by step for one (label, metric, split[, instrument, layer, bn_stats]) of a figure table."""
    mask = (table["label"] == label) & (table["metric"] == metric) & (table["split"] == split)
    for column, value in (("instrument", instrument), ("layer", layer), ("bn_stats", bn_stats)):
        if value is not None:
            mask &= table[column] == value
    return table[mask].drop_duplicates("step", keep="last").set_index("step")["value"].sort_index()
