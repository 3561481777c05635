"""Does a run of the figures match the committed reference? Headline numbers, compared with tolerances.

`python -m reproduce.all` ends by calling `report`: it extracts the comparable numbers of every
figure CSV in its output directory into `headline.csv` and compares them with the committed
reference for the same data path:

- real data (`KPHASES_DATA_DIR` holding MNIST, Fashion-MNIST, CIFAR-10): `paper_figures/headline.csv`;
- the embedded data a newcomer gets without any data directory: `paper_figures/embedded/headline.csv`.

It prints per figure "matches" or the differences. Another CPU's floating-point rounding moves
trained numbers (the CHANGELOG records how much between machines: a seed's final accuracy by up to
0.028, a three-seed mean by up to 0.009, an accuracy in mid-training, where it climbs fastest, by
up to 0.10, and the unregularised exact decoder on features about as wide as the train set by
far more), so numbers are compared within tolerances, not bitwise, and a difference printed here
is a pointer to look, not by itself a failure: accuracies within `ACCURACY_TOLERANCE` (absolute),
reconstruction losses within `RECONSTRUCTION_TOLERANCE` (relative). On the machine that made the reference the numbers are
identical. Which numbers count: every accuracy (classifier, probe, transfer heads, the early-phase
results) and every reconstruction loss of every figure table, keyed by every column of its row
except the run hash and the data description (so a run renamed by a new hash still compares).

    python -m reproduce.compare OUT_DIR [REFERENCE_DIR]     # compare an existing output directory
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

from reproduce.common import FIGURES_DIR, write_table_file

ACCURACY_TOLERANCE = 0.03
"""Largest absolute difference of an accuracy that still matches (a seed moved 0.028 between two CPUs)."""
RECONSTRUCTION_TOLERANCE = 0.02
"""Largest relative difference of a reconstruction loss that still matches."""
HEADLINE_FILE = "headline.csv"
IGNORED_COLUMNS = {"run", "data", "update_steps", "value", "monitor", "test_images", "target_test_images"}


def kind_of(metric: str) -> str | None:
    """'accuracy', 'reconstruction' or None (not compared) for a metric name."""
    if "accuracy" in metric:
        return "accuracy"
    if metric.startswith("reconstruction_mse") or metric == "reconstruction_loss":
        return "reconstruction"
    return None


def headline(out: Path) -> pd.DataFrame:
    """The comparable numbers of every figure CSV in `out`: figure, key, kind, value."""
    rows = []
    for path in sorted(out.glob("*.csv")):
        if path.name == HEADLINE_FILE:
            continue
        table = pd.read_csv(path)
        figure = path.stem
        if "target_accuracy" in table and "checkpoint" in table:  # early_stopping: one accuracy per checkpoint
            table = table.rename(columns={"target_accuracy": "value"}).assign(metric="target_accuracy")
        if not {"metric", "value"} <= set(table.columns):
            continue
        keys = [column for column in table.columns if column not in IGNORED_COLUMNS]
        for record in table.to_dict("records"):
            kind = kind_of(str(record["metric"]))
            if kind is None or pd.isna(record["value"]):
                continue
            key = "; ".join(f"{column}={record[column]}" for column in keys if not pd.isna(record[column]))
            rows.append({"figure": figure, "key": key, "kind": kind, "value": float(record["value"])})
    frame = pd.DataFrame(rows, columns=["figure", "key", "kind", "value"])
    return frame.drop_duplicates(["figure", "key"], keep="last", ignore_index=True)


def compare(current: pd.DataFrame, reference: pd.DataFrame) -> list[str]:
    """One line per figure: matches, or how many numbers differ (with the largest differences), or what is missing."""
    lines = []
    for figure in sorted(set(current["figure"]) | set(reference["figure"])):
        ours = current[current["figure"] == figure].set_index("key")
        theirs = reference[reference["figure"] == figure].set_index("key")
        if theirs.empty:
            lines.append(f"{figure}: not in the reference")
            continue
        if ours.empty:
            lines.append(f"{figure}: not produced by this run")
            continue
        common = ours.index.intersection(theirs.index)
        if common.empty:  # e.g. a reference made at another scale: its runs have other labels
            lines.append(f"{figure}: no numbers in common with the reference ({len(theirs)} there, {len(ours)} here): not comparable")
            continue
        joined = ours.loc[common, ["kind", "value"]].join(theirs.loc[common, ["value"]].rename(columns={"value": "value_reference"}))
        joined["value_reference"] = pd.to_numeric(joined["value_reference"], errors="coerce")
        difference = (joined["value"] - joined["value_reference"]).abs()
        allowed = joined["kind"].map({"accuracy": ACCURACY_TOLERANCE, "reconstruction": RECONSTRUCTION_TOLERANCE})
        allowed = allowed.where(joined["kind"] == "accuracy", allowed * joined["value_reference"].abs())
        outside = joined[difference > allowed + 1e-12]
        missing = len(theirs.index.difference(ours.index))
        extra = len(ours.index.difference(theirs.index))
        notes = ([f"{missing} reference numbers not produced"] if missing else []) + (
            [f"{extra} numbers not in the reference"] if extra else []
        )
        if outside.empty:
            lines.append(f"{figure}: matches ({len(joined)} numbers within tolerance" + "".join(f"; {note}" for note in notes) + ")")
            continue
        worst = (difference[outside.index] / allowed[outside.index]).sort_values(ascending=False).index[:3]
        examples = "; ".join(f"[{key}] {joined.loc[key, 'value']:.4f} vs {joined.loc[key, 'value_reference']:.4f}" for key in worst)
        lines.append(
            f"{figure}: differs: {len(outside)} of {len(joined)} numbers outside tolerance, largest: {examples}"
            + "".join(f"; {note}" for note in notes)
        )
    return lines


VERDICT_WORDS = re.compile(
    r"not three phases|three phases|not tested|undecided|equivalent|lower|higher|does not help|helps|hurts|too few seeds"
)
"""The words in which a figure's summary states its verdicts, longest first so that "not three phases" is one verdict."""


def verdicts(summary: str) -> dict[str, list[str]]:
    """Figure -> the verdict words of its section of a summary.md, in order."""
    sections = re.split(r"^## ", summary, flags=re.MULTILINE)[1:]
    return {section.split("\n", 1)[0].strip(): VERDICT_WORDS.findall(section) for section in sections}


def compare_verdicts(current: str, reference: str) -> list[str]:
    """One line per figure whose verdicts differ from the reference's summary.md (same figure, same order)."""
    ours, theirs = verdicts(current), verdicts(reference)
    lines = []
    for figure in sorted(set(ours) & set(theirs)):
        if ours[figure] != theirs[figure]:
            changed = sum(a != b for a, b in zip(ours[figure], theirs[figure]))
            first = next(
                (i for i, (a, b) in enumerate(zip(ours[figure], theirs[figure])) if a != b), min(len(ours[figure]), len(theirs[figure]))
            )
            here = ours[figure][first] if first < len(ours[figure]) else "(none)"
            there = theirs[figure][first] if first < len(theirs[figure]) else "(none)"
            lines.append(
                f"{figure}: verdicts differ: {len(ours[figure])} here, {len(theirs[figure])} in the reference, {changed} of the "
                f"{min(len(ours[figure]), len(theirs[figure]))} compared in order differ (first: '{here}' here, '{there}' in the reference)"
            )
    return lines or ["verdicts: every figure's verdicts are the reference's"]


def reference_directory(real_data: bool, figures_dir: Path) -> Path:
    return figures_dir if real_data else figures_dir / "embedded"


def report(out: Path, reference: Path) -> list[str]:
    """Write `out/headline.csv` and compare it with `reference/headline.csv`; the lines to print."""
    current = headline(out)
    write_table_file(out / HEADLINE_FILE, current)  # atomically, with its record
    if out.resolve() == reference.resolve():
        return [f"{out / HEADLINE_FILE}: written; this output directory is the reference itself"]
    path = reference / HEADLINE_FILE
    if not path.is_file():
        return [f"no reference at {path} to compare with"]
    lines = [
        f"compared with the reference {path} (accuracies within {ACCURACY_TOLERANCE}, reconstruction within "
        f"{RECONSTRUCTION_TOLERANCE:.0%}):",
        *compare(current, pd.read_csv(path)),
    ]
    summaries = out / "summary.md", reference / "summary.md"
    if all(summary.is_file() for summary in summaries):
        lines += compare_verdicts(*(summary.read_text(encoding="utf-8") for summary in summaries))
    return lines


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 2:
        print("usage: python -m reproduce.compare OUT_DIR [REFERENCE_DIR]", file=sys.stderr)
        return 2
    out = Path(args[0])
    if not out.is_dir():
        print(f"error: {out} is not a directory of figure CSVs", file=sys.stderr)
        return 2

    reference = Path(args[1]) if len(args) == 2 else FIGURES_DIR
    print("\n".join(report(out, reference)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
