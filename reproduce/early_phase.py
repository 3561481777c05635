"""Figure `early_phase`: IMP with rewinding, rewind-point perturbations, pre-training tasks, early statistics.

Frankle, Schwab & Morcos, "The Early Phase of Neural Network Training" (ICLR 2020;
docs/early_phase.md), with `kphases.early_phase` on the run store (every training is reused across reruns):
- (a) test accuracy against sparsity after iterative magnitude pruning (global over the conv kernels,
  and the output layer's for ResNets) with the survivors rewound to iteration k, one line per k (k = 0: lottery ticket);
- (b) at one sparsity: the unperturbed rewind to k next to the same mask and retraining after a
  perturbation of the iteration-k weights (reinit, reinit keeping signs, shuffle within layers
  with and without signs kept, Gaussian noise of the initialisation's scale);
- (c) at one sparsity: rewinding to weights pre-trained for k iterations on random labels, blurred
  images or rotation prediction, next to rewinding to iterations 0 and k of the real task;
- (d) the dense run's first iterations on a log step axis: fraction of signs flipped and test
  accuracy (left axis, 0..1), relative distance from initialisation and gradient norm (right axis;
  the distance passes 1); the summary adds the change per iteration and train accuracy.

    python -m reproduce.early_phase [--profile smoke|quick|paper] [--out DIR] [--runs-dir DIR] [--data-dir DIR]

Every profile uses open_lth's initialisation (kaiming normal kernels, BatchNorm scales uniform in
[0, 1)) and open_lth's output-layer rule (not pruned for VGG-style networks, pruned for ResNets).
docs/early_phase.md lists every remaining departure from the paper and open_lth.

Profiles (the figure title states the scale):
- smoke: VGG-8 x1/8 on 256 embedded MNIST images, 16 iterations, k in {0, 4}, one round, one seed; < 1 min.
- full: VGG-8 x1/4 on the offline CIFAR-10 copy (4,000 / 1,000 images), 512 iterations (16 epochs)
  of the paper's recipe scaled (lr 0.1 / 10 at 256 and 384, momentum 0.9, weight decay 1e-4, flips
  and crops, batch 128), k in {0, 64}, 3 rounds of 50% (87.5% sparse; the paper prunes 20% a
  round, 9 rounds to get there), perturbations and pre-training at k = 64 and 87.5%, seeds 0-2
  (the sign-keeping comparison's extra seeds, `PERTURBATION_SEEDS`, are left out: at this scale the
  premise they would serve, rewinding to 64 beating rewinding to 0, does not hold). ResNet-20 is 18-40x slower per step on CPU
  (`python -m benchmarks.training`), too slow for this budget.
- quick: the same experiment at half full's width and length with one condition of each kind
  (`CPU_SCALES`: VGG-8 x1/8, 256 iterations, k in {0, 32}, 2 rounds of 50% (75% sparse), random
  reinit and shuffle-keeping-signs at k = 32, pre-training on blurred images) on the embedded
  4,000 / 1,000 MNIST images, one seed: 9 runs. Every panel is drawn; the seed-level table prints
  each comparison's difference and says it needs 3 seeds for a verdict. Chosen over 3 seeds of
  fewer conditions because each run's set-up costs about as much as its 256 steps, so the time
  goes with the number of runs, and 3 seeds in this budget would leave panels (b) and (c) empty.
  The CSV and summary.md hold the numbers; `python -m reproduce.all --dry-run` estimates the time.
- paper: ResNet-20 on CIFAR-10 (tfds), open_lth's recipe (160 epochs, lr 0.1 / 10 at 80 and 120
  epochs, momentum 0.9, weight decay 1e-4, flips and crops, batch 128), 20% a round for 12 rounds
  (93% sparse), k in {0, 100, 250, 500, 1000, 2000}, perturbations and pre-training at k = 500 and
  rounds 4, 8, 12, seeds 0-2. For a GPU machine.

How to read it (docs/early_phase.md): every comparison is paired by seed (same dense run, mask
and data order) and judged by t tests over seeds with a 90% interval (`kphases.early_phase_verdicts`).
Frankle et al.'s perturbation results rest on a premise, that rewinding to k beats rewinding to 0;
the figure tests it first, at the scale run, and where it does not hold the perturbation and
pre-training rows say "not tested" instead of comparing with the paper. "Costs nothing" is an
equivalence test (TOST) with a margin of test accuracy (`EQUIVALENCE_MARGIN`, with why) printed
beside each verdict; a difference that is neither shown nor shown to be within the margin is
"undecided", never "no difference". The committed
numbers and verdicts are in `paper_figures/early_phase.csv` and the `early_phase` section of
`paper_figures/summary.md` (not copied here, so they cannot drift). On another CPU, means move by
up to about 0.01 and one seed's accuracy by up to 0.03 (CHANGELOG).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from kphases.config import DataConfig, ExperimentConfig, ModelConfig, RunConfig, TrainingConfig, profile
from kphases.data import load_dataset
from kphases.early_phase import dense_schedule, last_iteration, run_experiment
from kphases.early_phase_verdicts import (
    EQUIVALENCE_MARGIN,
    LEVEL,
    MIN_SEEDS,
    TOO_FEW,
    SeedComparison,
    compare_seeds,
    paper_verdict,
    premise_holds,
    premise_verdict,
)
from reproduce.common import Options, has_offline, run_figure, save_figure
from reproduce.plotting import grid, log_step_axis, step_position

NAME = "early_phase"
PERTURBATION_NAMES = {
    "reinit": "random reinit",
    "reinit_signs": "reinit, signs kept",
    "shuffle": "shuffle in layer",
    "shuffle_signs": "shuffle, signs kept",
    "noise": "Gaussian noise (init scale)",
}
TASK_NAMES = {"random_labels": "random labels", "blur": "blurred images", "rotation": "rotation prediction"}
SEEDS = {"smoke": (0,), "quick": (0,), "full": (0, 1, 2), "paper": (0, 1, 2)}
"""Seeds of the whole experiment per profile. quick one: every panel drawn, its comparisons printed with
"needs 3 seeds" instead of a verdict (a run's set-up, not its 256 steps, is most of its time, so the time
goes with the number of runs: three seeds of fewer conditions would have left most panels empty)."""
PERTURBATION_SEEDS = {"smoke": (), "quick": (), "full": (), "paper": ()}
"""Further seeds that train only what the sign-keeping comparison needs (the dense run, the IMP lineage
of the perturbation rewind point, and the `EXTRA_SEED_PERTURBATIONS`): an equivalence test over seeds
needs a narrow interval, and the exact sign-flip check cannot go below 2 / 2^n (0.25 at 3 seeds, 0.031 at 6).
None in any profile now: full had 3-5 until its premise (rewinding to k beats rewinding to 0) was found not to hold
at its scale, and their 18 runs went to the full profile's time budget; give a profile some where the premise holds."""
EXTRA_SEED_PERTURBATIONS = ("reinit_signs", "shuffle_signs")
"""The perturbations whose reading may be "costs nothing" (an equivalence claim, which needs more seeds
than a clear loss); the others are left at SEEDS for the budget."""


CPU_SCALES = {
    "quick": {
        "width": 0.125,
        "iterations": 256,
        "rewind_steps": (0, 32),  # the lottery ticket and the k that panels b and c compare with it; a middle k only adds to panel a
        "rounds": 2,  # 75% sparse; each round is one more run per rewind point
        "perturbations": ("reinit", "shuffle_signs"),  # one that loses clearly, one whose reading may be "costs nothing"
        "tasks": ("blur",),  # the pre-training task Frankle et al. found to help
    },
    "full": {
        "width": 0.25,
        "iterations": 512,
        "rewind_steps": (0, 64),
        "rounds": 3,
        "perturbations": tuple(PERTURBATION_NAMES),
        "tasks": tuple(TASK_NAMES),
    },
}
"""The CPU profiles' network width, training length, rewind points, IMP rounds (the perturbations and pre-trained
starts at the last), perturbations and pre-training tasks (the learning-rate drops at 1/2 and 3/4 of the length);
quick halves full's length and width and keeps one condition of each kind it compares, for time."""


def experiment(options: Options):
    """The profile's experiment (dense run without its schedule yet) and the scale shown in the title.

    Every profile follows open_lth's CIFAR setting where the suite can: its initialisation
    (`ModelConfig.initialisation="open_lth"`) and its rule for the output layer (pruned for ResNets,
    not for VGG-style networks). docs/early_phase.md lists what still departs.
    """
    name = options.profile
    if name == "smoke":
        smoke = profile("smoke")
        base = smoke.replace(
            model=dataclasses.replace(smoke.model, initialisation="open_lth"),
            training=TrainingConfig(duration="16it", batch_size=32, learning_rate=0.05, weight_decay=1e-4),
        )
        return ExperimentConfig(
            base=base,
            rewind_steps=(0, 4),
            rounds=1,
            prune_fraction=0.2,
            perturbation_rewind_step=4,
            perturbation_rounds=(1,),
            pretrain_steps=4,
            data_rounds=(1,),
            statistics_examples=64,
            prune_output_layer=False,
        ), "smoke: VGG-8 x1/8, 256 MNIST images, 16 iterations"
    if name in ("quick", "full"):
        if name == "quick":  # the embedded images: no download
            data, what = DataConfig(name="mnist", source="embedded"), "embedded MNIST 4,000 images"
        elif has_offline("cifar10", options):
            data, what = DataConfig(name="cifar10", source="directory"), "CIFAR-10 4,000-image copy"
        else:
            raise ValueError(
                "early_phase full: needs cifar10.npz (the 4,000 / 1,000-image copy) in the data directory (--data-dir or KPHASES_DATA_DIR)"
            )
        scale = CPU_SCALES[name]
        last = scale["iterations"]
        training = TrainingConfig(
            duration=f"{last}it",
            batch_size=128,
            learning_rate=0.1,
            momentum=0.9,
            weight_decay=1e-4,
            lr_milestones=(f"{last // 2}it", f"{last * 3 // 4}it"),
            augment=True,
        )
        base = RunConfig(data=data, model=ModelConfig("vgg8", width=scale["width"], initialisation="open_lth"), training=training)
        k, rounds = scale["rewind_steps"][-1], scale["rounds"]
        return ExperimentConfig(
            base=base,
            rewind_steps=scale["rewind_steps"],
            rounds=rounds,
            prune_fraction=0.5,
            perturbations=scale["perturbations"],
            perturbation_rewind_step=k,
            perturbation_rounds=(rounds,),
            tasks=scale["tasks"],
            pretrain_steps=k,
            data_rounds=(rounds,),
            prune_output_layer=False,
        ), f"{name}: VGG-8 x1/{round(1 / scale['width'])}, {what}, {last} iterations, 50% pruned per round"
    training = TrainingConfig(
        duration="160ep", batch_size=128, learning_rate=0.1, momentum=0.9, weight_decay=1e-4, lr_milestones=("80ep", "120ep"), augment=True
    )
    base = RunConfig(
        data=DataConfig(name="cifar10", source="tfds"), model=ModelConfig("resnet20", initialisation="open_lth"), training=training
    )
    return ExperimentConfig(
        base=base,
        rewind_steps=(0, 100, 250, 500, 1000, 2000),
        rounds=12,
        prune_fraction=0.2,
        perturbation_rewind_step=500,
        perturbation_rounds=(4, 8, 12),
        pretrain_steps=500,
        data_rounds=(4, 8, 12),
        prune_output_layer=True,
    ), "paper: ResNet-20, CIFAR-10, 160 epochs, 20% pruned per round"


def perturbation_only(planned):
    """The part of `planned` an extra seed trains: the dense run, the IMP lineage of the perturbation
    rewind point up to its last perturbation round, and the `EXTRA_SEED_PERTURBATIONS`."""
    k, rounds = planned.perturbation_rewind_step, max(planned.perturbation_rounds)
    return dataclasses.replace(
        planned,
        rewind_steps=(k,),
        rounds=rounds,
        pretrain_steps=k,
        tasks=(),
        data_rounds=(rounds,),
        perturbations=tuple(p for p in planned.perturbations if p in EXTRA_SEED_PERTURBATIONS),
    )


def seeded_experiments(planned, last: int, profile_name: str):
    """(seed, experiment with its dense schedule and seed, whether it is the full experiment) for every
    seed of the profile: the full experiment for `SEEDS`, `perturbation_only` for `PERTURBATION_SEEDS`.
    The one list both the figure and the task graph (`reproduce.plan`) go through."""
    parts = [(seed, planned, True) for seed in SEEDS[profile_name]]
    parts += [(seed, perturbation_only(planned), False) for seed in PERTURBATION_SEEDS[profile_name]]
    for seed, part, full in parts:  # per seed its own initialisation, data order, masks and perturbations
        yield (
            seed,
            dataclasses.replace(
                part,
                base=part.base.replace(
                    schedule=dense_schedule(part.rewind_steps, last), training=dataclasses.replace(part.base.training, seed=seed)
                ),
            ),
            full,
        )


def compute(options: Options) -> pd.DataFrame:
    planned, setting = experiment(options)
    dataset = load_dataset(planned.base.data, options.data_dir)
    last = last_iteration(planned.base, dataset)
    log = print if options.progress else (lambda text: None)
    tables = []
    for seed, seeded, full in seeded_experiments(planned, last, options.profile):
        table = run_experiment(
            seeded,
            runs_dir=options.runs_dir,
            data_dir=options.data_dir,
            progress=options.progress,
            log=log,
            dataset=dataset,
            read_only=options.plot_only,
        )
        table["seed"] = seed
        table["full_experiment"] = full  # False: an extra seed of the sign-keeping comparison only
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    table["setting"] = setting
    table["test_images"] = len(dataset.y_test)
    return table


def _test_images(table: pd.DataFrame) -> int:
    return int(table["test_images"].iloc[0]) if "test_images" in table else 0


def _by_seed(table: pd.DataFrame, experiment: str, variant: str, round_index: int) -> pd.Series:
    """Test accuracy of one result per seed (index: seed)."""
    rows = table[(table["experiment"] == experiment) & (table["variant"] == variant) & (table["round"] == round_index)]
    seeds = rows["seed"] if "seed" in rows else pd.Series(0, index=rows.index)
    return pd.Series(rows["value"].to_numpy(dtype=float), index=seeds.to_numpy(), dtype=float)


def _values(table: pd.DataFrame, experiment: str, variant: str, round_index: int) -> np.ndarray:
    """Test accuracies of one result, one per seed."""
    return _by_seed(table, experiment, variant, round_index).to_numpy()


def _accuracy(table: pd.DataFrame, experiment: str, variant: str, round_index: int) -> float:
    values = _values(table, experiment, variant, round_index)
    return float(values.mean()) if len(values) else np.nan


def _cell(values) -> str:
    """Mean over seeds, with the range when there are several."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return "n/a"
    return f"{values.mean():.3f}" if len(values) == 1 else f"{values.mean():.3f} ({values.min():.3f} .. {values.max():.3f})"


# What Frankle et al. report for each comparison against its control (docs/early_phase.md gives the
# source of each; "" where the suite does not state the paper's finding). The premise, rewinding to
# k above rewinding to 0, is read by `premise_verdict`.
PAPER_DIRECTION = {
    "reinit": "lower",
    "reinit_signs": "lower",
    "shuffle": "lower",
    "shuffle_signs": "lower",
    "noise": "",
    "random_labels": "",
    "blur": "higher",
    "rotation": "higher",
}


def compare(treated: pd.Series, control: pd.Series) -> SeedComparison:
    """`treated - control` on the seeds both have, paired by seed (`kphases.early_phase_verdicts.compare_seeds`)."""
    seeds = sorted(set(treated.index) & set(control.index))
    return compare_seeds(treated.loc[seeds].to_numpy(), control.loc[seeds].to_numpy())


def _interval(test: SeedComparison) -> str:
    return "-" if np.isnan(test.interval_low) else f"{test.interval_low:+.3f} .. {test.interval_high:+.3f}"


def _p(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.3g}"


def comparison_row(name: str, test: SeedComparison, paper_column: str) -> str:
    """One row of the seed-level table: the numbers, what this scale shows, what it says about the paper."""
    return (
        f"| {name} | {test.seeds} | {test.mean_difference:+.3f} ({test.smallest_difference:+.3f} .. {test.largest_difference:+.3f}) "
        f"| {_interval(test)} | {_p(test.p_lower)} / {_p(test.p_higher)} | {_p(test.p_equivalent)} | {test.sign_flip_p:.3g} "
        f"| {test.describe()} | {paper_column} |"
    )


INTERVAL = f"{1 - 2 * LEVEL:.0%} interval"
TABLE_HEADER = [
    f"| comparison | seeds | mean paired difference (min .. max) | {INTERVAL} | p lower / higher | p equivalent (TOST) "
    "| exact sign-flip p | this scale | Frankle et al. |",
    "|---|---|---|---|---|---|---|---|---|",
]


def rule_text() -> str:
    """How the seed-level table is read: the rule, its level, margin and minimum number of seeds."""
    return (
        "Seed-level tests, paired by seed (each seed has its own dense run, mask and trainings): Student t tests over the seeds' "
        f"differences, each one-sided at {LEVEL}, with the matching {INTERVAL}. 'lower' / 'higher': the interval "
        f"excludes 0; 'equivalent': two one-sided tests (TOST) put it inside +-{EQUIVALENCE_MARGIN} test accuracy, the margin "
        "within which a start 'costs nothing' (the figure's means move by up to about this much from one CPU to another); "
        f"'undecided': neither, which is no evidence of equality. A verdict needs {MIN_SEEDS} seeds. Frankle et al.'s perturbation "
        "and pre-training results rest on a premise, that rewinding to k beats rewinding to 0: it is tested first, and where it "
        "does not hold at this scale those rows are not compared with the paper. The exact sign-flip permutation p (two-sided, "
        "no normality assumed, never below 2 / 2^n with n seeds) is printed beside the t tests as a check."
    )


def premise_row(test: SeedComparison, rewind_step: int) -> str:
    return comparison_row(f"rewind k={rewind_step} - rewind k=0 (the premise)", test, premise_verdict(test))


def headline_text(premise: SeedComparison | None, rewind_step: int) -> str:
    """The premise's verdict with its interval: the first thing the figure's one-line summary says."""
    if premise is None:
        return ""
    seeds = f"{premise.seeds} seed{'s' if premise.seeds != 1 else ''}"
    spread = seeds if np.isnan(premise.interval_low) else f"{INTERVAL} {_interval(premise)}, {seeds}"
    return f"rewind k={rewind_step} - k=0 {premise.mean_difference:+.3f} ({spread}): {premise_verdict(premise)}"


def _header_lines(table: pd.DataFrame, seeds: list, extra: list, spread: str) -> list[str]:
    setting = str(table["setting"].iloc[0])
    test_images = _test_images(table)
    line = f"Setting: {setting}; seeds {', '.join(str(seed) for seed in seeds)}"
    if extra:
        line += f" (and {', '.join(str(seed) for seed in extra)} for the sign-keeping perturbations, panel b)"
    line += f"; test accuracies are the {spread}"
    if test_images:
        line += f" on {test_images:,} test images (binomial standard error of one accuracy near 0.5: {0.5 / np.sqrt(test_images):.3f})"
    return [line + "."]


def _plot_imp(axis, full: pd.DataFrame, several_seeds: bool, spread: str, dense_accuracy: float) -> list[str]:
    """(a) IMP with rewinding: mean over seeds, the band is their range; the table of it."""
    imp = full[full["experiment"] == "imp"]
    rounds = sorted(imp[imp["round"] > 0]["round"].unique())
    lines = [
        "| rewind point | " + " | ".join(f"round {r}: {imp[imp['round'] == r]['sparsity'].mean():.1%} sparse" for r in rounds) + " |",
        "|---|" + "---|" * len(rounds),
    ]
    for variant in [v for v in imp["variant"].unique() if v != "dense"]:
        per_round = [_values(full, "imp", variant, r) for r in rounds]
        pruned = [100 * imp[(imp["variant"] == variant) & (imp["round"] == r)]["sparsity"].mean() for r in rounds]
        (line,) = axis.plot(pruned, [values.mean() for values in per_round], "o-", ms=3, label=variant)
        if several_seeds:
            lows, highs = [values.min() for values in per_round], [values.max() for values in per_round]
            axis.fill_between(pruned, lows, highs, color=line.get_color(), alpha=0.15, lw=0)
        lines.append(f"| {variant} | " + " | ".join(_cell(values) for values in per_round) + " |")
    axis.axhline(dense_accuracy, color="black", ls="--", lw=1, label="dense")
    axis.set_xlabel("weights pruned (%)")
    axis.set_ylabel("test accuracy")
    axis.set_title(f"(a) IMP, survivors rewound to iteration k\n{spread}")
    axis.legend()
    return lines


@dataclasses.dataclass(frozen=True)
class Panel:
    """Panel (b) or (c): starts at one rewind point and round, each against its control."""

    experiment: str
    """"perturbation" (control: the unperturbed rewind to k) or "data" (control: rewinding to 0)."""
    title: str
    round_index: int
    rewind_step: int
    sparsity: float
    rewound: pd.Series
    baseline: pd.Series
    treated: dict
    """Display name -> (variant, accuracy per seed)."""

    @property
    def control(self) -> tuple[str, pd.Series]:
        if self.experiment == "perturbation":
            return f"rewind k={self.rewind_step}", self.rewound
        return "rewind k=0", self.baseline


def panel_of(table: pd.DataFrame, full: pd.DataFrame, experiment: str, names: dict, title: str) -> Panel | None:
    part = table[table["experiment"] == experiment]
    if part.empty:
        return None
    round_index, rewind_step = int(part["round"].iloc[0]), int(part["rewind_step"].iloc[0])
    # The extra seeds trained only the perturbation panel's runs: the data panel reads the full seeds.
    source = table if experiment == "perturbation" else full
    variants = part[part["round"] == round_index]["variant"].unique()
    return Panel(
        experiment=experiment,
        title=title,
        round_index=round_index,
        rewind_step=rewind_step,
        sparsity=float(part["sparsity"].iloc[0]),
        rewound=_by_seed(source, "imp", f"rewind k={rewind_step}", round_index),
        baseline=_by_seed(full, "imp", "rewind k=0", round_index),
        treated={names.get(v, v): (v, _by_seed(source, experiment, v, round_index)) for v in variants},
    )


def _bars(panel: Panel) -> list[tuple[str, pd.Series]]:
    """The panel's bars: the two rewinds, then each start (name, accuracy per seed)."""
    bars = [("rewind k=0", panel.baseline), (f"rewind k={panel.rewind_step}", panel.rewound)]
    return bars + [(name, values) for name, (_, values) in panel.treated.items()]


def _plot_bars(axis, panel: Panel, premise: SeedComparison | None, several_seeds: bool, extra: bool, dense_accuracy: float) -> None:
    bars = _bars(panel)
    positions = np.arange(len(bars))
    means = np.array([values.mean() for _, values in bars])
    lows, highs = np.array([values.min() for _, values in bars]), np.array([values.max() for _, values in bars])
    axis.bar(
        positions,
        means,
        yerr=[means - lows, highs - means] if several_seeds else None,
        capsize=2,
        color=["grey", "C0"] + ["C1"] * (len(bars) - 2),
    )
    axis.set_xticks(positions)
    axis.set_xticklabels([f"{name} (n={len(values)})" if extra else name for name, values in bars], rotation=30, ha="right", fontsize=7)
    axis.axhline(dense_accuracy, color="black", ls="--", lw=1)
    axis.set_ylim(max(0.0, lows.min() - 0.1), min(1.0, max(dense_accuracy, highs.max()) + 0.05))
    axis.set_ylabel("test accuracy")
    if premise is None or premise.outcome == TOO_FEW:
        held = "premise (k beats 0) not tested: no paper comparison"
    elif premise_holds(premise):
        held = "premise (k beats 0) holds"
    else:
        held = "premise (k beats 0) does not hold: not tested against the paper"
    axis.set_title(
        f"{panel.title}\nk={panel.rewind_step}, {panel.sparsity:.1%} sparse (dashed: dense; bars: seed range)\n{held}", fontsize=8
    )


def _panel_lines(panel: Panel) -> list[str]:
    return [
        "",
        f"{panel.title[4:]} (k={panel.rewind_step}, {panel.sparsity:.1%} sparse):",
        "",
        "| start | seeds | test accuracy |",
        "|---|---|---|",
    ] + [f"| {name} | {len(values)} | {_cell(values)} |" for name, values in _bars(panel)]


def premise_comparison(panel: Panel) -> SeedComparison | None:
    """Rewinding to k against rewinding to 0 at the panel's round, on the seeds that have both."""
    if panel.rewind_step == 0 or not (len(panel.rewound) and len(panel.baseline)):
        return None
    return compare(panel.rewound, panel.baseline)


def comparison_rows(panel: Panel, premise: SeedComparison | None) -> list[str]:
    """The premise row, then each start against its control, read against the paper only where the premise holds."""
    rows = [] if premise is None else [premise_row(premise, panel.rewind_step)]
    control_name, control = panel.control
    for name, (variant, values) in panel.treated.items():
        test = compare(values, control)
        rows.append(comparison_row(f"{name} - {control_name}", test, paper_verdict(premise, test, PAPER_DIRECTION.get(variant, ""))))
    return rows


def _plot_statistics(axis, full: pd.DataFrame, several_seeds: bool) -> list[str]:
    """(d) early-phase statistics: fractions on the left axis, norms (which pass 1) on the right; their table."""
    statistics = full[full["experiment"] == "statistics"].pivot_table(index="step", columns="metric", values="value").sort_index()
    for metric, style, label in (("sign_flips_since_init", "C3o-", "signs flipped since init"), ("test_accuracy", "C2o-", "test accuracy")):
        axis.plot(step_position(statistics.index), statistics[metric], style, ms=3, label=label)
    axis.set_ylim(0.0, 1.0)
    axis.set_ylabel("fraction of weights / accuracy")
    twin = axis.twinx()
    twin.plot(step_position(statistics.index), statistics["distance_from_init"], "C0s--", ms=3, label="||w - w0|| / ||w0|| (right)")
    twin.plot(step_position(statistics.index), statistics["gradient_norm"], "k^:", ms=3, label="gradient norm (right)")
    twin.set_ylabel("relative distance from init; gradient norm")
    twin.set_ylim(bottom=0.0)
    log_step_axis(axis, statistics.index)
    handles = axis.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    axis.legend(handles, [h.get_label() for h in handles], fontsize=6)
    axis.set_title("(d) dense run, first iterations")
    lines = [
        "",
        f"Early-phase statistics of the dense run ({'mean over seeds' if several_seeds else 'one seed'}):",
        "",
        "| step | distance from init | sign flips | change per iteration | gradient norm | train acc | test acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for step, row in statistics.iterrows():
        lines.append(
            f"| {int(step)} | {row['distance_from_init']:.3f} | {row['sign_flips_since_init']:.3f} | "
            f"{row['change_per_iteration']:.4f} | {row['gradient_norm']:.3f} | {row['train_accuracy']:.3f} | {row['test_accuracy']:.3f} |"
        )
    return lines


def plot(table: pd.DataFrame, options: Options) -> tuple[str, str]:
    setting = str(table["setting"].iloc[0])
    full = table[table["full_experiment"].astype(bool)] if "full_experiment" in table else table
    seeds = sorted(full["seed"].unique()) if "seed" in full else [0]
    extra = sorted(set(table["seed"].unique()) - set(seeds)) if "seed" in table else []
    several_seeds = len(seeds) > 1
    spread = f"mean of {len(seeds)} seeds (min .. max)" if several_seeds else "one seed"
    dense_accuracy = _accuracy(full, "imp", "dense", 0)
    figure, axes = grid(4, columns=2, width=5.0, height=3.4)
    lines = _header_lines(table, seeds, extra, spread)
    lines += [f"Dense network: test accuracy {_cell(_values(full, 'imp', 'dense', 0))}.", ""]
    lines += _plot_imp(axes[0], full, several_seeds, spread, dense_accuracy)

    # (b) perturbations and (c) pre-training tasks, at their round; each bar over the seeds it has
    headline, rows = [], {}
    for axis, experiment, names, title in (
        (axes[1], "perturbation", PERTURBATION_NAMES, "(b) perturbed at iteration k"),
        (axes[2], "data", TASK_NAMES, "(c) pre-trained k iterations on another task"),
    ):
        panel = panel_of(table, full, experiment, names, title)
        if panel is None:
            axis.set_visible(False)
            continue
        premise = premise_comparison(panel)
        _plot_bars(axis, panel, premise, several_seeds, bool(extra), dense_accuracy)
        lines += _panel_lines(panel)
        headline += [headline_text(premise, panel.rewind_step), ", ".join(f"{name} {values.mean():.3f}" for name, values in _bars(panel))]
        rows.update(dict.fromkeys(comparison_rows(panel, premise)))  # the premise row once if both panels share k
    if rows:
        lines += ["", rule_text(), ""] + TABLE_HEADER + list(rows)
    pretrain = full[full["experiment"] == "pretrain"]
    if len(pretrain):
        lines += [
            "",
            "Accuracy on the pre-training task itself after k iterations (test split of that task): "
            + ", ".join(f"{TASK_NAMES.get(v, v)} {_cell(_values(full, 'pretrain', v, 0))}" for v in pretrain["variant"].unique()),
        ]
    lines += _plot_statistics(axes[3], full, several_seeds)
    figure.suptitle(f"Early phase of training (Frankle, Schwab & Morcos 2020) - {setting}")
    figure.tight_layout()
    save_figure(figure, options, NAME)
    return "; ".join(dict.fromkeys(text for text in headline if text)) or f"dense {dense_accuracy:.3f}", "\n".join(lines)


def main(argv=None) -> str:
    return run_figure(NAME, compute, plot, argv, __doc__)


if __name__ == "__main__":
    main()
