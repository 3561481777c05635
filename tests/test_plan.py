"""The planner (reproduce.plan) on the paper profile: node count and dependency edges, no training, no data."""

from __future__ import annotations

import pytest

from reproduce.all import FIGURES, AllOptions, load_modules
from reproduce.common import parse_options
from reproduce.plan import describe, plan

ITERATIONS_PER_EPOCH = 391  # CIFAR-10: 50,000 images in batches of 128, the last one smaller
EARLY_DENSE = 160 * ITERATIONS_PER_EPOCH


@pytest.fixture(scope="module")
def paper():
    options = parse_options("", ["--profile", "paper"], AllOptions)
    return plan(load_modules(list(FIGURES)), options)


def _early(graph):
    return [node for node in graph.nodes.values() if "early_phase" in node.figures]


def test_paper_graph_size(paper):
    training = [node for node in paper.nodes.values() if node.kind == "train"]
    measuring = [node for node in paper.nodes.values() if node.kind == "measure"]
    # early_phase per seed: 1 dense + 6 rewind points x 12 rounds + 5 perturbations x 3 rounds
    # + 3 pre-training tasks x (1 pre-training + 3 rounds) = 100 runs; 3 seeds.
    assert len(_early(paper)) == 300
    # phases: 4 datasets x 5 architectures, 17 snapshots (0, 1, 2, 4, ..., 65536 and the last) each.
    phases_runs = [node for node in training if "phases" in node.figures]
    assert len(phases_runs) == 20
    assert all(len(node.snapshot_steps) == 17 for node in phases_runs)
    assert sum("phases" in node.figures for node in measuring) == 20 * 17
    # label_noise: 3 levels x 3 seeds of the paper's VGG-8/MNIST run, its 0% / seed 0 run shared with phases:
    # 8 more runs, 17 snapshots each.
    label_noise = [node for node in training if node.figures == ("label_noise",)]
    assert len(label_noise) == 8 and all(len(node.snapshot_steps) == 17 for node in label_noise)
    # transfer's CIFAR-10 class split: one VGG-8 pre-trained on classes 0-4 (one seed at paper), 17 snapshots.
    split = [node for node in training if node.config.data.classes is not None]
    assert len(split) == 1 and split[0].config.data.classes == (0, 1, 2, 3, 4)
    assert (len(training), len(measuring)) == (323 + 8 + 1, 391 + 8 * 17 + 17)


def test_paper_graph_edges(paper):
    nodes = paper.nodes
    for node in nodes.values():  # parents first, every measurement hangs on its run's training
        assert all(list(nodes).index(parent) < list(nodes).index(node.key) for parent in node.parents)
        if node.kind == "measure":
            assert node.parents == (f"train:{node.config.hash()}",)
    early = _early(paper)
    dense = [node for node in early if not node.parents]
    assert len(dense) == 3 and all(node.iterations == EARLY_DENSE for node in dense)
    imp = [
        node
        for node in early
        if node.config.lineage.mask_run
        and node.config.lineage.perturbation == "none"
        and node.config.lineage.rewind_run in {d.config.hash() for d in dense}
    ]
    assert len(imp) == 3 * 6 * 12
    for node in imp:  # round 1: pruned from the dense run it rewinds to; round r: also round r-1
        lineage = node.config.lineage
        expected = {f"train:{lineage.rewind_run}", f"train:{lineage.mask_run}"}
        assert set(node.parents) == expected and node.iterations == EARLY_DENSE - lineage.rewind_step
    # per seed: IMP 6 x (1 + 11 x 2), perturbations 15 x 2, pre-training 3 x 1, data 9 x 2 = 189
    assert sum(len(node.parents) for node in early) == 3 * 189
    assert len(paper.edges()) == 3 * 189 + 391 + 8 * 17 + 17


def test_paper_longest_chain_is_one_imp_lineage(paper):
    iterations, chain = paper.longest_chain()
    assert len(chain) == 13 and iterations == 13 * EARLY_DENSE  # dense run, then 12 rounds rewound to k = 0
    assert all(paper.nodes[later].parents and earlier in paper.nodes[later].parents for earlier, later in zip(chain, chain[1:]))
    report = describe(paper)
    assert "876 tasks (332 training, 544 measurement), 1111 dependency edges" in report
    assert f"longest chain: {13 * EARLY_DENSE:,} iterations over 13 trainings" in report


def test_dry_run_prints_the_graph_and_trains_nothing(tmp_path, capsys):
    from reproduce import all as reproduce_all

    assert reproduce_all.main(["--profile", "smoke", "--figures", "phases", "--dry-run", "--runs-dir", str(tmp_path / "runs")]) == 0
    printed = capsys.readouterr().out
    assert "task graph: 12 tasks (2 training, 10 measurement), 10 dependency edges" in printed
    assert not (tmp_path / "runs").exists()


def test_help_lists_every_option_with_its_default(capsys):
    from reproduce import all as reproduce_all

    with pytest.raises(SystemExit):
        reproduce_all.main(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--profile",
        "--out",
        "--plot-only",
        "--runs-dir",
        "--data-dir",
        "--no-progress",
        "--figures",
        "--dry-run",
        "--ray",
        "--gpus-per-task",
        "--max-retries",
    ):
        assert flag in text, flag
    assert "(default: quick)" in text


def test_unknown_figure_is_named(capsys):
    from reproduce import all as reproduce_all

    assert reproduce_all.main(["--figures", "phases,nonsense", "--dry-run"]) == 2
    assert "nonsense" in capsys.readouterr().err
