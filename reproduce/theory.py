"""Figure `theory`: the single-layer theory's simulation, its three phases and the predicted boundaries.

The paper's explanation (PROTOCOL.md section 1) is a single-layer network ("F" net, z = W x) on a
"fitting the majority, then a few" data model. `theory/` restates it as our own propositions
(theory/README.md) and simulates gradient descent on the data model (`theory.simulate`). Panels,
one per named regime of `theory.regimes` (three seeds each: mean and min-max band):
- with 10% outliers at another class's prototype: constant, decrease, increase;
- without outliers: constant, decrease, no increase;
- with outliers only a quarter of the way to another prototype: no increase.
Each panel shows the reconstruction loss R(W_t) of the best affine decoder (relative to the
Eckart-Young minimum and tr S, dotted), train accuracy on the majority and on the outliers, the
phases `kphases.phases.detect_phases` finds, and the theory's predictions (`theory.predictions`):
the step until which proposition 2 certifies near-constancy and the step at which the outliers'
share of the gradient first reaches 45% (proposition 4). That step is a measured condition, not a
prediction on its own: in the near-outlier regime it is reached too (quick: step 4096) and no
increase follows.

    python -m reproduce.theory [--profile smoke|quick|paper] [--plot-only] [--out DIR]

Runtime: NumPy only; quick 14 s, measured by reproduce.all on 2 CPU cores, 2026-11-30 (3 regimes x 3 seeds x 2^16 steps), smoke runs 2^12 steps.

Numbers you should see (quick; NumPy, identical to 1e-15 across two machines): three phases in 3 of
3 seeds with 10% outliers at another prototype (R 107.85 -> 65.88 -> 75.49, seed 0; the outliers
reach 45% of the gradient at step 512), 0 of 3 without outliers (107.85 -> 61.49, stays) and 0 of
3 with outliers a quarter of the way (105.72 -> 61.50, stays).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from reproduce.common import Options, run_figure, save_figure
from reproduce.plotting import grid, log_step_axis, phase_legend_handles, shade_phases, step_position

NAME = "theory"
SEEDS = (0, 1, 2)


def regimes():
    from theory import regimes as named

    return {"10% outliers at another prototype": named.three_phase_regime,
            "no outliers": named.no_outlier_regime,
            "10% outliers a quarter of the way": named.near_outlier_regime}


def compute(options: Options) -> pd.DataFrame:
    from theory.predictions import predict_phases
    from theory.simulate import simulate

    rows = []
    for regime, make in regimes().items():
        for seed in SEEDS:
            model, config = make(seed)
            if options.profile == "smoke":
                config = config.replace(last_step=2**12)
            trajectory = simulate(model, config)
            prediction = predict_phases(trajectory)
            for index, step in enumerate(trajectory.steps):
                for metric in ("reconstruction_loss", "majority_accuracy", "outlier_accuracy", "test_accuracy"):
                    rows.append((regime, seed, int(step), metric, float(getattr(trajectory, metric)[index])))
            for metric, value in (("eckart_young_minimum", trajectory.reconstruction_minimum),
                                  ("trace_covariance", trajectory.reconstruction_maximum),
                                  ("predicted_certified_constant_steps", prediction.certified_constant_steps),
                                  ("predicted_outlier_dominance_step", prediction.outlier_dominance_step),
                                  ("predicted_three_phases", float(prediction.three_phases_expected))):
                rows.append((regime, seed, -1, metric, np.nan if value is None else float(value)))
    return pd.DataFrame(rows, columns=["regime", "seed", "step", "metric", "value"])


def plot(table: pd.DataFrame, options: Options):
    from kphases.phases import detect_phases

    names = list(dict.fromkeys(table["regime"]))
    figure, axes = grid(len(names), columns=len(names), width=4.0, height=3.2)
    lines = ["| regime | seeds with three phases detected | theory expects three phases | R: initial -> min -> final (seed 0) | outliers reach 45% of the gradient at step (seed 0) |",
             "|---|---|---|---|---|"]
    handles = []
    for axis, regime in zip(axes, names):
        part = table[table["regime"] == regime]
        wide = part[part["step"] >= 0].pivot_table(index="step", columns=["metric", "seed"], values="value")
        loss = wide["reconstruction_loss"]
        verdicts = [detect_phases(loss.index.tolist(), loss[seed].tolist()) for seed in loss.columns]
        shade_phases(axis, loss.index, verdicts[0].labels)
        axis.fill_between(step_position(loss.index), loss.min(axis=1), loss.max(axis=1), color="black", alpha=0.15, lw=0)
        handles = axis.plot(step_position(loss.index), loss.mean(axis=1), "o-", color="black", ms=2, label="R(W_t), mean of 3 seeds")
        scalars = part[part["step"] < 0].pivot(index="seed", columns="metric", values="value")
        handles += [axis.axhline(scalars["eckart_young_minimum"].mean(), color="grey", ls=":", lw=1, label="Eckart-Young minimum")]
        twin = axis.twinx()
        for metric, style, name in (("majority_accuracy", "C0-", "train acc, majority"), ("outlier_accuracy", "C3-", "train acc, outliers")):
            if metric in wide and not wide[metric].isna().all().all():
                handles += twin.plot(step_position(wide.index), wide[metric].mean(axis=1), style, lw=1, label=name)
        twin.set_ylim(0, 1.02)
        certified = scalars["predicted_certified_constant_steps"].iloc[0]
        dominance = scalars["predicted_outlier_dominance_step"].iloc[0]
        if certified >= 1:
            handles += [axis.axvline(certified, color="C2", ls="--", lw=1, label="certified constant until (prop. 2)")]
        if np.isfinite(dominance):
            handles += [axis.axvline(max(dominance, 1), color="C3", ls="--", lw=1, label="outliers dominate the gradient (prop. 4)")]
        log_step_axis(axis, loss.index)
        count = sum(v.three_phases for v in verdicts)
        axis.set_title(f"{regime}\nthree phases in {count} of {len(verdicts)} seeds", fontsize=8)
        first = loss[loss.columns[0]]
        lines.append(f"| {regime} | {count} of {len(verdicts)} | {'yes' if scalars['predicted_three_phases'].iloc[0] else 'no'} | "
                     f"{first.iloc[0]:.2f} -> {first.min():.2f} -> {first.iloc[-1]:.2f} | "
                     f"{'none' if not np.isfinite(dominance) else int(dominance)} |")
    axes[0].set_ylabel("reconstruction loss R(W) (sum over inputs)")
    unique = {h.get_label(): h for h in handles + phase_legend_handles()}
    figure.legend(list(unique.values()), list(unique), loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.04))
    figure.suptitle(f"Single-layer theory: gradient descent on the data model ({options.profile} profile)")
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    save_figure(figure, options, NAME)
    headline = "; ".join(line.split(" | ")[0].lstrip("| ") + ": " + line.split(" | ")[1] for line in lines[2:])
    return f"three phases detected in {headline}", "\n".join(lines)


def main(argv=None) -> str:
    return run_figure(NAME, compute, plot, argv, __doc__)


if __name__ == "__main__":
    main()
