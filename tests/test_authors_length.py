"""The authors'-length figure: its runs are the ones the committed evidence was trained as, its
options refuse bad seeds, and its per-snapshot table lines up ours with the authors' numbers."""

import pandas as pd
import pytest

from reproduce import authors_length, reference_run
from reproduce.common import Options


def test_seed_0_is_the_run_the_committed_figure_was_made_from():
    # paper_figures/authors_length.csv names this run; a change of config would retrain hours of work
    options = authors_length.LengthOptions(progress=False)
    assert authors_length.run_config(options, 0).hash() == "7a5eb27c0a48"
    assert authors_length.run_config(options, 0).training.duration == "65536it"


@pytest.mark.parametrize("text", ["", "a", "0,0", "-1", "0,,1"])
def test_bad_seeds_are_refused_naming_the_value(text):
    with pytest.raises(ValueError, match="--seeds"):
        authors_length.seeds_of(authors_length.LengthOptions(seeds=text))


def test_seed_0_alone_gets_the_trained_decoder_at_the_authors_iterations():
    items = authors_length.work(authors_length.LengthOptions(seeds="1,0"))
    assert [item.planned.label for item in items] == ["seed 1", "seed 0"]
    assert len(items[0].measures) == 1
    trained = items[1].measures[1]
    assert trained.decoders == ("linear",) and trained.steps == tuple(reference_run.AUTHORS)


def test_snapshot_table_puts_the_authors_numbers_beside_ours_at_their_iterations():
    rows = []
    for seed, offset in ((0, 0.0), (1, 0.02)):
        for step, value in ((0, 0.60), (8, 0.55), (16, 0.50)):
            rows.append(
                dict(
                    label=f"seed {seed}",
                    step=step,
                    metric="reconstruction_mse",
                    split="test",
                    value=value + offset,
                    instrument="linear_ridge",
                    bn_stats="batch",
                    layer="penultimate",
                )
            )
            rows.append(
                dict(
                    label=f"seed {seed}",
                    step=step,
                    metric="classifier_accuracy",
                    split="train",
                    value=0.1 * (step + 1),
                    instrument=None,
                    bn_stats=None,
                    layer=None,
                )
            )
            rows.append(
                dict(
                    label=f"seed {seed}",
                    step=step,
                    metric="classifier_accuracy",
                    split="test",
                    value=0.05,
                    instrument=None,
                    bn_stats=None,
                    layer=None,
                )
            )
    text = authors_length.snapshot_table(pd.DataFrame(rows))
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()}
    assert lines["| 0"].startswith("| 0 | 0.6100 (0.6000..0.6200) | 0.5913 | 0.100 | 0.098 |")
    assert lines["| 16"] == "| 16 | 0.5100 (0.5000..0.5200) |  | 1.700 |  | 0.050 |  |"


def test_without_the_cifar_copy_the_figure_is_skipped_not_faked(tmp_path, capsys):
    options = Options("smoke", tmp_path / "out", data_dir=str(tmp_path), progress=False)
    assert authors_length.compute(options).empty
    assert "no cifar10.npz" in capsys.readouterr().out


def test_a_headline_over_one_seed_says_one_seed_not_a_mean_of_one():
    assert reference_run.seeds_words(1) == "one seed"
    assert reference_run.seeds_words(3) == "mean of 3 seeds"
