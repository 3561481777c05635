"""The planner: every selected figure's work as one task graph, without training anything.

    python -m reproduce.all --profile paper --dry-run     # graph size, longest chain, work per figure

Nodes (`kphases.cluster.Node`), parents always before children:
- one training task per run, named by its run hash (`train:<hash>`). A run several figures need is
  one task. The `early_phase` lineages are chains: the dense run, then IMP round 1, round 2, ...
  of each rewind point; perturbation and pre-training runs hang off the rounds and runs their
  lineage names (`LineageConfig.rewind_run`, `mask_run`), so seeds and rewind points are
  independent branches;
- one measurement task per (run, snapshot step) (`measure:<hash>@<step>`), depending on its run's
  training, holding every measurement config any figure asks of that step, in figure order.

What stays on the driver, after the graph (the figure pass of `reproduce.all`): drawing, the
figures that train nothing of the store (`data_model`, `theory`), and figure-level computations
that are not stored in a run (`reconstructions` keeps its decoders' images, `early_phase`'s
statistics of the dense run's snapshots).

Iterations are counted from each run's config and its training set's size (`train_examples`:
the config's subset, else the known size of the tfds split or the npz file's, read without
loading the images), so the paper profile is planned on a machine without its data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kphases.cluster import Node, measure_node_key, train_node_key
from kphases.config import DataConfig, RunConfig
from kphases.data import _load_embedded
from kphases.early_phase import experiment_runs
from kphases.training import make_plan
from reproduce.common import Options, Work, data_directory, steps_of_run

TFDS_SPLITS = {"mnist": (60_000, 10_000), "fashion_mnist": (60_000, 10_000), "cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000)}
"""Size of each tfds train split (the tfds catalogue)."""


def train_examples(data: DataConfig, options: Options) -> int:
    """How many training images the run of `data` trains on, without preprocessing any image."""
    return split_sizes(data, options)[0]


def split_sizes(data: DataConfig, options: Options) -> tuple[int, int]:
    """(train, test) images of the run of `data`: its subset sizes, else the npz file's or tfds split's."""
    train, test = data.train_size, data.test_size
    if train is not None and test is not None:
        return train, test
    full_train, full_test = _full_sizes(data, options)
    return (full_train if train is None else min(train, full_train)), (full_test if test is None else min(test, full_test))


def _full_sizes(data: DataConfig, options: Options) -> tuple[int, int]:
    if data.source == "tfds":
        if data.name not in TFDS_SPLITS:
            raise ValueError(f"no known tfds split sizes for {data.name!r}; known: {sorted(TFDS_SPLITS)}")
        return TFDS_SPLITS[data.name]
    if data.source == "directory":
        directory = data_directory(options)
        path = Path(directory or ".") / (data.file or f"{data.name}.npz")
        if directory is None or not path.is_file():
            raise ValueError(f"planning needs {path.name} in the data directory (--data-dir or KPHASES_DATA_DIR); not found: {path}")
        with np.load(path) as archive:  # an npz member is read only when asked for
            return int(archive["y_train"].shape[0]), int(archive["y_test"].shape[0])

    train_labels, test_labels = _load_embedded(data.name, data.subset_seed)[1], _load_embedded(data.name, data.subset_seed)[3]
    return len(train_labels), len(test_labels)


@dataclass(frozen=True)
class Graph:
    """The task graph: nodes in dependency order (`nodes[key]`), and the figures it was planned for."""

    nodes: dict[str, Node]
    figures: tuple[str, ...]

    def edges(self) -> list[tuple[str, str]]:
        return [(parent, node.key) for node in self.nodes.values() for parent in node.parents]

    def longest_chain(self) -> tuple[int, list[str]]:
        """(training iterations, node keys) of the heaviest dependency path: no number of machines
        finishes the graph sooner than training these iterations one after another."""
        best: dict[str, tuple[int, str | None]] = {}
        for node in self.nodes.values():
            parent = max(node.parents, key=lambda key: best[key][0], default=None)
            best[node.key] = (node.iterations + (best[parent][0] if parent else 0), parent)
        if not best:
            return 0, []
        key = max(best, key=lambda item: best[item][0])
        total, chain = best[key][0], []
        while key is not None:
            chain.append(key)
            key = best[key][1]
        return total, chain[::-1]


def _training_node(config: RunConfig, options: Options, figure: str, parents: tuple[str, ...] = ()) -> Node:
    plan = make_plan(config, train_examples(config.data, options))
    return Node(
        key=train_node_key(config),
        kind="train",
        config=config,
        parents=parents,
        iterations=plan.last_iteration - config.lineage.rewind_step,
        figures=(figure,),
        snapshot_steps=plan.snapshot_steps,
    )


def _add(nodes: dict[str, Node], node: Node) -> None:
    """Add a node; a node already planned by another figure gains that figure (and, for a measurement, its configs)."""
    known = nodes.get(node.key)
    if known is None:
        missing = [parent for parent in node.parents if parent not in nodes]
        if missing:
            raise ValueError(f"planner: {node.key} depends on {missing}, which are not planned before it")
        nodes[node.key] = node
        return
    figures = known.figures + tuple(figure for figure in node.figures if figure not in known.figures)
    measures = known.measures + tuple(config for config in node.measures if config not in known.measures)
    nodes[node.key] = dataclasses.replace(known, figures=figures, measures=measures)


def _work_nodes(nodes: dict[str, Node], figure: str, work: Sequence[Work], options: Options) -> None:
    for item in work:
        training = _training_node(item.planned.config, options, figure)
        _add(nodes, training)
        for step in training.snapshot_steps:
            configs = tuple(
                dataclasses.replace(config, steps=(step,)) for config in item.measures if steps_of_run(config, (step,)) is not None
            )
            if configs:
                _add(
                    nodes,
                    Node(
                        key=measure_node_key(item.planned.config, step),
                        kind="measure",
                        config=item.planned.config,
                        parents=(training.key,),
                        figures=(figure,),
                        step=step,
                        measures=configs,
                    ),
                )


def _early_phase_nodes(nodes: dict[str, Node], module, options: Options) -> None:
    planned, _ = module.experiment(options)
    last = make_plan(planned.base, train_examples(planned.base.data, options)).last_iteration
    for _, seeded, _ in module.seeded_experiments(planned, last, options.profile):
        for config in (entry.config for entry in experiment_runs(seeded, last)):
            parents = tuple(dict.fromkeys(f"train:{name}" for name in (config.lineage.rewind_run, config.lineage.mask_run) if name))
            _add(nodes, _training_node(config, options, module.NAME, parents))


def plan(modules: dict, options: Options) -> Graph:
    """The graph of the given figure modules (name -> module), in the order given."""
    nodes: dict[str, Node] = {}
    for name, module in modules.items():
        if name == "early_phase":
            _early_phase_nodes(nodes, module, options)
        elif hasattr(module, "work"):
            _work_nodes(nodes, name, module.work(options), options)
    return Graph(nodes, tuple(modules))


def describe(graph: Graph) -> str:
    """The --dry-run report: graph size, longest chain, work per figure."""
    nodes = list(graph.nodes.values())
    training = [node for node in nodes if node.kind == "train"]
    measuring = [node for node in nodes if node.kind == "measure"]
    total = sum(node.iterations for node in training)
    chain_iterations, chain = graph.longest_chain()
    chain_training = [key for key in chain if graph.nodes[key].kind == "train"]
    lines = [
        f"task graph: {len(nodes)} tasks ({len(training)} training, {len(measuring)} measurement), {len(graph.edges())} dependency edges",
        f"training: {total:,} iterations in all",
        f"longest chain: {chain_iterations:,} iterations over {len(chain_training)} trainings one after another "
        f"({chain_iterations / total:.1%} of all iterations; no cluster finishes sooner than this chain)"
        if total
        else "longest chain: no training",
        "",
        f"{'figure':<18} {'runs':>5} {'iterations':>13} {'measurement tasks':>18}  (shared runs count in every figure that uses them)",
    ]
    for figure in graph.figures:
        runs = [node for node in training if figure in node.figures]
        cells = [node for node in measuring if figure in node.figures]
        note = "" if runs or cells else "  (computed on the driver)"
        lines.append(f"{figure:<18} {len(runs):>5} {sum(node.iterations for node in runs):>13,} {len(cells):>18}{note}")
    if chain:
        lines += [
            "",
            "longest chain: " + " -> ".join(f"{key.split(':', 1)[1][:8]} ({graph.nodes[key].iterations:,} it)" for key in chain_training),
        ]
    return "\n".join(lines)


__all__ = ["Graph", "plan", "describe", "train_examples", "split_sizes", "TFDS_SPLITS"]
