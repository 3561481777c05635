"""reproduce.compare: which numbers of a figure table are compared, and within which tolerances."""

import pandas as pd

from reproduce.compare import ACCURACY_TOLERANCE, compare, headline


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
