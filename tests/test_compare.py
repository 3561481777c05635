"""reproduce.compare: which numbers of a figure table are compared, and within which tolerances."""

import pandas as pd

from reproduce.compare import ACCURACY_TOLERANCE, compare, compare_verdicts, headline


def _write(directory, rows):
    directory.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(directory / "phases.csv", index=False)


def _rows(accuracy, reconstruction, run="aaaa"):
    return [
        {"label": "VGG-8", "run": run, "step": 64, "metric": "classifier_accuracy", "split": "test", "value": accuracy},
        {"label": "VGG-8", "run": run, "step": 64, "metric": "reconstruction_mse", "split": "test", "value": reconstruction},
        {"label": "VGG-8", "run": run, "step": 64, "metric": "classifier_loss", "split": "test", "value": 9.9},
    ]


def test_headline_keeps_accuracies_and_reconstruction_keyed_without_the_run_hash(tmp_path):
    _write(tmp_path, _rows(0.9, 0.2))
    table = headline(tmp_path)
    assert sorted(table["kind"]) == ["accuracy", "reconstruction"]  # the loss is not a headline number
    assert all("run=" not in key for key in table["key"])


def test_within_tolerance_matches_and_outside_differs(tmp_path):
    _write(tmp_path / "reference", _rows(0.90, 0.200, run="old"))
    _write(tmp_path / "close", _rows(0.90 + ACCURACY_TOLERANCE * 0.9, 0.203, run="new"))
    _write(tmp_path / "far", _rows(0.90 + ACCURACY_TOLERANCE * 1.5, 0.200))
    _write(tmp_path / "far_mse", _rows(0.90, 0.210))
    reference = headline(tmp_path / "reference")
    assert compare(headline(tmp_path / "close"), reference) == ["phases: matches (2 numbers within tolerance)"]
    assert compare(headline(tmp_path / "far"), reference)[0].startswith("phases: differs: 1 of 2 numbers outside tolerance")
    assert compare(headline(tmp_path / "far_mse"), reference)[0].startswith("phases: differs: 1 of 2")


def test_missing_and_new_figures_are_named(tmp_path):
    _write(tmp_path / "reference", _rows(0.9, 0.2))
    _write(tmp_path / "other", _rows(0.9, 0.2)[:1])
    line = compare(headline(tmp_path / "other"), headline(tmp_path / "reference"))[0]
    assert line == "phases: matches (1 numbers within tolerance; 1 reference numbers not produced)"
    empty = pd.DataFrame(columns=["figure", "key", "kind", "value"])
    assert compare(empty, headline(tmp_path / "reference")) == ["phases: not produced by this run"]


def test_a_reference_of_another_scale_is_named_not_comparable_instead_of_crashing(tmp_path):
    # the reference read back from its CSV, with runs labelled differently: nothing in common
    reference_rows = [dict(row, label="VGG-8 x1/2") for row in _rows(0.9, 0.2)]
    _write(tmp_path / "reference", reference_rows)
    _write(tmp_path / "here", _rows(0.9, 0.2))
    headline(tmp_path / "reference").to_csv(tmp_path / "reference.csv", index=False)
    lines = compare(headline(tmp_path / "here"), pd.read_csv(tmp_path / "reference.csv"))
    assert lines == ["phases: no numbers in common with the reference (2 there, 2 here): not comparable"]


def test_verdicts_are_compared_figure_by_figure_in_order():
    reference = "# h\n\n## phases\n| a | three phases: ... |\n| b | not three phases |\n## early_phase\nundecided; lower\n"
    same = reference.replace("| a |", "| A |")
    flipped = reference.replace("| b | not three phases", "| b | three phases")
    assert compare_verdicts(same, reference) == ["verdicts: every figure's verdicts are the reference's"]
    assert compare_verdicts(flipped, reference) == [
        "phases: verdicts differ: 2 here, 2 in the reference, 1 of the 2 compared in order differ "
        "(first: 'three phases' here, 'not three phases' in the reference)"
    ]
    fewer = reference.replace("undecided; lower", "undecided")
    assert compare_verdicts(fewer, reference) == [
        "early_phase: verdicts differ: 1 here, 2 in the reference, 0 of the 1 compared in order differ "
        "(first: '(none)' here, 'lower' in the reference)"
    ]
    helped = reference.replace("undecided; lower", "helps; does not help")
    assert compare_verdicts(helped.replace("does not help", "helps"), helped) == [
        "early_phase: verdicts differ: 2 here, 2 in the reference, 1 of the 2 compared in order differ "
        "(first: 'helps' here, 'does not help' in the reference)"
    ]
