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

__all__ = [
    "PHASE_COLOURS",
    "STYLE",
    "grid",
    "log_step_axis",
    "phase_legend_handles",
    "plt",
    "shade_phases",
    "shade_verdict",
    "step_position",
]
