"""Mutual information of a layer with the input and the label: the information-bottleneck lens.

Beside the reconstruction loss (how much of the input a decoder can recover from a
layer), the information plane of Shwartz-Ziv & Tishby (2017) plots I(X;T) against I(T;Y) for a
layer T over training. Their claim of a "compression phase" (I(X;T) falling late in training) was
disputed by Saxe et al. (ICLR 2018), who found it for saturating tanh networks only and traced it
to the estimator. Both accounts are measured here on the same snapshots the reconstruction loss
is measured on, with two estimators. Every number is in bits.

The sample. X is the finite sample of images (uniform over the n images measured, all distinct),
Y its class label with the sample's class frequencies, T = f(X) the layer's output (flattened).
The network is deterministic, so the true I(X;T) of a continuous injective layer is infinite
(or H(X) = log2 n on the finite sample): both estimators make it finite on purpose, by
discretising T or by adding noise to it, and their numbers measure that choice as much as the
network. Neither estimate is comparable across layers of different width without this caveat.

Binning (`binning_information`, Shwartz-Ziv & Tishby; the variant Saxe et al. also use):
each neuron's value is put into one of `bins` uniform bins spanning the layer's observed range
at this snapshot (min to max over all neurons and images; `bin_range="neuron"` spans each
neuron's own range instead), and each image's row of bin indices is one discrete pattern.
Then I(X;T) = H(T) (T is a function of X) and I(T;Y) = H(T) + H(Y) - H(T,Y), plug-in
entropies of the empirical pattern frequencies. Known biases:
- I(X;T) <= log2 n, and it saturates at log2 n whenever the patterns are all distinct, which is
  almost always the case for layers wider than a few dozen neurons: wide layers say nothing.
- It depends on the bin count and on the range: Shwartz-Ziv & Tishby used fixed edges on
  [-1, 1] for tanh; a range taken per snapshot rescales with the activations, so a layer whose
  values spread out while a few outliers set the range loses "information" by construction.
- A saturating nonlinearity (tanh) pushes values into the two outermost bins: I(X;T) falls
  although the layer stays injective. This is Saxe et al.'s explanation of the compression phase
  (`tests/test_information.py` shows it on tanh(a x) for growing a). ReLU has no upper saturation.
- Plug-in entropies are biased low for few samples per pattern; I(T;Y) is then biased high.

KDE (`kde_information`, Kolchinsky & Tracey 2017, as used by Saxe et al. 2018): T is replaced
by T + N(0, noise_variance * I), so X -> T is a Gaussian channel and T's density is a mixture
of n Gaussians centred on the sample's representations h_i. Kolchinsky & Tracey's pairwise-
distance upper bound on the entropy of such a mixture, with KL divergences between components,
    H(T) <= d/2 log(2 pi e s2) - 1/n sum_i log( 1/n sum_j exp(-|h_i - h_j|^2 / (2 s2)) ),
gives, because H(T|X) = d/2 log(2 pi e s2) exactly,
    I(X;T) <= -1/n sum_i log( 1/n sum_j exp(-|h_i - h_j|^2 / (2 s2)) ),
and I(T;Y) = H_upper(T) - sum_y p(y) H_upper(T | Y=y) (the same bound within each class). The
d/2 log(2 pi e s2) terms cancel and are never formed (they would be thousands of bits for a wide
layer). Saxe et al.'s MNIST code (github artemyk/ibsgd, ComputeMI.ipynb) uses s2 = 0.1 on the
test-set activity; that is our default. Assumptions and known biases:
- The noise is an assumption, not a property of the network; the result scales with
  |h|^2 / s2, so it depends on the scale of the activations (a ReLU layer whose activations grow
  gains I(X;T) at constant "content"). It lies in [0, log2 n] and saturates at log2 n once the
  sample's representations are farther apart than a few noise standard deviations.
- It is an upper bound on the noisy I(X;T) (for Gaussian data, above the exact value by
  d/2 * r / (1 + r) nats with r = signal / noise variance, see the tests); I(T;Y) is a
  difference of two upper bounds, not itself a bound, but it never exceeds H(Y) of the sample.
- Cost is O(n^2 d): pairwise squared distances are formed `rows_per_batch` rows at a time.

Scale-free KDE (`relative_kde_information`): the same bound with the noise variance set per
layer and snapshot to `ratio` times the layer's total variance on the sample, tr Cov(T). Two
samples lie on average sqrt(2 tr Cov(T)) apart, so the kernel between typical samples is about
exp(-1 / (2 ratio)) whatever the layer's width or scale: multiplying T by any constant leaves
the estimate unchanged (tested), and layers of different width are put on one footing. It
answers "how many distinguishable groups does the sample form at this resolution", with the
resolution tied to the layer's spread rather than fixed in its units. With a fixed noise
variance (0.1) the estimate on a 64-unit layer of batch-normalised activations sits at log2 n
for every snapshot (typical squared distances ~100 >> 0.1), which is what the quick profile
shows; the relative noise is this module's addition, not Saxe et al.'s, and it inherits the
bound's other caveats (an upper bound under an assumed noise; I(T;Y) a difference of bounds).

Both estimators see only the order of rows through the labels and are exactly invariant to
permuting neurons (the KDE up to floating-point summation order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

BIN_RANGES = ("layer", "neuron")
# Bound the pairwise-distance block (rows x n float64 values) to ~64 MB.
_PAIRWISE_BLOCK_VALUES = 8_000_000


@dataclass(frozen=True)
class InformationEstimate:
    """I(X;T) and I(T;Y) of one layer, in bits, with the estimator that produced them."""

    mi_x_t: float
    mi_t_y: float
    estimator: str  # "binning:<bins>", "kde:<noise variance>" or "kde_relative:<ratio>"
    samples: int


@dataclass(frozen=True)
class InformationSettings:
    """How mutual information is estimated: bins, KDE noise variance, and how many test images."""

    bins: int = 30
    noise_variance: float = 0.1
    samples: int = 1000
    relative_noise: float | None = None  # the scale-free KDE's ratio to tr Cov(T); None: not estimated

    def __post_init__(self) -> None:
        check_bins(self.bins)
        check_noise_variance(self.noise_variance)
        if self.relative_noise is not None:
            check_relative_noise(self.relative_noise)
        if not isinstance(self.samples, (int, np.integer)) or isinstance(self.samples, bool) or self.samples < 2:
            raise ValueError(f"mutual-information samples must be an integer >= 2, got {self.samples!r}")


def check_bins(bins: int) -> None:
    if not isinstance(bins, (int, np.integer)) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"bins must be a positive integer (Shwartz-Ziv & Tishby: 30), got {bins!r}")


def check_noise_variance(noise_variance: float, name: str = "noise_variance", hint: str = " (Saxe et al.: 0.1)") -> None:
    if (
        isinstance(noise_variance, bool)
        or not isinstance(noise_variance, (int, float, np.floating, np.integer))
        or not math.isfinite(noise_variance)
        or noise_variance <= 0
    ):
        raise ValueError(f"{name} must be a positive finite number{hint}, got {noise_variance!r}")


def check_relative_noise(ratio: float) -> None:
    check_noise_variance(ratio, "relative_noise", " (a ratio to the layer's total variance, e.g. 0.1)")


def entropy_bits(labels: np.ndarray) -> float:
    """Plug-in entropy, in bits, of the empirical distribution of `labels` (any hashable 1-d values)."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    probabilities = counts / counts.sum()
    return float(-(probabilities * np.log2(probabilities)).sum())


def discretise(features: np.ndarray, bins: int, bin_range: str = "layer") -> np.ndarray:
    """Bin index (0 .. bins-1) of every value of `features` (n, d), uniform bins over the observed range.

    `bin_range="layer"`: one range for the whole layer (min to max over every neuron and image);
    `"neuron"`: each column's own min to max. The maximum falls into the last bin; a constant
    range puts everything into bin 0.
    """
    check_bins(bins)
    if bin_range not in BIN_RANGES:
        raise ValueError(f"bin_range={bin_range!r} is not valid; valid values: {list(BIN_RANGES)}")
    values = _as_matrix(features)
    axis = None if bin_range == "layer" else 0
    low = values.min(axis=axis, keepdims=True) if values.size else np.zeros((1, 1))
    high = values.max(axis=axis, keepdims=True) if values.size else np.zeros((1, 1))
    width = (high - low) / bins
    safe_width = np.where(width > 0, width, 1.0)
    index = np.floor((values - low) / safe_width)
    index = np.where(width > 0, index, 0)
    dtype = np.uint8 if bins <= 256 else np.int32
    return np.clip(index, 0, bins - 1).astype(dtype)


def pattern_ids(codes: np.ndarray) -> np.ndarray:
    """One integer per row of `codes`, equal for equal rows (which integer is arbitrary)."""
    codes = np.ascontiguousarray(codes)
    if codes.shape[1] == 0:
        return np.zeros(len(codes), dtype=np.int64)
    rows = codes.view(np.dtype((np.void, codes.dtype.itemsize * codes.shape[1]))).ravel()
    _, inverse = np.unique(rows, return_inverse=True)
    return inverse.ravel()


def binning_information(features: np.ndarray, labels: np.ndarray, bins: int = 30, bin_range: str = "layer") -> InformationEstimate:
    """I(X;T) and I(T;Y) in bits by binning each neuron into `bins` uniform bins (see the module docstring).

    `features`: (n, ...) layer outputs of n distinct inputs (flattened per row); `labels`: (n,) classes.
    """
    values, labels = _check_sample(features, labels)
    patterns = pattern_ids(discretise(values, bins, bin_range))
    h_t = entropy_bits(patterns)
    joint = patterns.astype(np.int64) * (int(labels.max()) + 1) + labels
    mi_t_y = h_t + entropy_bits(labels) - entropy_bits(joint)
    return InformationEstimate(mi_x_t=h_t, mi_t_y=max(mi_t_y, 0.0), estimator=f"binning:{bins}", samples=len(labels))


def kde_information(
    features: np.ndarray, labels: np.ndarray, noise_variance: float = 0.1, rows_per_batch: int | None = None
) -> InformationEstimate:
    """Kolchinsky-Tracey upper bound on I(X;T) and the matching I(T;Y), in bits, for T + N(0, noise_variance I).

    See the module docstring for the formulas, assumptions and biases. Pairwise distances are
    computed `rows_per_batch` rows at a time (default: a ~64 MB block).
    """
    check_noise_variance(noise_variance)
    values, labels = _check_sample(features, labels)
    count = len(values)
    if rows_per_batch is None:
        rows_per_batch = max(1, _PAIRWISE_BLOCK_VALUES // count)
    if not isinstance(rows_per_batch, (int, np.integer)) or rows_per_batch < 1:
        raise ValueError(f"rows_per_batch must be a positive integer, got {rows_per_batch!r}")
    # Centring changes no distance and keeps |a|^2 + |b|^2 - 2ab from cancelling catastrophically.
    centred = values - values.mean(axis=0, keepdims=True)
    squared_norms = np.einsum("ij,ij->i", centred, centred)
    classes, class_counts = np.unique(labels, return_counts=True)
    log_class_count = np.log(class_counts.astype(np.float64))[np.searchsorted(classes, labels)]
    log_all, log_own = np.empty(count), np.empty(count)
    for start in range(0, count, rows_per_batch):
        stop = min(start + rows_per_batch, count)
        distances = squared_norms[start:stop, None] + squared_norms[None, :] - 2.0 * centred[start:stop] @ centred.T
        np.maximum(distances, 0.0, out=distances)
        distances[np.arange(stop - start), np.arange(start, stop)] = 0.0  # exactly 0, whatever the rounding
        exponent = distances * (-0.5 / noise_variance)
        log_all[start:stop] = logsumexp(exponent, axis=1) - math.log(count)
        same_class = labels[start:stop, None] == labels[None, :]
        log_own[start:stop] = logsumexp(np.where(same_class, exponent, -np.inf), axis=1) - log_class_count[start:stop]
    # Mean over i of -log_all is H_upper(T) - H(T|X); weighting each class's mean by p(y) = n_y / n
    # is the plain mean over all rows, hence the second line.
    mi_x_t = -log_all.mean() / math.log(2)
    mi_t_y = (log_own.mean() - log_all.mean()) / math.log(2)
    return InformationEstimate(mi_x_t=float(mi_x_t), mi_t_y=float(mi_t_y), estimator=f"kde:{noise_variance:g}", samples=count)


def relative_kde_information(
    features: np.ndarray, labels: np.ndarray, ratio: float = 0.1, rows_per_batch: int | None = None
) -> InformationEstimate:
    """The KDE bound with noise variance `ratio` * tr Cov(T) of this sample: invariant to the layer's scale.

    See the module docstring ("Scale-free KDE"). A layer that is constant on the sample has no
    scale to relate the noise to: an error, not a number.
    """
    check_relative_noise(ratio)
    values, labels = _check_sample(features, labels)
    total_variance = float(values.var(axis=0).sum())
    if not total_variance > 0:
        raise ValueError("the layer is constant on this sample (total variance 0): no scale for the relative noise")
    estimate = kde_information(values, labels, ratio * total_variance, rows_per_batch)
    return InformationEstimate(
        mi_x_t=estimate.mi_x_t, mi_t_y=estimate.mi_t_y, estimator=f"kde_relative:{ratio:g}", samples=estimate.samples
    )


def _as_matrix(features: np.ndarray) -> np.ndarray:
    values = np.asarray(features, dtype=np.float64)
    if values.ndim < 2:
        raise ValueError(f"features must have shape (n, ...) with one row per input, got shape {values.shape}")
    return values.reshape(len(values), -1)


def _check_sample(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = _as_matrix(features)
    labels = np.asarray(labels)
    if labels.shape != (len(values),):
        raise ValueError(f"labels must have shape ({len(values)},) to match features {np.shape(features)}, got {labels.shape}")
    if len(values) < 2:
        raise ValueError(f"mutual information needs at least 2 samples, got {len(values)}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"labels must be non-negative integers, got dtype {labels.dtype} with minimum {labels.min()}")
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).any(axis=1).sum())
        raise ValueError(
            f"features hold NaN or infinite values in {bad} of {len(values)} rows; a diverged snapshot has no information estimate"
        )
    return values, labels.astype(np.int64)
