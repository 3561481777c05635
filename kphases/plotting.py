"""One plotting style for every figure: log2 step axis with ticks at the snapshots, phase shading.

Iteration 0 cannot sit on a log axis, so it is drawn at x = 1 (the schedule never measures
iteration 1, so the position is free) and labelled "0".

`shade_verdict` shades only the phases a noise-aware verdict (`kphases.phases.phase_verdict`) is
confident of and draws its intervals. Used by `kphases.plot_phases` and by every `reproduce/` figure. Importing this module changes no
global matplotlib state (backend, rcParams): `reproduce.plotting` selects the file-only Agg
backend and applies `STYLE` for the figure scripts; `kphases.plot_phases` draws inside
`plt.rc_context(STYLE)`, so a user's interactive backend keeps working.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

PHASE_COLOURS = {"constant": "#dddddd", "decrease": "#cfe8cf", "increase": "#f6d5d5"}
STYLE = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 7,
    "figure.dpi": 100,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def step_position(steps: Sequence[int]) -> np.ndarray:
    """x position of each step on the log2 axis (step 0 at 1)."""
    return np.maximum(np.asarray(steps, dtype=float), 1.0)


def log_step_axis(axis, steps: Sequence[int], label: str = "iteration (log2 scale)") -> None:
    """log2 x axis with a tick at every snapshot step (every other one when crowded)."""
    steps = sorted(set(int(step) for step in steps))
    axis.set_xscale("log", base=2)
    # Crowded: every other snapshot counted back from the last, so the last is shown and no two
    # labels sit one octave apart (1024 beside 2048 overlapped); 0 (at x = 1) stays, its label is narrow.
    shown = steps if len(steps) <= 10 else sorted(set(steps[::-1][::2]) | {steps[0]})
    axis.set_xticks(step_position(shown))
    axis.set_xticklabels([_short(step) for step in shown], rotation=0)
    axis.minorticks_off()
    axis.set_xlabel(label)


def _short(step: int) -> str:
    return f"{step // 1024}k" if step >= 1024 and step % 1024 == 0 else str(step)


def shade_phases(axis, steps: Sequence[int], labels: Sequence[str]) -> None:
    """Shade the spans of consecutive steps with the same phase label (undetermined: unshaded)."""
    positions = step_position(steps)
    edges = np.sqrt(positions[:-1] * positions[1:])  # geometric midpoints between snapshots
    lefts = np.concatenate([[positions[0] / 1.2], edges])
    rights = np.concatenate([edges, [positions[-1] * 1.2]])
    for left, right, label in zip(lefts, rights, labels):
        if label in PHASE_COLOURS:
            axis.axvspan(left, right, color=PHASE_COLOURS[label], alpha=0.6, lw=0, zorder=0)


def shade_verdict(axis, steps: Sequence[int], verdict, colour: str = "black") -> None:
    """Shade the phases a `PhaseVerdict` is confident of and show its noise: the band of each point's change
    from step 0 and, under the panel (clear of the curves), the plateau, the decrease and the increase with
    their intervals, the margins and which noise the intervals carry."""
    shade_phases(axis, steps, verdict.labels)
    positions = step_position(verdict.steps)
    axis.fill_between(positions, verdict.curve_low, verdict.curve_high, color=colour, alpha=0.18, lw=0, zorder=1)
    text = (
        f"{verdict.describe_plateau()}\n"
        f"decrease {verdict.decrease.describe()}{'' if verdict.has_decrease else ' (not confident)'}; "
        f"increase {verdict.increase.describe()}{'' if verdict.has_increase else ' (not confident)'}\n"
        f"{verdict.settings.confidence:.0%} CI; plateau +-{verdict.settings.plateau_margin:.1%}, min_effect {verdict.settings.min_effect:.1%}; "
        f"band: change from step 0\n{verdict.noise}"
    )
    # Below the x axis's label, where no curve runs (inside the panel it covered the early points).
    axis.annotate(text, xy=(0, 0), xycoords="axes fraction", xytext=(0, -36), textcoords="offset points", fontsize=5.5, va="top", ha="left")


def phase_legend_handles():
    return [Patch(color=colour, alpha=0.6, label=f"phase: {name}") for name, colour in PHASE_COLOURS.items()]


def grid(count: int, columns: int = 2, width: float = 4.2, height: float = 3.0):
    rows = max(1, int(np.ceil(count / columns)))
    columns = min(columns, count) if count else 1
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    for extra in axes.flat[count:]:
        extra.set_visible(False)
    return figure, list(axes.flat[:count])
