"""References in code and docs resolve: the protocol by file and heading, no issue numbers.

Scanned: every .py and .md file under kphases/, reproduce/, theory/, benchmarks/, examples/ and docs/.

How to cite the protocol (the only two forms this test accepts; `docs/protocol.md` is the file,
a heading is the text of one of its `#` lines, exactly):

    docs/protocol.md, "The snapshot schedule"              in a docstring or comment
    docs/protocol.md, section "The snapshot schedule"      the same, with the word
    `docs/protocol.md`, "The snapshot schedule"            the same, the path as code
    [protocol](docs/protocol.md#the-snapshot-schedule)     a markdown link, GitHub's anchor of the heading
    [protocol](protocol.md#the-snapshot-schedule)          the same from inside docs/

A quoted heading may wrap onto the next line (of a docstring, or of `#` comments). Every mention
of `protocol.md` must carry a heading, so a reader lands on the paragraph meant, and a heading
renamed in docs/protocol.md fails here until its citations follow. `PROTOCOL.md`, a file that does
not exist, may not be named at all. Issue numbers ("issue 20", "issue #7") belong in the
CHANGELOG and the tracker, not in code or docs, where they mean nothing to a reader without both.
The README's table of modules names every module of kphases/, and no other.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("kphases", "reproduce", "theory", "benchmarks", "examples", "docs")
PROTOCOL = ROOT / "docs" / "protocol.md"

# What may follow a mention of protocol.md: a markdown anchor, or a comma, optionally the word
# "section", and a heading in straight or curly double quotes.
_CITATION = re.compile(r"protocol\.md`?(?:#(?P<anchor>[\w-]+)|,\s*(?:section\s+)?[\"“](?P<heading>[^\"”]+)[\"”])?")
_ISSUE_NUMBER = re.compile(r"\bissues?\s*#?\s*\d+", re.IGNORECASE)


def headings(markdown: str) -> set[str]:
    """The heading texts of a markdown document (ATX headings, outside fenced code)."""
    found, fenced = set(), False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6}\s+(.+?)\s*#*\s*$", line)):
            found.add(match.group(1))
    return found


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _joined(text: str) -> str:
    """The text with line breaks (and the `#` of continued comments) as single spaces, so a quoted
    heading wrapped over two lines reads as one."""
    return re.sub(r"\s*\n\s*(?:#\s*)?", " ", text)


def unresolved_citations(text: str, known_headings: set[str]) -> list[str]:
    """Each mention of protocol.md in `text` that does not name a heading in `known_headings`, as quoted."""
    anchors = {anchor(heading) for heading in known_headings}
    problems = []
    for match in _CITATION.finditer(_joined(text)):
        if match["anchor"] is not None and match["anchor"] in anchors:
            continue
        if match["heading"] is not None and match["heading"] in known_headings:
            continue
        problems.append(match.group(0) if match["anchor"] or match["heading"] else "protocol.md without a heading")
    return problems


def scanned_files() -> list[Path]:
    return sorted(path for folder in SCANNED for path in (ROOT / folder).rglob("*") if path.suffix in (".py", ".md") and path.is_file())


def _problems(path: Path, known_headings: set[str]) -> list[str]:
    text = path.read_text(encoding="utf-8")
    problems = [f"names PROTOCOL.md (line {text[: match.start()].count(chr(10)) + 1})" for match in re.finditer("PROTOCOL.md", text)]
    problems += [f"cites {citation!r}" for citation in unresolved_citations(text, known_headings)]
    problems += [
        f"carries an issue number {match.group(0)!r} (line {text[: match.start()].count(chr(10)) + 1})"
        for match in _ISSUE_NUMBER.finditer(text)
    ]
    return problems


def test_every_reference_in_code_and_docs_resolves():
    known = headings(PROTOCOL.read_text(encoding="utf-8"))
    failures = {str(path.relative_to(ROOT)): problems for path in scanned_files() if (problems := _problems(path, known))}
    assert not failures, "references that do not resolve:\n" + "\n".join(
        f"  {name}: {'; '.join(problems)}" for name, problems in sorted(failures.items())
    )


def readme_modules(readme: str) -> set[str]:
    """The modules named in the first column of the README's table under "The modules of `kphases/`"."""
    table = readme.split("The modules of `kphases/`", 1)[1].split("\n\n", 2)[1]
    return {name for line in table.splitlines()[2:] for name in re.findall(r"`([\w.]+)`", line.split("|")[1])}


def test_the_readme_lists_every_module_of_the_library():
    modules = {path.stem for path in (ROOT / "kphases").glob("*.py") if path.stem != "__init__"}
    listed = readme_modules((ROOT / "README.md").read_text(encoding="utf-8"))
    assert listed == modules, (
        f"missing from README's module table: {sorted(modules - listed)}; listed but not modules: {sorted(listed - modules)}"
    )


# --- the checker itself, on known answers ----------------------------------------------------------

KNOWN = {"The snapshot schedule", "Frankle, Schwab & Morcos (ICLR 2020)"}


@pytest.mark.parametrize(
    "text",
    [
        'weights after s updates (docs/protocol.md, "The snapshot schedule").',
        'see docs/protocol.md, section "The snapshot schedule"',
        '(`docs/protocol.md`, "The snapshot\nschedule")',
        "see docs/protocol.md, section “The snapshot schedule”",
        'measured (docs/protocol.md, "The snapshot\n    schedule"): wrapped in a docstring',
        '# the rewind (docs/protocol.md, "Frankle, Schwab &\n# Morcos (ICLR 2020)"): wrapped in comments',
        "[the schedule](docs/protocol.md#the-snapshot-schedule)",
        "[Frankle et al.](protocol.md#frankle-schwab--morcos-iclr-2020)",
    ],
)
def test_a_citation_of_an_existing_heading_resolves(text):
    assert unresolved_citations(text, KNOWN) == []


@pytest.mark.parametrize(
    "text",
    [
        "the schedule (docs/protocol.md)",
        'docs/protocol.md, "Measurement schedule"',  # no such heading
        'docs/protocol.md, "the snapshot schedule"',  # headings are exact
        "[the schedule](docs/protocol.md#measurement-schedule)",
        "docs/protocol.md section 1",
    ],
)
def test_a_citation_without_an_existing_heading_is_reported(text):
    assert len(unresolved_citations(text, KNOWN)) == 1


def test_headings_and_anchors_are_read_as_github_does():
    assert headings("# Title\n\n## The snapshot schedule\n```\n# not a heading\n```\ntext # no\n") == {"Title", "The snapshot schedule"}
    assert anchor("Training the classifier (paper profile)") == "training-the-classifier-paper-profile"
    assert anchor("Frankle, Schwab & Morcos (ICLR 2020)") == "frankle-schwab--morcos-iclr-2020"
    assert headings(PROTOCOL.read_text(encoding="utf-8")) >= {"The snapshot schedule", "Verdicts"}


@pytest.mark.parametrize("text", ["(issue 20 item 16)", "Issue 7: beside", "see issue #33", "issues 17"])
def test_issue_numbers_are_found(text):
    assert _ISSUE_NUMBER.search(text)


@pytest.mark.parametrize("text", ["a known issue with BLAS", "the issue's wording", "tissue 3"])
def test_words_that_are_not_issue_numbers_pass(text):
    assert not _ISSUE_NUMBER.search(text)
