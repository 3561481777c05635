"""The README's findings table quotes the committed results: every number in it is in them.

The numbers of the "What it found" table are written by hand from `paper_figures/` (docs/findings.md,
section "Where the numbers come from"), and so are those of docs/findings.md, which this test checks
the same way (its sections name their figures in their headings). This test reads whatever the README's table says and whatever is
committed, and fails on a number of the table that the results do not hold, so a table left behind
by new results, or a typo, cannot stand. Each row names its figures in backticks (`phases`); its
numbers are looked up in those figures' sections of `paper_figures/summary.md`, their CSVs
(`paper_figures/<figure>.csv`) and their rows of `paper_figures/headline.csv`.

The last column of the README's table quotes the papers and is not checked. A number is found when it appears among the section's numbers as written (signs and thousands
separators aside), or when a CSV value of the figure rounds to it at the number's own decimals,
as it is or as a percentage (0.178 is 17.8%). An estimate with its interval, "17.8% [16.7, 18.9]",
must stand in the figure's section of summary.md as that triple. Names that contain digits (VGG-8, CIFAR-10, x1/8,
block2) are not numbers.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs" / "findings.md"
FIGURES = ROOT / "paper_figures"

# Words with digits that name things: architectures and datasets (VGG-8, ResNet-10, CIFAR-10,
# Fashion-MNIST's none), widths (x1/8, x0.125), layers (block2), interval notation aside.
_NAME = re.compile(r"\b[A-Za-z][A-Za-z]*-\d+\b|\bx\d+(?:/\d+|\.\d+)?\b|\b[a-z]+\d+\b|\b[IT]\([^)]*\)")
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")
# An estimate with its interval, "17.8% [16.7, 18.9]" or "17.8% [16.7%, 18.9%]": checked as one triple.
_ESTIMATE = re.compile(r"(\d+(?:\.\d+)?)%?\s*\[[-+]?(\d+(?:\.\d+)?)%?,\s*[-+]?(\d+(?:\.\d+)?)%?\]")


def numbers(text: str) -> list[str]:
    """The numbers of a text as written, without signs, thousands separators or units, names left out."""
    text = re.sub(r"`[^`]*`", " ", text)  # code: figure and module names
    text = _NAME.sub(" ", text)
    return [token.replace(",", "") for token in _NUMBER.findall(text)]


def findings_rows(readme: str) -> list[list[str]]:
    """The cells of each row of the first table under '## What it found'."""
    section = readme.split("\n## What it found", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert len(lines) > 2, "no table under '## What it found'"
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines[2:]]


def summary_section(summary: str, figure: str) -> str:
    parts = re.split(r"^## ", summary, flags=re.MULTILINE)
    matches = [part for part in parts if part.split("\n", 1)[0].strip() == figure]
    assert matches, f"paper_figures/summary.md has no section '## {figure}'"
    return matches[0]


class Committed:
    """The numbers the committed results hold for one figure."""

    def __init__(self, figure: str):
        section = summary_section((FIGURES / "summary.md").read_text(), figure)
        self.tokens = set(numbers(section))
        self.estimates = set(_ESTIMATE.findall(section))
        self.values: set[float] = set()
        for path in [FIGURES / f"{figure}.csv", FIGURES / "headline.csv"]:
            with path.open(newline="") as handle:
                for row in csv.reader(handle):
                    if path.name == "headline.csv" and row[0] != figure:
                        continue
                    for cell in row:
                        try:
                            self.values.add(abs(float(cell)))
                        except ValueError:
                            self.tokens.update(numbers(cell))

    def holds(self, token: str) -> bool:
        if token in self.tokens:
            return True
        decimals = len(token.split(".")[1]) if "." in token else 0
        target = float(token)
        tolerance = 0.5 * 10.0**-decimals + 1e-9 if decimals else 1e-9
        return any(abs(value - target) <= tolerance or abs(100 * value - target) <= tolerance for value in self.values)


_committed: dict[str, Committed] = {}


def committed(figure: str) -> Committed:
    if figure not in _committed:
        _committed[figure] = Committed(figure)
    return _committed[figure]


def missing_numbers(rows: list[list[str]]) -> list[str]:
    problems = []
    for row in rows:
        figures = [name for name in re.findall(r"`([a-z_]+)`", row[0]) if (FIGURES / f"{name}.csv").is_file()]
        if not figures:
            problems.append(f"row {row[0][:60]!r} names no figure of paper_figures/ in backticks")
            continue
        text = " | ".join(row[:2])  # the papers' column quotes the papers
        for token in numbers(text):
            if not any(committed(figure).holds(token) for figure in figures):
                problems.append(f"{token} (row of {', '.join(figures)})")
        for estimate in _ESTIMATE.findall(text):  # each number may be in the results, but not together
            if not any(estimate in committed(figure).estimates for figure in figures):
                problems.append(f"{estimate[0]} [{estimate[1]}, {estimate[2]}] (row of {', '.join(figures)})")
    return problems


def test_every_number_of_the_readme_findings_table_is_in_the_committed_results():
    rows = findings_rows(README.read_text())
    assert rows
    problems = missing_numbers(rows)
    assert not problems, "numbers of README.md's 'What it found' table that paper_figures/ does not hold:\n  " + "\n  ".join(problems)


def test_every_number_of_the_findings_details_is_in_the_committed_results():
    """docs/findings.md, one section per figure (named in backticks in its heading); a section that
    names no figure may hold no number at all."""
    problems = []
    for section in re.split(r"^## ", DOCS.read_text(), flags=re.MULTILINE):
        heading, _, body = section.partition("\n")
        if re.search(r"`[a-z_]+`", heading):
            problems += missing_numbers([[heading, body]])
        elif numbers(body):
            problems.append(f"section {heading!r} names no figure but quotes {numbers(body)}")
    assert not problems, "numbers of docs/findings.md that paper_figures/ does not hold:\n  " + "\n  ".join(problems)


# --- the checker itself, on known answers ----------------------------------------------------------


def test_numbers_are_read_as_written_and_names_are_not_numbers():
    text = "VGG-8/MNIST -17.8% [16.7, 18.9] to iteration 64 on CIFAR-10 with ResNet-10 x1/8 at block2, 30,000 images, `phases`"
    assert numbers(text) == ["17.8", "16.7", "18.9", "64", "30000"]


def test_a_number_the_results_hold_passes_and_a_changed_one_fails():
    phases = committed("phases")
    assert phases.holds("18.8") and phases.holds("12.1") and phases.holds("64")
    assert phases.holds("0.979")  # final test accuracy, from the summary and the CSV
    assert not phases.holds("19.3") and not phases.holds("0.312") and not phases.holds("77.77")
    row = ["Three phases? (`phases`)", "decrease -18.8% [15.7, 21.8] to iteration 64", "three phases"]
    assert missing_numbers([row]) == []
    assert missing_numbers([[row[0], "decrease -19.3% [15.7, 21.8] to iteration 64", row[2]]]) == [
        "19.3 (row of phases)",
        "19.3 [15.7, 21.8] (row of phases)",
    ]
    assert missing_numbers([[row[0], "decrease -18.7% [15.7, 21.8] to iteration 64", row[2]]]) == ["18.7 [15.7, 21.8] (row of phases)"]
    assert missing_numbers([["Three phases?", row[1], row[2]]])[0].startswith("row ")
    assert missing_numbers([[row[0], row[1], "minimum at 12345"]]) == []  # the papers' numbers are quoted, not ours
