"""The figure scripts' plotting setup: file-only backend and the suite's style, then the shared helpers.

The helpers live in `kphases.plotting` (the library's `plot_phases` uses them too); this module
makes the global choices only scripts should make: the Agg backend (figures go to files, no
display needed) and `STYLE` for every figure.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from kphases.plotting import (  # noqa: E402
    PHASE_COLOURS,
    STYLE,
    grid,
    log_step_axis,
    phase_legend_handles,
    plt,
    shade_phases,
    shade_verdict,
    step_position,
)

plt.rcParams.update(STYLE)


def draw_seeds(axis, seeds, colour: str = "black") -> list:
    """The band of a curve's seeds (min to max, columns of `seeds`, step x seed) and their mean, dashed: the
    curve a verdict across seeds is about and its band is drawn around. Nothing with one seed."""
    if seeds.shape[1] < 2:
        return []
    positions = step_position(seeds.index)
    axis.fill_between(positions, seeds.min(axis=1), seeds.max(axis=1), color=colour, alpha=0.1, lw=0, zorder=1)
    return axis.plot(positions, seeds.mean(axis=1), "--", color=colour, lw=0.8, label=f"mean of {seeds.shape[1]} seeds (min-max band)")


__all__ = [
    "PHASE_COLOURS",
    "STYLE",
    "draw_seeds",
    "grid",
    "log_step_axis",
    "phase_legend_handles",
    "plt",
    "shade_phases",
    "shade_verdict",
    "step_position",
]
