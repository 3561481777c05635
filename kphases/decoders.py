"""Reconstruction of the normalised input image from a layer's features: the paper's main curve.

docs/protocol.md, "What is measured at each snapshot": at every snapshot a decoder is trained from
scratch on the train split's features of the frozen network to reproduce the normalised input
image, and its MSE on the test split is the reconstruction loss whose three phases (constant,
decrease, increase) the paper reports (its Figure 1 and the README table).

Three decoders, one entry point `fit_decoder(kind, ...)`:

- "linear": the authors' default, reproduced exactly: flatten, one affine Dense layer to the
  H*W*C image, PyTorch's default initialisation, MSE, batch 128, 20 epochs, reshuffled each
  epoch, Adam with learning rate 3e-4 and weight_decay 1e-5. PyTorch's Adam weight_decay is a
  coupled L2 term added to the gradient before the moment estimates, not Keras' (or AdamW's)
  decoupled decay; `TorchAdam` implements torch.optim.Adam's update, including where it adds
  epsilon (to the bias-corrected root of the second moment: Keras adds it before the
  correction, which differs when gradients are as small as ~1e-6). Departures: float32
  throughout (the authors train under CUDA autocast, i.e. partly float16), and an optional
  step budget (`DecoderSettings.min_update_steps`): with a train subset of a few thousand
  images, 20 epochs are far fewer Adam updates than the authors' 7,820 (391 batches x 20
  epochs on CIFAR-10), and an undertrained decoder shows a spurious early "decrease".
- "linear_exact": the exact minimiser of the same affine least-squares objective, solved in
  closed form (streamed normal equations in float64). It is the limit the trained linear
  decoder approaches, free of optimisation noise; it omits the 1e-5 L2 term, which is
  negligible next to the data term.
- "linear_ridge": the same affine decoder with a ridge penalty chosen on the train split alone
  by generalised cross-validation (`fit_linear_ridge_decoder`); `linear_exact` interpolates wide
  features (train MSE ~0.006 against a jagged test MSE of 0.08-0.13 on VGG-8/MNIST block2) and
  is kept, unregularised, under its own name for comparison.
- "cladec": the ClaDec-style deconvolution decoder of the authors' cladec.py (architecture in
  `build_cladec_decoder`), trained like "linear".

Reported numbers (`ReconstructionResult`): the per-element MSE on the test split (what we plot)
and the authors' scale, the sum over test batches of 128 of the batch-mean MSE (their getMSE:
about 79 x the per-element MSE for the 10,000 CIFAR test images, the last partial batch counting
as one batch).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from collections.abc import Callable

import keras
import numpy as np
import scipy.linalg
import tensorflow as tf

from kphases.data import batch_bounds
from kphases.epochs import train_epochs
from kphases.models import Conv2DTranspose
from kphases.optimizers import TorchAdam  # noqa: F401 (re-exported: kphases.decoders.TorchAdam)

DECODER_KINDS = ("linear", "linear_exact", "linear_ridge", "cladec")
# Settings fields that only linear_ridge reads: left out of the other decoders' protocol hashes, so
# their measured cells are not recomputed because the ridge decoder was added.
_RIDGE_FIELDS = ("ridge_grid_low", "ridge_grid_high", "ridge_grid_points")
AUTHORS_CIFAR10_UPDATE_STEPS = 7820  # 391 batches of 128 (50,000 images) x 20 epochs
CLADEC_BASE_CHANNELS = 64  # the authors' channel_mult (64 x their width multiplier, 1 by default)
_EXACT_CHUNK_ROWS = 1024  # rows per float64 chunk when accumulating the normal equations


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class DecoderSettings:
    """How a reconstruction decoder is trained and evaluated (defaults: the authors' protocol)."""

    epochs: int = 20  # authors: 20 epochs over the train split
    batch_size: int = 128  # authors: 128, for training and for the test batches of the reported sum
    learning_rate: float = 3e-4  # authors: Adam lr 3e-4
    weight_decay: float = 1e-5  # authors: coupled L2, torch.optim.Adam(weight_decay=1e-5)
    min_update_steps: int | None = None  # raise the epochs until at least this many Adam updates (None: epochs as given)
    seed: int = 0  # decoder initialisation and the per-epoch shuffles
    exact_max_feature_dim: int = 16384  # linear_exact: refuse wider features (float64 normal matrix is 8 d^2 bytes)
    exact_relative_ridge: float = 1e-8  # linear_exact: ridge = this x trace(feature covariance) / d
    keep_reconstructions: int = 0  # return the reconstructions of the first this many test images (for figures)
    ridge_grid_low: float = 1e-6  # linear_ridge: smallest candidate penalty, x the mean eigenvalue trace(C) / d
    ridge_grid_high: float = 1e3  # linear_ridge: largest candidate penalty, same unit
    ridge_grid_points: int = 46  # linear_ridge: candidates, log-spaced (46: 5 per decade over 1e-6 .. 1e3)

    def __post_init__(self) -> None:
        _require(isinstance(self.epochs, int) and self.epochs >= 1, f"epochs must be an integer >= 1, got {self.epochs!r}")
        _require(
            isinstance(self.batch_size, int) and self.batch_size >= 1,
            f"batch_size must be an integer >= 1, got {self.batch_size!r}",
        )
        _require(self.learning_rate > 0, f"learning_rate must be positive, got {self.learning_rate!r}")
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay!r}")
        _require(
            self.min_update_steps is None or (isinstance(self.min_update_steps, int) and self.min_update_steps >= 1),
            f"min_update_steps must be None or an integer >= 1, got {self.min_update_steps!r}",
        )
        _require(
            isinstance(self.exact_max_feature_dim, int) and self.exact_max_feature_dim >= 1,
            f"exact_max_feature_dim must be an integer >= 1, got {self.exact_max_feature_dim!r}",
        )
        _require(self.exact_relative_ridge > 0, f"exact_relative_ridge must be positive, got {self.exact_relative_ridge!r}")
        _require(
            0 < self.ridge_grid_low < self.ridge_grid_high,
            f"need 0 < ridge_grid_low < ridge_grid_high, got {self.ridge_grid_low!r} and {self.ridge_grid_high!r}",
        )
        _require(
            isinstance(self.ridge_grid_points, int) and self.ridge_grid_points >= 2,
            f"ridge_grid_points must be an integer >= 2, got {self.ridge_grid_points!r}",
        )

    def protocol_dict(self, kind: str) -> dict:
        """The fields that define decoder `kind`'s measurement (hashed into its cells' protocol)."""
        values = dataclasses.asdict(self)
        if kind != "linear_ridge":
            for name in _RIDGE_FIELDS:
                del values[name]
        return values

    def ridge_grid(self) -> np.ndarray:
        """linear_ridge's candidate penalties, in units of the mean eigenvalue of the feature covariance."""
        return np.logspace(math.log10(self.ridge_grid_low), math.log10(self.ridge_grid_high), self.ridge_grid_points)

    def steps_per_epoch(self, num_train_samples: int) -> int:
        """Updates per epoch: every batch counts, the last partial one too (PyTorch drop_last=False)."""
        return math.ceil(num_train_samples / self.batch_size)

    def epochs_for(self, num_train_samples: int) -> int:
        """`epochs`, raised if needed so that the decoder gets at least `min_update_steps` updates."""
        if self.min_update_steps is None:
            return self.epochs
        return max(self.epochs, math.ceil(self.min_update_steps / self.steps_per_epoch(num_train_samples)))


@dataclasses.dataclass(frozen=True)
class ReconstructionResult:
    """One decoder's reconstruction of the normalised image from one layer's features."""

    mse_per_element_test: float  # mean over test images, pixels and channels of the squared error
    authors_scale_test: float  # sum over test batches of batch_size of the batch-mean MSE (the authors' number)
    mse_per_element_train: float  # the same per-element mean on the train split
    update_steps: int  # optimiser updates the decoder got (0 for linear_exact)
    decoder: str  # "linear", "linear_exact" or "cladec"
    epochs: int  # epochs actually trained (0 for linear_exact)
    batch_size: int  # training batch size and the test batch size of authors_scale_test
    test_reconstructions: np.ndarray | None = None  # (keep_reconstructions, H, W, C) when asked for, else None
    test_errors_per_image: np.ndarray | None = None  # (test images,) float32 MSE per image, mean over pixels
    ridge_penalty: float | None = None  # linear_ridge: the chosen penalty (absolute, on the centred covariance sum)
    ridge_relative_penalty: float | None = None  # linear_ridge: the same / the mean eigenvalue trace(C) / d
    ridge_effective_parameters: float | None = None  # linear_ridge: sum of eigenvalue / (eigenvalue + penalty)


def fit_decoder(
    kind: str,
    train_features: np.ndarray,
    train_images: np.ndarray,
    test_features: np.ndarray,
    test_images: np.ndarray,
    settings: DecoderSettings = DecoderSettings(),
) -> ReconstructionResult:
    """Fit decoder `kind` ("linear", "linear_exact", "linear_ridge" or "cladec") on the train split, evaluate on both.

    Features are (n, d) or (n, H', W', C') float arrays; images are the normalised (n, H, W, C)
    inputs the features came from, in the same order.
    """
    # The trained decoders differ only in their architecture; the closed-form ones are solved, not trained.
    builders: dict[str, Callable[..., keras.Model]] = {"linear": build_linear_decoder, "cladec": build_cladec_decoder}
    solvers: dict[str, Callable[..., ReconstructionResult]] = {
        "linear_exact": fit_linear_exact_decoder,
        "linear_ridge": fit_linear_ridge_decoder,
    }
    if kind in builders:
        return _fit_trained_decoder(kind, builders[kind], train_features, train_images, test_features, test_images, settings)
    if kind in solvers:
        return solvers[kind](train_features, train_images, test_features, test_images, settings)
    raise ValueError(f"unknown decoder kind {kind!r}; valid kinds: {list(DECODER_KINDS)}")


def fit_linear_exact_decoder(
    train_features: np.ndarray,
    train_images: np.ndarray,
    test_features: np.ndarray,
    test_images: np.ndarray,
    settings: DecoderSettings = DecoderSettings(),
) -> ReconstructionResult:
    """The exact affine least-squares decoder, in closed form.

    Minimises the mean over train images of ||W f + b - y||^2 (f the flattened features, y the
    flattened image). The bias is solved by centring: with feature covariance C = sum (f - mean_f)
    (f - mean_f)^T and cross-covariance X = sum (f - mean_f)(y - mean_y)^T, W = (C + ridge I)^-1 X
    and b = mean_y - W^T mean_f, so the bias is never shrunk. Both sums are accumulated in float64
    over chunks of 1,024 train images, after subtracting the first chunk's mean to limit
    cancellation. The ridge, `exact_relative_ridge` (1e-8) times the average eigenvalue
    trace(C) / d, only makes rank-deficient features (dead units, fewer images than dimensions)
    solvable; directions with variance far above it are unaffected. Constant features (C = 0)
    give W = 0: the prediction is the mean train image. The system is solved by Cholesky; should
    rounding leave the regularised covariance not positive definite, by eigendecomposition (with
    a RuntimeWarning). The 1e-5 L2 term of the trained decoder is left out: this is the limit of
    the unregularised objective, and that term is negligible next to the data term.

    Memory: 8 (d^2 + 2 d P) bytes in float64 for d features and P = H*W*C pixels, plus one chunk:
    about 2.9 GB at d = 16,384 and P = 3,072 (a 32x32x3 image), 0.7 GB at d = 8,192. Features
    wider than `settings.exact_max_feature_dim` (16,384) raise ValueError before anything is
    allocated. Time grows as n d^2 (accumulation) plus d^3 / 3 (solve); measured on two CPU
    cores with 32x32x3 images: 0.8 s for d = 512 and n = 4,000, 7 s for n = 50,000, 23 s for
    d = 8,192 and n = 4,000 (minutes at n = 50,000).
    """
    train_flat, train_targets, test_flat, test_targets = _check_splits(train_features, train_images, test_features, test_images)
    num_train, feature_dim = train_flat.shape
    pixel_count = train_targets.shape[1]
    if feature_dim > settings.exact_max_feature_dim:
        needed_gib = 8 * (feature_dim**2 + 2 * feature_dim * pixel_count) / 2**30
        raise ValueError(
            f"linear_exact would need a {feature_dim} x {feature_dim} float64 normal matrix "
            f"(about {needed_gib:.1f} GiB with the {feature_dim} x {pixel_count} cross terms) for "
            f"{feature_dim}-dimensional features; the limit is exact_max_feature_dim="
            f"{settings.exact_max_feature_dim}. Use the trained 'linear' decoder, or raise the limit."
        )
    moments = _centred_moments(train_flat, train_targets)
    average_eigenvalue = np.trace(moments.covariance) / feature_dim
    if average_eigenvalue <= 0:
        weights = np.zeros((feature_dim, pixel_count))
    else:
        ridge = settings.exact_relative_ridge * average_eigenvalue
        try:
            weights = _solve_by_cholesky(moments.covariance, moments.cross, ridge)
        except np.linalg.LinAlgError:
            warnings.warn(
                f"linear_exact: the {feature_dim}-dimensional feature covariance plus ridge {ridge:.3g} is "
                "not numerically positive definite; solving by eigendecomposition with negative eigenvalues set to zero",
                RuntimeWarning,
                stacklevel=2,
            )
            moments = _centred_moments(train_flat, train_targets)  # the failed factorisation overwrote them
            weights = _solve_by_eigendecomposition(moments.covariance, moments.cross, ridge)
    moments.covariance = moments.cross = None  # free the d x d and d x P float64 matrices
    bias = moments.target_mean - moments.feature_mean @ weights
    return _affine_result("linear_exact", weights, bias, (train_flat, train_targets), (test_flat, test_targets), test_images, settings)


def fit_linear_ridge_decoder(
    train_features: np.ndarray,
    train_images: np.ndarray,
    test_features: np.ndarray,
    test_images: np.ndarray,
    settings: DecoderSettings = DecoderSettings(),
) -> ReconstructionResult:
    """The affine decoder with a ridge penalty chosen on the train split alone, by generalised cross-validation.

    Why: `linear_exact` interpolates when the features are wide (block outputs of thousands of
    dimensions fitted on 10,000 images): its train MSE falls towards 0 while its test MSE jumps
    between neighbouring snapshots. Here W = (C + penalty I)^-1 X with C, X the centred covariance
    and cross-covariance sums of `linear_exact` (the bias is never shrunk), and the penalty is the
    minimiser over `settings.ridge_grid()` (log-spaced multiples of the mean eigenvalue
    trace(C) / d; default 1e-6 .. 1e3, 46 points) of the GCV score
        (RSS(penalty) / (n P)) / (1 - (df(penalty) + 1) / n)^2,
    RSS the train residual sum of squares over all P pixels, df = sum_i e_i / (e_i + penalty) the
    effective number of parameters per pixel, +1 for the bias (Golub, Heath & Wahba 1979; GCV is
    the rotation-invariant form of leave-one-out cross-validation). One eigendecomposition
    C = V diag(e) V^T in float64 gives every candidate: with z_i = ||(V^T X)_i||^2 and T the total
    centred sum of squares of the targets, RSS = T - sum_i z_i (e_i + 2 penalty) / (e_i + penalty)^2.
    One penalty is shared by all pixels (one decoder). The test split is never looked at; the
    chosen penalty, relative penalty and df are returned (and stored with the cell's rows).

    Cost: the eigendecomposition is several times slower than `linear_exact`'s Cholesky solve
    (d^3 with a larger constant; `python -m benchmarks.measure` prints both); memory as
    `linear_exact` plus one d x d matrix of eigenvectors. Features wider than
    `exact_max_feature_dim` raise ValueError.
    """
    train_flat, train_targets, test_flat, test_targets = _check_splits(train_features, train_images, test_features, test_images)
    num_train, feature_dim = train_flat.shape
    pixel_count = train_targets.shape[1]
    if feature_dim > settings.exact_max_feature_dim:
        raise ValueError(
            f"linear_ridge would need a {feature_dim} x {feature_dim} float64 covariance and its eigenvectors for "
            f"{feature_dim}-dimensional features; the limit is exact_max_feature_dim={settings.exact_max_feature_dim}. "
            "Use the trained 'linear' decoder, or raise the limit."
        )
    moments = _centred_moments(train_flat, train_targets)
    target_total = _centred_sum_of_squares(train_targets, moments.target_mean)
    average_eigenvalue = float(np.trace(moments.covariance)) / feature_dim
    if average_eigenvalue <= 0:  # constant features: the mean image, whatever the penalty
        weights = np.zeros((feature_dim, pixel_count))
        penalty = relative = effective = 0.0
    else:
        eigenvalues, eigenvectors = scipy.linalg.eigh(moments.covariance, overwrite_a=True, check_finite=False, driver="evd")
        eigenvalues = np.maximum(eigenvalues, 0.0)  # rounding can leave a singular covariance a hair negative
        rotated_cross = eigenvectors.T @ moments.cross
        moments.covariance = moments.cross = None
        energy = np.sum(np.square(rotated_cross), axis=1)  # z_i
        relative_grid = settings.ridge_grid()
        scores = []
        for candidate in relative_grid * average_eigenvalue:
            residual = target_total - float(np.sum(energy * (eigenvalues + 2 * candidate) / (eigenvalues + candidate) ** 2))
            dof = float(np.sum(eigenvalues / (eigenvalues + candidate)))
            room = 1.0 - (dof + 1.0) / num_train
            scores.append(max(residual, 0.0) / (num_train * pixel_count) / room**2 if room > 0 else math.inf)
        best = int(np.argmin(scores))
        if not math.isfinite(scores[best]):
            raise ValueError(
                f"linear_ridge: every candidate penalty leaves no residual degrees of freedom "
                f"({num_train} train images, {feature_dim} features); raise ridge_grid_high"
            )
        relative = float(relative_grid[best])
        penalty = relative * average_eigenvalue
        effective = float(np.sum(eigenvalues / (eigenvalues + penalty)))
        weights = eigenvectors @ (rotated_cross / (eigenvalues + penalty)[:, None])
        del eigenvectors, rotated_cross
    moments.covariance = moments.cross = None
    bias = moments.target_mean - moments.feature_mean @ weights
    return _affine_result(
        "linear_ridge",
        weights,
        bias,
        (train_flat, train_targets),
        (test_flat, test_targets),
        test_images,
        settings,
        ridge_penalty=float(penalty),
        ridge_relative_penalty=relative,
        ridge_effective_parameters=effective,
    )


def _affine_result(
    decoder: str,
    weights: np.ndarray,
    bias: np.ndarray,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    test_images: np.ndarray,
    settings: DecoderSettings,
    **ridge: float,
) -> ReconstructionResult:
    """The result of a closed-form affine decoder (weights, bias in float64) on the flattened splits."""

    def predict(features_batch: np.ndarray) -> np.ndarray:
        return features_batch.astype(np.float64) @ weights + bias

    train_mse, _, _ = _reconstruction_errors(predict, *train, settings.batch_size)
    test_mse, authors_scale, test_per_image = _reconstruction_errors(predict, *test, settings.batch_size)
    return ReconstructionResult(
        mse_per_element_test=test_mse,
        authors_scale_test=authors_scale,
        mse_per_element_train=train_mse,
        update_steps=0,
        decoder=decoder,
        epochs=0,
        batch_size=settings.batch_size,
        test_reconstructions=_kept_reconstructions(predict, test[0], test_images, settings.keep_reconstructions),
        test_errors_per_image=test_per_image,
        **ridge,
    )


def _centred_sum_of_squares(targets: np.ndarray, mean: np.ndarray) -> float:
    """sum over images and pixels of (y - mean)^2, in float64 chunks."""
    total = 0.0
    for start, stop in batch_bounds(len(targets), _EXACT_CHUNK_ROWS):
        total += float(np.sum(np.square(targets[start:stop].astype(np.float64) - mean)))
    return total


@dataclasses.dataclass
class _CentredMoments:
    covariance: np.ndarray | None  # sum over images of (f - mean f)(f - mean f)^T, d x d
    cross: np.ndarray | None  # sum over images of (f - mean f)(y - mean y)^T, d x P
    feature_mean: np.ndarray
    target_mean: np.ndarray


def _centred_moments(features: np.ndarray, targets: np.ndarray) -> _CentredMoments:
    """Covariance and cross-covariance sums, streamed in float64 chunks of `_EXACT_CHUNK_ROWS` rows.

    The first chunk's mean is subtracted before accumulating, so that the final centring
    subtracts a small correction rather than cancelling two large sums.
    """
    count, feature_dim = features.shape
    feature_shift = features[:_EXACT_CHUNK_ROWS].astype(np.float64).mean(axis=0)
    target_shift = targets[:_EXACT_CHUNK_ROWS].astype(np.float64).mean(axis=0)
    feature_sum = np.zeros(feature_dim)
    target_sum = np.zeros(targets.shape[1])
    covariance = np.zeros((feature_dim, feature_dim))
    cross = np.zeros((feature_dim, targets.shape[1]))
    for start, stop in batch_bounds(count, _EXACT_CHUNK_ROWS):
        chunk_features = features[start:stop].astype(np.float64) - feature_shift
        chunk_targets = targets[start:stop].astype(np.float64) - target_shift
        feature_sum += chunk_features.sum(axis=0)
        target_sum += chunk_targets.sum(axis=0)
        covariance += chunk_features.T @ chunk_features
        cross += chunk_features.T @ chunk_targets
    shifted_feature_mean = feature_sum / count
    shifted_target_mean = target_sum / count
    covariance -= count * np.outer(shifted_feature_mean, shifted_feature_mean)
    cross -= count * np.outer(shifted_feature_mean, shifted_target_mean)
    return _CentredMoments(covariance, cross, feature_shift + shifted_feature_mean, target_shift + shifted_target_mean)


def _solve_by_cholesky(covariance: np.ndarray, cross: np.ndarray, ridge: float) -> np.ndarray:
    """(covariance + ridge I)^-1 cross, overwriting both; raises LinAlgError if not positive definite.

    Cholesky is five times faster than LDL^T for thousands of right-hand sides.
    """
    covariance[np.diag_indices_from(covariance)] += ridge
    factor = scipy.linalg.cho_factor(covariance, overwrite_a=True, check_finite=False)
    return scipy.linalg.cho_solve(factor, cross, overwrite_b=True, check_finite=False)


def _solve_by_eigendecomposition(covariance: np.ndarray, cross: np.ndarray, ridge: float) -> np.ndarray:
    """The same ridge solution when rounding leaves a singular covariance a hair indefinite."""
    eigenvalues, eigenvectors = scipy.linalg.eigh(covariance, overwrite_a=True, check_finite=False)
    return eigenvectors @ ((eigenvectors.T @ cross) / (np.maximum(eigenvalues, 0.0) + ridge)[:, None])


def build_linear_decoder(feature_shape: tuple[int, ...], image_shape: tuple[int, int, int], seed: int = 0) -> keras.Model:
    """Flatten, Dense(H*W*C) with bias, reshape to the image: the authors' LinDecNet.

    Initialised like PyTorch's nn.Linear: kernel and bias uniform in +-1/sqrt(fan_in).
    """
    pixel_count = int(np.prod(image_shape))
    inputs = keras.Input(shape=tuple(feature_shape), name="features")
    flat = keras.layers.Flatten(name="flatten")(inputs)
    kernel_initializer, bias_initializer = _torch_default_initializers(int(flat.shape[-1]), seed)
    pixels = keras.layers.Dense(pixel_count, kernel_initializer=kernel_initializer, bias_initializer=bias_initializer, name="dense")(flat)
    image = keras.layers.Reshape(tuple(image_shape), name="image")(pixels)
    return keras.Model(inputs, image, name="linear_decoder")


def build_cladec_decoder(
    feature_shape: tuple[int, ...],
    image_shape: tuple[int, int, int],
    seed: int = 0,
    base_channels: int = CLADEC_BASE_CHANNELS,
) -> keras.Model:
    """The ClaDec-style decoder of the authors' cladec.py (ClaDecNet), channels-last.

    With k = log2(H / h) for features of spatial size h (h = 1 for flat features and 1x1 maps):
    - stem: flat or 1x1 features: Flatten, Dense(max(d, base_channels)) + ReLU, reshaped to a
      1x1 map; h > 1: Conv2D(3x3, same, as many channels as the features) + ReLU. (The authors
      also make this choice by spatial size: "use a conv layer, otherwise too many parameters".)
    - k - 1 upsampling stages, Conv2DTranspose(kernel 4, stride 2, "same") + ReLU, with
      base_channels * 2^(k-2), ..., base_channels * 2, base_channels channels;
    - a last Conv2DTranspose(kernel 4, stride 2, "same") to the image channels, no activation.
    Keras' "same" here pads one pixel on every side, exactly PyTorch's ConvTranspose2d(kernel 4,
    stride 2, padding 1): each stage doubles the size. Features already at image size (k = 0)
    get a single Conv2D(3x3) to the image channels, as in the authors' code. All layers have
    biases; no normalisation layers; PyTorch's default initialisation (uniform +-1/sqrt(fan_in),
    fan_in of a transposed conv = kernel area x its output channels in both frameworks).

    Example: 512-d features to a 32x32x3 image: Dense 512 -> 1x1x512 -> 2x2x512 -> 4x4x256
    -> 8x8x128 -> 16x16x64 -> 32x32x3, 7,213,507 parameters. On two CPU cores, batch 128, to
    32x32x1 images: 0.54 s per update (the authors' 7,820 updates: about 70 minutes per fit), against
    1.4 ms for the linear decoder (`python -m benchmarks.measure`; the CHANGELOG has other machines').

    docs/protocol.md, "What is measured at each snapshot", leaves open the width of the dense stem and where the upsampling starts; both
    follow the authors' code above. Non-square images or feature maps, and size ratios that are
    not a power of two, raise ValueError (the authors' rounding of log2 would silently produce
    the wrong output size).
    """
    feature_shape = tuple(int(size) for size in feature_shape)
    image_height, image_width, image_channels = (int(size) for size in image_shape)
    if image_height != image_width:
        raise ValueError(f"cladec needs square images, got image_shape={tuple(image_shape)}")
    if len(feature_shape) == 1:
        feature_size = 1
    elif len(feature_shape) == 3:
        if feature_shape[0] != feature_shape[1]:
            raise ValueError(f"cladec needs square feature maps, got feature_shape={feature_shape}")
        feature_size = feature_shape[0]
    else:
        raise ValueError(f"cladec takes flat (d,) or spatial (H', W', C') features, got feature_shape={feature_shape}")
    ratio = image_height // feature_size
    if image_height % feature_size or ratio & (ratio - 1):
        raise ValueError(
            f"cladec upsamples by powers of two: image size {image_height} / feature size {feature_size} must be a power of two"
        )
    stages = ratio.bit_length() - 1  # k = log2(ratio) transposed convolutions
    layer_seeds = itertools.count(seed * 1000, 2)  # distinct seeds: same-shaped layers must differ

    inputs = keras.Input(shape=feature_shape, name="features")
    if feature_size == 1:
        flat = keras.layers.Flatten(name="flatten")(inputs)
        feature_dim = int(flat.shape[-1])
        stem_width = max(feature_dim, base_channels)
        kernel_initializer, bias_initializer = _torch_default_initializers(feature_dim, next(layer_seeds))
        x = keras.layers.Dense(
            stem_width,
            activation="relu",
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            name="stem",
        )(flat)
        x = keras.layers.Reshape((1, 1, stem_width), name="stem_map")(x)
    else:
        in_channels = feature_shape[2]
        stem_channels = in_channels if stages > 0 else image_channels
        kernel_initializer, bias_initializer = _torch_default_initializers(9 * in_channels, next(layer_seeds))
        x = keras.layers.Conv2D(
            stem_channels,
            3,
            padding="same",
            activation="relu" if stages > 0 else None,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            name="stem" if stages > 0 else "image",
        )(inputs)
    for stage in range(1, stages + 1):
        last = stage == stages
        channels = image_channels if last else base_channels * 2 ** (stages - 1 - stage)
        kernel_initializer, bias_initializer = _torch_default_initializers(16 * channels, next(layer_seeds))
        x = Conv2DTranspose(
            channels,
            4,
            strides=2,
            padding="same",
            activation=None if last else "relu",
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            name="image" if last else f"upsample{stage}",
        )(x)
    return keras.Model(inputs, x, name="cladec_decoder")


def train_decoder(decoder: keras.Model, train_features: np.ndarray, train_images: np.ndarray, settings: DecoderSettings) -> int:
    """Train `decoder` in place on (features, image) pairs with MSE and `TorchAdam`; return the update count.

    `settings.epochs_for(n)` epochs, each over a fresh permutation of the train split drawn from
    `settings.seed`, in batches of `settings.batch_size` (the last one partial). Raises
    FloatingPointError naming the update at which the loss stopped being finite.
    """
    num_train = len(train_features)
    optimizer = TorchAdam(learning_rate=settings.learning_rate, l2_coefficient=settings.weight_decay)
    optimizer.build(decoder.trainable_variables)

    def train_step(features, images):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(decoder(features, training=True) - images))
        gradients = tape.gradient(loss, decoder.trainable_variables)
        optimizer.apply_gradients(zip(gradients, decoder.trainable_variables))
        return loss

    # One call per epoch, its updates in a graph loop (kphases.epochs): bitwise the same decoder
    # as one call per batch, without a Python round trip per update.
    arrays = (np.asarray(train_features, dtype=np.float32), np.asarray(train_images, dtype=np.float32))
    return train_epochs(
        train_step,
        arrays,
        settings.batch_size,
        settings.epochs_for(num_train),
        settings.seed,
        "decoder",
        lambda epoch: settings.learning_rate,
    )


def _fit_trained_decoder(
    kind: str,
    build: Callable[..., keras.Model],
    train_features: np.ndarray,
    train_images: np.ndarray,
    test_features: np.ndarray,
    test_images: np.ndarray,
    settings: DecoderSettings,
) -> ReconstructionResult:
    _check_splits(train_features, train_images, test_features, test_images)
    train_features = np.asarray(train_features, dtype=np.float32)
    train_images = np.asarray(train_images, dtype=np.float32)
    test_features = np.asarray(test_features, dtype=np.float32)
    test_images = np.asarray(test_images, dtype=np.float32)
    decoder = build(train_features.shape[1:], train_images.shape[1:], seed=settings.seed)
    update_steps = train_decoder(decoder, train_features, train_images, settings)

    @tf.function(input_signature=[tf.TensorSpec((None, *train_features.shape[1:]), tf.float32)])
    def reconstruct(features_batch):
        return decoder(features_batch, training=False)

    def predict(features_batch: np.ndarray) -> np.ndarray:
        return reconstruct(features_batch).numpy().reshape(len(features_batch), -1)

    pixel_count = int(np.prod(train_images.shape[1:]))
    train_mse, _, _ = _reconstruction_errors(predict, train_features, train_images.reshape(-1, pixel_count), settings.batch_size)
    test_mse, authors_scale, test_per_image = _reconstruction_errors(
        predict, test_features, test_images.reshape(-1, pixel_count), settings.batch_size
    )
    return ReconstructionResult(
        mse_per_element_test=test_mse,
        authors_scale_test=authors_scale,
        mse_per_element_train=train_mse,
        update_steps=update_steps,
        decoder=kind,
        epochs=settings.epochs_for(len(train_features)),
        batch_size=settings.batch_size,
        test_reconstructions=_kept_reconstructions(predict, test_features, test_images, settings.keep_reconstructions),
        test_errors_per_image=test_per_image,
    )


def _kept_reconstructions(
    predict: Callable[[np.ndarray], np.ndarray], features: np.ndarray, images: np.ndarray, count: int
) -> np.ndarray | None:
    if count <= 0:
        return None
    count = min(count, len(features))
    return predict(features[:count]).reshape((count, *np.shape(images)[1:])).astype(np.float32)


def _reconstruction_errors(
    predict: Callable[[np.ndarray], np.ndarray], features: np.ndarray, targets: np.ndarray, batch_size: int
) -> tuple[float, float, np.ndarray]:
    """(per-element MSE over the whole split, sum over batches in order of the batch-mean MSE,
    float32 MSE of each image: the per-image errors `kphases.phases.phase_verdict` resamples)."""
    squared_error_total = 0.0
    authors_scale = 0.0
    per_image = np.empty(len(features), dtype=np.float32)
    for start, stop in batch_bounds(len(features), batch_size):
        error = predict(features[start:stop]) - targets[start:stop].astype(np.float64)
        image_squared_error = np.sum(np.square(error), axis=1)
        per_image[start:stop] = image_squared_error / targets.shape[1]
        batch_squared_error = float(np.sum(image_squared_error))
        squared_error_total += batch_squared_error
        authors_scale += batch_squared_error / error.size
    return squared_error_total / (len(features) * targets.shape[1]), authors_scale, per_image


def _check_splits(
    train_features: np.ndarray, train_images: np.ndarray, test_features: np.ndarray, test_images: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated inputs, flattened to rows: (train features, train targets, test features, test targets)."""
    arrays = {}
    for split, features, images in (("train", train_features, train_images), ("test", test_features, test_images)):
        features, images = np.asarray(features), np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"{split}_images must be (n, H, W, C), got shape {images.shape}")
        if features.ndim < 2:
            raise ValueError(f"{split}_features must be (n, ...) with one row per image, got shape {features.shape}")
        if len(features) != len(images):
            raise ValueError(f"{split}_features has {len(features)} rows but {split}_images has {len(images)} images")
        if len(features) == 0:
            raise ValueError(f"the {split} split is empty")
        for name, array in (("features", features), ("images", images)):
            if not np.issubdtype(array.dtype, np.floating):
                raise ValueError(f"{split}_{name} must be a floating-point array, got dtype {array.dtype}")
            # One float64 sum finds any NaN or infinity without a boolean copy of a large array.
            if not np.isfinite(np.sum(array, dtype=np.float64)):
                raise ValueError(f"{split}_{name} contain NaN or infinite values")
        arrays[split] = (features, images)
    (train_features, train_images), (test_features, test_images) = arrays["train"], arrays["test"]
    if train_features.shape[1:] != test_features.shape[1:]:
        raise ValueError(f"train features {train_features.shape[1:]} and test features {test_features.shape[1:]} differ in shape")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise ValueError(f"train images {train_images.shape[1:]} and test images {test_images.shape[1:]} differ in shape")
    return (
        train_features.reshape(len(train_features), -1),
        train_images.reshape(len(train_images), -1),
        test_features.reshape(len(test_features), -1),
        test_images.reshape(len(test_images), -1),
    )


def _torch_default_initializers(fan_in: int, seed: int) -> tuple[keras.initializers.Initializer, keras.initializers.Initializer]:
    """PyTorch's default layer initialisation: kernel and bias uniform in +-1/sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    kernel = keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform", seed=seed)
    bias = keras.initializers.RandomUniform(-bound, bound, seed=seed + 1)
    return kernel, bias
