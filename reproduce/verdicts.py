"""The figures' phase verdicts: per-image errors saved beside each figure's CSV, verdicts drawn from them.

The suite's verdict (`kphases.phases.phase_verdict`, default `VerdictSettings`) resamples the
per-image test errors of each reconstruction curve. Figures read results files only, so `compute`
copies the per-image errors of the curves a figure judges out of the run directories
(`kphases.measurement.read_per_image_errors`) into `<out>/<figure>_per_image.csv`, next to
`<out>/<figure>.csv`; `plot` (also with `--plot-only`) reads them back. A curve without per-image
errors gets no verdict, and its line says why (`kphases.verdict_tables.describe_phases`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kphases.measurement import read_per_image_errors
from kphases.phases import PhaseVerdict, VerdictSettings, phase_verdict
from kphases.verdict_tables import describe_phases

KEY_SEPARATOR = "|"


def curve_key(label: str, layer: str, instrument: str, bn_stats: str) -> str:
    return KEY_SEPARATOR.join((label, layer, instrument, bn_stats))


def per_image_path(out: Path, name: str) -> Path:
    return Path(out) / f"{name}_per_image.csv"


def collect(run, frame: pd.DataFrame, label: str, curves_wanted: list[tuple[str, str, str]]) -> dict[str, tuple[list[int], np.ndarray]]:
    """key -> (steps, steps x images errors) for each (layer, instrument, bn_stats) of one run that has per-image files."""
    found = {}
    for layer, instrument, bn_stats in curves_wanted:
        per_image = read_per_image_errors(run, frame, layer, instrument, bn_stats)
        if per_image is not None:
            found[curve_key(label, layer, instrument, bn_stats)] = per_image
    return found


def write_per_image(out: Path, name: str, collected: dict[str, tuple[list[int], np.ndarray]]) -> Path | None:
    """Write (replace, atomically) the figure's per-image errors as a long CSV (curve, step, image,
    error; float32 values written to round-trip exactly); none when no curve has per-image errors."""
    path = per_image_path(out, name)
    if not collected:
        return None
    Path(out).mkdir(parents=True, exist_ok=True)
    frames = []
    for key, (steps, errors) in collected.items():
        errors = np.asarray(errors, dtype=np.float32)
        step_index, image_index = np.meshgrid(np.asarray(steps, dtype=np.int64), np.arange(errors.shape[1]), indexing="ij")
        frames.append(pd.DataFrame({"curve": key, "step": step_index.ravel(), "image": image_index.ravel(), "error": errors.ravel()}))
    from reproduce.common import write_table_file

    return write_table_file(path, pd.concat(frames, ignore_index=True), float_format="%.9g")  # atomically, with its record


def read_per_image(out: Path, name: str) -> dict[str, tuple[list[int], np.ndarray]]:
    path = per_image_path(out, name)
    if not path.exists():
        return {}
    from reproduce.common import read_table_file

    table = read_table_file(path)
    result = {}
    for key, group in table.groupby("curve", sort=False):
        wide = group.pivot(index="step", columns="image", values="error").sort_index()
        result[str(key)] = ([int(step) for step in wide.index], wide.to_numpy(dtype=np.float32))
    return result


def verdict(
    per_image: dict, series: pd.Series, label: str, layer: str, instrument: str, bn_stats: str, settings: VerdictSettings | None = None
) -> PhaseVerdict | None:
    """The curve's `PhaseVerdict` from its per-image errors when they cover exactly its steps; None for fewer
    than 3 measurements or without per-image errors (`describe` then says which)."""
    if len(series) < 3:
        return None
    stored = per_image.get(curve_key(label, layer, instrument, bn_stats))
    if stored is None or list(stored[0]) != [int(step) for step in series.index]:
        return None
    return phase_verdict(stored[0], stored[1], settings=settings or VerdictSettings())


def across_seeds(
    per_image: dict,
    curves: pd.DataFrame,
    labels: list[str],
    layer: str,
    instrument: str,
    bn_stats: str,
    settings: VerdictSettings | None = None,
) -> PhaseVerdict | None:
    """The verdict across seeds on `curves` (step x seed, the seeds' figure labels in `labels`, in column
    order): hierarchical over the seeds and each seed's test images when every seed's per-image errors
    cover the curve's steps with one number of images; otherwise from the seed curves alone, and its
    line says "seed curves". None with fewer than 3 seeds or 3 steps."""
    curves = curves.dropna()
    if curves.shape[1] < 3 or len(curves) < 3:
        return None
    steps = [int(step) for step in curves.index]
    settings = settings or VerdictSettings()
    stored = [per_image.get(curve_key(label, layer, instrument, bn_stats)) for label in labels]
    if all(item is not None and list(item[0]) == steps for item in stored) and len({item[1].shape[1] for item in stored}) == 1:
        return phase_verdict(steps, np.stack([item[1] for item in stored]), settings=settings)
    return phase_verdict(steps, seed_curves=curves.to_numpy().T, settings=settings)


def describe(result: PhaseVerdict | None, series: pd.Series) -> str:
    """The verdict's line, or why the curve has none (too short, or no per-image errors)."""
    return describe_phases(result, series)
