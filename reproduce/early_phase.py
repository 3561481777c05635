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
  and crops, batch 128), k in {0, 16, 64}, 3 rounds of 50% (87.5% sparse; the paper prunes 20% a
  round, 9 rounds to get there), perturbations and pre-training at k = 64 and 87.5%. Seeds 0-2 run
  everything; seeds 3-5 run only the dense run, the k = 64 lineage and the two sign-keeping
  perturbations (`PERTURBATION_SEEDS`). ResNet-20 is 18-40x slower per step on CPU
  (`python -m benchmarks.training`), too slow for this budget.
- quick: the same experiment at half full's width and length (`CPU_SCALES`: VGG-8 x1/8, 256
  iterations, k in {0, 8, 32}) on the embedded 4,000 / 1,000 MNIST images, seeds 0-2 only: the
  permutation tests keep their 3 seeds, the rest is cut for time. The CSV and summary.md hold the
  numbers; `python -m reproduce.all --dry-run` estimates the time.
- paper: ResNet-20 on CIFAR-10 (tfds), open_lth's recipe (160 epochs, lr 0.1 / 10 at 80 and 120
  epochs, momentum 0.9, weight decay 1e-4, flips and crops, batch 128), 20% a round for 12 rounds
  (93% sparse), k in {0, 100, 250, 500, 1000, 2000}, perturbations and pre-training at k = 500 and
  rounds 4, 8, 12, seeds 0-2. For a GPU machine.

What to expect, and how to read it (docs/early_phase.md): each perturbation is compared with the
unperturbed rewind seed by seed (same dense run, mask and data order), by an exact sign-flip
permutation test over seeds; with n seeds no two-sided p is below 2 / 2^n (0.25 at 3 seeds, 0.031
at 6), so 3 seeds alone cannot show a difference. Frankle et al. report that deep networks lose
accuracy when the rewound weights are reinitialised or shuffled, even with their signs kept.
At full scale (the committed figure: open_lth's initialisation, output layer unpruned, k = 64,
87.5% sparse) destroying signs costs 0.054 (random reinit) and 0.056 (shuffle), lower in each of 3
seeds, while keeping them costs nothing: reinit keeping signs +0.000 (-0.020 .. +0.020), shuffle
keeping signs +0.002 (-0.015 .. +0.010) over 6 seeds against rewinding to k = 64 (two-sided p 1 and
0.75): the opposite of the paper. Rewinding to 64 is no better than to 0 (-0.009 over 3 seeds), and
pre-training on random labels falls 0.054 below k = 0, on blurred images 0.017 and on rotations
0.012, where the paper finds the latter two close to rewinding. Test accuracies: dense 0.485,
rewind k=0 0.512 and k=64 0.507 at 87.5%. On another CPU, means move by up to about 0.01 and one
seed's accuracy by up to 0.03 (CHANGELOG).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

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
SEEDS = {"smoke": (0,), "quick": (0, 1, 2), "full": (0, 1, 2), "paper": (0, 1, 2)}
"""Seeds of the whole experiment per profile."""
PERTURBATION_SEEDS = {"smoke": (), "quick": (), "full": (3, 4, 5), "paper": ()}
"""Further seeds that train only what the sign-keeping comparison needs (the dense run, the IMP lineage
of the perturbation rewind point, and the `EXTRA_SEED_PERTURBATIONS`): the exact paired test over n
seeds cannot give a two-sided p below 2 / 2^n, so 3 seeds cannot reject anything (0.25) and 6 can (0.031)."""
EXTRA_SEED_PERTURBATIONS = ("reinit_signs", "shuffle_signs")
"""The perturbations on which this scale and Frankle et al. disagree; the others are left at SEEDS for the budget."""


CPU_SCALES = {
    "quick": {"width": 0.125, "iterations": 256, "rewind_steps": (0, 8, 32)},
    "full": {"width": 0.25, "iterations": 512, "rewind_steps": (0, 16, 64)},
}
"""The CPU profiles' network width, training length and rewind points (the learning-rate drops at 1/2 and 3/4 of it);
quick halves full's length and width, for time."""


def experiment(options: Options):
    """The profile's experiment (dense run without its schedule yet) and the scale shown in the title.

    Every profile follows open_lth's CIFAR setting where the suite can: its initialisation
    (`ModelConfig.initialisation="open_lth"`) and its rule for the output layer (pruned for ResNets,
    not for VGG-style networks). docs/early_phase.md lists what still departs.
    """
    from kphases.config import DataConfig, ModelConfig, RunConfig, TrainingConfig, profile
    from kphases.early_phase import ExperimentConfig

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
        k = scale["rewind_steps"][-1]
        return ExperimentConfig(
            base=base,
            rewind_steps=scale["rewind_steps"],
            rounds=3,
            prune_fraction=0.5,
            perturbation_rewind_step=k,
            perturbation_rounds=(3,),
            pretrain_steps=k,
            data_rounds=(3,),
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
    from kphases.early_phase import dense_schedule

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
    from kphases.data import load_dataset
    from kphases.early_phase import last_iteration, run_experiment

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
# source of each; "" where the suite does not state the paper's finding).
PAPER_DIRECTION = {
    "reinit": "lower",
    "reinit_signs": "lower",
    "shuffle": "lower",
    "shuffle_signs": "lower",
    "noise": "",
    "rewind": "higher",
    "random_labels": "",
    "blur": "higher",
    "rotation": "higher",
}
SIGNIFICANCE = 0.05  # two-sided level at which this scale is said to show a difference


def compare(treated: pd.Series, control: pd.Series):
    """The exact paired sign-flip test on the seeds both have (kphases.early_phase.paired_sign_flip_test)."""
    from kphases.early_phase import paired_sign_flip_test

    seeds = sorted(set(treated.index) & set(control.index))
    return paired_sign_flip_test(treated.loc[seeds].to_numpy(), control.loc[seeds].to_numpy())


def reading(test, paper: str) -> str:
    """What this scale shows for one comparison, next to what Frankle et al. report."""
    if test.p_value <= SIGNIFICANCE:
        shown = "lower" if test.mean_difference < 0 else "higher"
    else:
        shown = (
            f"no difference detected (p > {SIGNIFICANCE}; {test.seeds} seed{'s' if test.seeds != 1 else ''} "
            f"cannot go below {test.smallest_p_value:.3g})"
        )
    if not paper:
        return shown
    if shown == paper:
        return f"{shown}, as the paper"
    return f"{shown}, paper: {paper}" + (" (the opposite)" if shown in ("lower", "higher") else "")


def _test_row(name: str, test, paper: str) -> str:
    return (
        f"| {name} | {test.seeds} | {test.mean_difference:+.3f} ({test.smallest_difference:+.3f} .. {test.largest_difference:+.3f}) "
        f"| {test.p_value:.3g} | {test.p_lower:.3g} | {reading(test, paper)} |"
    )


def plot(table: pd.DataFrame, options: Options) -> tuple[str, str]:
    setting = str(table["setting"].iloc[0])
    full = table[table["full_experiment"].astype(bool)] if "full_experiment" in table else table
    seeds = sorted(full["seed"].unique()) if "seed" in full else [0]
    extra = sorted(set(table["seed"].unique()) - set(seeds)) if "seed" in table else []
    spread = f"mean of {len(seeds)} seeds (min .. max)" if len(seeds) > 1 else "one seed"
    results = table[table["experiment"] != "statistics"]
    imp = full[full["experiment"] == "imp"]
    dense_accuracy = _accuracy(full, "imp", "dense", 0)
    test_images = _test_images(table)
    figure, axes = grid(4, columns=2, width=5.0, height=3.4)
    rounds = sorted(imp[imp["round"] > 0]["round"].unique())
    lines = [
        f"Setting: {setting}; seeds {', '.join(str(seed) for seed in seeds)}"
        + (f" (and {', '.join(str(seed) for seed in extra)} for the sign-keeping perturbations, panel b)" if extra else "")
        + f"; test accuracies are the {spread}"
        + (
            f" on {test_images:,} test images (binomial standard error of one accuracy near 0.5: {0.5 / np.sqrt(test_images):.3f})"
            if test_images
            else ""
        )
        + ".",
        f"Dense network: test accuracy {_cell(_values(full, 'imp', 'dense', 0))}.",
        "",
        "| rewind point | " + " | ".join(f"round {r}: {imp[imp['round'] == r]['sparsity'].mean():.1%} sparse" for r in rounds) + " |",
        "|---|" + "---|" * len(rounds),
    ]

    # (a) IMP with rewinding: mean over seeds, the band is their range
    axis = axes[0]
    for variant in [v for v in imp["variant"].unique() if v != "dense"]:
        per_round = [_values(full, "imp", variant, r) for r in rounds]
        pruned = [100 * imp[(imp["variant"] == variant) & (imp["round"] == r)]["sparsity"].mean() for r in rounds]
        (line,) = axis.plot(pruned, [values.mean() for values in per_round], "o-", ms=3, label=variant)
        if len(seeds) > 1:
            axis.fill_between(
                pruned,
                [values.min() for values in per_round],
                [values.max() for values in per_round],
                color=line.get_color(),
                alpha=0.15,
                lw=0,
            )
        lines.append(f"| {variant} | " + " | ".join(_cell(values) for values in per_round) + " |")
    axis.axhline(dense_accuracy, color="black", ls="--", lw=1, label="dense")
    axis.set_xlabel("weights pruned (%)")
    axis.set_ylabel("test accuracy")
    axis.set_title(f"(a) IMP, survivors rewound to iteration k\n{spread}")
    axis.legend()

    # (b) perturbations and (c) pre-training tasks, at their round; each bar over the seeds it has
    headline, tests = [], []
    for axis, experiment, names, title in (
        (axes[1], "perturbation", PERTURBATION_NAMES, "(b) perturbed at iteration k"),
        (axes[2], "data", TASK_NAMES, "(c) pre-trained k iterations on another task"),
    ):
        part = results[results["experiment"] == experiment]
        if part.empty:
            axis.set_visible(False)
            continue
        round_index, rewind_step = int(part["round"].iloc[0]), int(part["rewind_step"].iloc[0])
        sparsity = float(part["sparsity"].iloc[0])
        source = table if experiment == "perturbation" else full
        rewound = _by_seed(source, "imp", f"rewind k={rewind_step}", round_index)
        baseline = _by_seed(full, "imp", "rewind k=0", round_index)
        bars = [("rewind k=0", baseline), (f"rewind k={rewind_step}", rewound)]
        bars += [
            (names.get(variant, variant), _by_seed(source, experiment, variant, round_index))
            for variant in part[part["round"] == round_index]["variant"].unique()
        ]
        positions = np.arange(len(bars))
        means = np.array([values.mean() for _, values in bars])
        lows, highs = np.array([values.min() for _, values in bars]), np.array([values.max() for _, values in bars])
        axis.bar(
            positions,
            means,
            yerr=[means - lows, highs - means] if len(seeds) > 1 else None,
            capsize=2,
            color=["grey", "C0"] + ["C1"] * (len(bars) - 2),
        )
        axis.set_xticks(positions)
        axis.set_xticklabels([f"{name} (n={len(values)})" if extra else name for name, values in bars], rotation=30, ha="right", fontsize=7)
        axis.axhline(dense_accuracy, color="black", ls="--", lw=1)
        axis.set_ylim(max(0.0, lows.min() - 0.1), min(1.0, max(dense_accuracy, highs.max()) + 0.05))
        axis.set_ylabel("test accuracy")
        axis.set_title(f"{title}\nk={rewind_step}, {sparsity:.1%} sparse (dashed: dense; bars: seed range)")
        lines += [
            "",
            f"{title[4:]} (k={rewind_step}, {sparsity:.1%} sparse):",
            "",
            "| start | seeds | test accuracy |",
            "|---|---|---|",
        ] + [f"| {name} | {len(values)} | {_cell(values)} |" for name, values in bars]
        headline.append(", ".join(f"{name} {values.mean():.3f}" for name, values in bars))
        if experiment == "perturbation":
            if len(baseline) and len(rewound):
                tests.append(_test_row(f"rewind k={rewind_step} - rewind k=0", compare(rewound, baseline), PAPER_DIRECTION["rewind"]))
            variants = part[part["round"] == round_index]["variant"].unique()
            tests += [
                _test_row(
                    f"{names.get(v, v)} - rewind k={rewind_step}",
                    compare(_by_seed(source, experiment, v, round_index), rewound),
                    PAPER_DIRECTION.get(v, ""),
                )
                for v in variants
            ]
        else:
            tests += [
                _test_row(
                    f"{names.get(v, v)} - rewind k=0",
                    compare(_by_seed(full, experiment, v, round_index), baseline),
                    PAPER_DIRECTION.get(v, ""),
                )
                for v in part[part["round"] == round_index]["variant"].unique()
            ]
    if tests:
        lines += [
            "",
            (
                "Seed-level tests: exact paired sign-flip permutation test over seeds (each seed has its own dense run, "
                "mask and trainings; all 2^n sign patterns of the n paired differences). p two-sided, and one-sided for "
                f"'the first is lower'. A difference is called at two-sided p <= {SIGNIFICANCE}; with n seeds no p is below "
                "2 / 2^n (3 seeds: 0.25, 6 seeds: 0.031), so 'no difference detected' at 3 seeds is no evidence of equality."
            ),
            "",
            "| comparison | seeds | mean paired difference (min .. max) | p | p (lower) | this scale, against Frankle et al. |",
            "|---|---|---|---|---|---|",
        ] + tests
    pretrain = full[full["experiment"] == "pretrain"]
    if len(pretrain):
        lines += [
            "",
            "Accuracy on the pre-training task itself after k iterations (test split of that task): "
            + ", ".join(f"{TASK_NAMES.get(v, v)} {_cell(_values(full, 'pretrain', v, 0))}" for v in pretrain["variant"].unique()),
        ]

    # (d) early-phase statistics: fractions on the left axis, norms (which pass 1) on the right
    axis = axes[3]
    statistics = full[full["experiment"] == "statistics"].pivot_table(index="step", columns="metric", values="value")
    statistics = statistics.sort_index()
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
    lines += [
        "",
        f"Early-phase statistics of the dense run ({'mean over seeds' if len(seeds) > 1 else 'one seed'}):",
        "",
        "| step | distance from init | sign flips | change per iteration | gradient norm | train acc | test acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for step, row in statistics.iterrows():
        lines.append(
            f"| {int(step)} | {row['distance_from_init']:.3f} | {row['sign_flips_since_init']:.3f} | "
            f"{row['change_per_iteration']:.4f} | {row['gradient_norm']:.3f} | {row['train_accuracy']:.3f} | {row['test_accuracy']:.3f} |"
        )
    figure.suptitle(f"Early phase of training (Frankle, Schwab & Morcos 2020) - {setting}")
    figure.tight_layout()
    save_figure(figure, options, NAME)
    return "; ".join(headline) or f"dense {dense_accuracy:.3f}", "\n".join(lines)


def main(argv=None) -> str:
    return run_figure(NAME, compute, plot, argv, __doc__)


if __name__ == "__main__":
    main()
