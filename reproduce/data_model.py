"""Figure `data_model`: the theory's data model on real data: many samples close to their class mean, a few far.

The single-layer theory (`theory/`) assumes most samples of a class lie close to a class prototype
and a few lie far from it (outliers, or samples closer to another class's prototype): "fitting the
majority, then a few". For each dataset of the profile we compute, on the normalised train images
(flattened), each sample's cosine to its own class mean, and whether it is closer (in cosine) to
another class's mean. The histograms show the distribution; the table gives its quantiles and the
fraction of samples closer to another prototype.

    python -m reproduce.data_model [--profile smoke|quick|full|paper] [--plot-only] [--out DIR]

Scale: no training, so every profile reads the same images: the embedded MNIST at quick, the
offline MNIST, Fashion-MNIST and CIFAR-10 copies at full; summary.md holds the numbers.

Numbers you should see (full, KPHASES_DATA_DIR set; no training, so any CPU gives them to rounding): median cosine to the own class mean MNIST 0.678,
Fashion-MNIST 0.811, CIFAR-10 0.318; closer to another class's mean than to their own: 18.5%,
31.2% and 70.4% of train images (10,000 / 10,000 / 4,000).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kphases.config import DataConfig
from kphases.data import load_dataset
from kphases.outliers import own_and_other_cosines
from reproduce.common import Options, has_offline, run_figure, save_figure
from reproduce.plotting import grid

NAME = "data_model"


def datasets(options: Options) -> list[DataConfig]:
    if options.profile == "paper":
        return [DataConfig(name, "tfds") for name in ("mnist", "fashion_mnist", "cifar10", "cifar100")]
    size = 1000 if options.profile == "smoke" else 10_000
    offline = [
        DataConfig(name, "directory", train_size=size if name != "cifar10" else None, test_size=100)
        for name in ("mnist", "fashion_mnist", "cifar10")
        if has_offline(name, options)
    ]
    return offline or [DataConfig("mnist", "embedded"), DataConfig("digits", "embedded")]


def alignment(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cosine of each sample to its class mean, best cosine to any other class mean): the outlier measure of `kphases.outliers`."""
    return own_and_other_cosines(images, labels)


def compute(options: Options) -> pd.DataFrame:
    tables = []
    for config in datasets(options):
        data = load_dataset(config, options.data_dir)
        own, other = alignment(data.x_train, data.y_train)
        tables.append(
            pd.DataFrame(
                {
                    "dataset": f"{config.name} ({config.source}, {len(own)} train images)",
                    "label": data.y_train,
                    "cosine_own_mean": own,
                    "cosine_best_other_mean": other,
                }
            )
        )
    return pd.concat(tables, ignore_index=True)


def plot(table: pd.DataFrame, options: Options):
    names = list(dict.fromkeys(table["dataset"]))
    figure, axes = grid(len(names), columns=min(3, len(names)), width=3.6, height=2.8)
    lines = [
        "| dataset | median cosine to own class mean | 5% quantile | 1% quantile | closer to another class's mean |",
        "|---|---|---|---|---|",
    ]
    fractions = []
    for axis, name in zip(axes, names):
        part = table[table["dataset"] == name]
        own = part["cosine_own_mean"].to_numpy()
        closer = float(np.mean(part["cosine_best_other_mean"].to_numpy() > own))
        fractions.append(closer)
        axis.hist(own, bins=60, color="C0", alpha=0.8)
        low = np.quantile(own, 0.05)
        axis.axvline(low, color="C3", ls=":", lw=1, label=f"5% quantile {low:.2f}")
        axis.set_title(f"{name}\n{closer:.1%} closer to another class's mean", fontsize=8)
        axis.set_xlabel("cosine to own class mean")
        axis.legend()
        lines.append(f"| {name} | {np.median(own):.3f} | {low:.3f} | {np.quantile(own, 0.01):.3f} | {closer:.1%} |")
    axes[0].set_ylabel("train images")
    figure.suptitle(f"The data model on real data: alignment of each sample with its class prototype ({options.profile} profile)")
    figure.tight_layout()
    save_figure(figure, options, NAME)
    return f"{min(fractions):.1%}-{max(fractions):.1%} of samples closer to another class's mean than to their own", "\n".join(lines)


def main(argv=None) -> str:
    return run_figure(NAME, compute, plot, argv, __doc__)


if __name__ == "__main__":
    main()
