"""The figures' phase verdicts: per-image errors saved beside each figure's CSV, verdicts drawn from them.

A noise-aware verdict (`kphases.phases.phase_verdict`) resamples the per-image test errors of each
reconstruction curve. Figures read results files only, so `compute` copies the per-image errors
of the curves a figure judges out of the run directories (`kphases.measurement.read_per_image_errors`)
into `<out>/<figure>_per_image.csv`, next to `<out>/<figure>.csv`; `plot` (also with
`--plot-only`) reads them back. A curve whose cells predate the per-image files gets
`detect_phases`' verdict instead, which says in every line that it has no measurement-noise
interval.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

KEY_SEPARATOR = "|"


def curve_key(label: str, layer: str, instrument: str, bn_stats: str) -> str:
    return KEY_SEPARATOR.join((label, layer, instrument, bn_stats))


def per_image_path(out: Path, name: str) -> Path:
    return Path(out) / f"{name}_per_image.csv"


def collect(run, frame: pd.DataFrame, label: str, curves_wanted: list[tuple[str, str, str]]) -> dict[str, tuple[list[int], np.ndarray]]:
    """key -> (steps, steps x images errors) for each (layer, instrument, bn_stats) of one run that has per-image files."""
    from kphases.measurement import read_per_image_errors

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


def verdict(per_image: dict, series: pd.Series, label: str, layer: str, instrument: str, bn_stats: str, settings=None):
    """The curve's `PhaseVerdict` from its per-image errors when they cover exactly its steps, else
    `detect_phases`' `PhaseResult` (no noise interval); None for fewer than 3 measurements."""
    from kphases.phases import VerdictSettings, detect_phases, phase_verdict

    if len(series) < 3:
        return None
    stored = per_image.get(curve_key(label, layer, instrument, bn_stats))
    if stored is not None and list(stored[0]) == [int(step) for step in series.index]:
        return phase_verdict(stored[0], stored[1], settings=settings or VerdictSettings())
    return detect_phases(series.index.tolist(), series.tolist())


def describe(result, series: pd.Series) -> str:
    """`describe_phases`, or for a curve too short for any verdict the 'not three phases: only n ...' line."""
    from kphases.measurement import describe_phases, describe_too_short

    return describe_phases(result) if result is not None else describe_too_short(series)
