"""Which train images are outliers of their class, and moving images towards another class's prototype.

Serves `reproduce.mechanism` (the data model's mechanism on real data, separated from plain
memorisation) through `DataConfig.remove`, `outlier_space`, `blend_fraction` and `blend_distance`,
applied by `kphases.data.load_dataset`. Pure NumPy/SciPy on the preprocessed images: no network.

The outlier measure is the one of figure `data_model` and of the theory's data model (`theory/`:
"most samples of a class lie close to its prototype, a few lie far"): an image is an outlier when its
cosine to another class's mean is larger than to its own class's mean, the class means taken over the
train split in the chosen space:
- `pixels`: the flattened normalised images (figure `data_model`'s space);
- `whitened`: the pixels projected on their top `WHITENED_COMPONENTS` principal components and
  whitened by the within-class covariance there, so that the distance to a class mean is the
  Mahalanobis distance of a Gaussian class model with one shared covariance (nearest mean in this
  space is linear discriminant analysis). The data model's noise around a prototype is isotropic;
  real images vary far more along some directions (brightness, colour, background) than others, and
  in raw pixels those directions decide which mean is nearest. Whitening them makes real data look
  like the model's isotropic noise, so "closer to another prototype" is measured where the model's
  own geometry holds. It needs no pretrained network and is fixed by the train images alone.

Blending (`blend_towards`) places an image where the data model places an outlier: the model writes
an outlier of class c as (1 - tau) m_c + tau m_c' + noise, so a real image x = m_c + (its own
deviation) becomes x + tau (m_c' - m_c): its prototype part moves a fraction tau of the way to the
other class's mean and its own deviation is kept. At tau = 0 it is the image itself; at tau = 1 an
image equal to its class mean is exactly the other class's mean. (Mixing towards the mean instead,
(1 - tau) x + tau m_c', would turn every image at tau = 1 into one of ten mean images, identical
inputs with different labels that no network can fit: a different question from the model's.)
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

OUTLIER_SPACES = ("pixels", "whitened")
REMOVALS = ("none", "outliers", "random")
WHITENED_COMPONENTS = 100
"""Principal components kept before within-class whitening (at most the sample count allows)."""
_EIGENVALUE_FLOOR = 1e-9
"""Relative floor of the within-class variances: a direction with no within-class variance is not divided by zero."""


class OutlierError(ValueError):
    """An outlier selection or blend was asked for with values it cannot use; the message names them."""


def _flat(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float64).reshape(len(images), -1)


def fit_space(images: np.ndarray, labels: np.ndarray, space: str):
    """The map from images to the named space, fitted on (`images`, `labels`): a function of images."""
    if space not in OUTLIER_SPACES:
        raise OutlierError(f"outlier space {space!r} is unknown; valid spaces: {list(OUTLIER_SPACES)}")
    if space == "pixels":
        return _flat
    flat = _flat(images)
    labels = np.asarray(labels)
    centre = flat.mean(axis=0)
    centred = flat - centre
    classes = np.unique(labels)
    components = min(WHITENED_COMPONENTS, flat.shape[1], max(1, len(flat) - len(classes) - 1))
    covariance = centred.T @ centred / len(flat)
    # The top `components` eigenvectors, largest first: eigh returns ascending eigenvalues.
    _, vectors = scipy.linalg.eigh(covariance, subset_by_index=[flat.shape[1] - components, flat.shape[1] - 1])
    projection = vectors[:, ::-1]
    projected = centred @ projection
    means = np.stack([projected[labels == label].mean(axis=0) for label in classes])
    within = projected - means[np.searchsorted(classes, labels)]
    values, rotation = np.linalg.eigh(within.T @ within / len(flat))
    values = np.maximum(values, _EIGENVALUE_FLOOR * max(float(values.max()), _EIGENVALUE_FLOOR))
    whitening = projection @ (rotation / np.sqrt(values))
    return lambda new_images: (_flat(new_images) - centre) @ whitening


def class_cosines(features: np.ndarray, labels: np.ndarray, means_of: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(classes, cosine of every row of `features` to every class mean): means over `means_of`'s rows by `labels` (default `features`)."""
    labels = np.asarray(labels)
    source = features if means_of is None else means_of
    classes = np.unique(labels)
    means = np.stack([source[labels == label].mean(axis=0) for label in classes])
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    unit_means = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    return classes, unit @ unit_means.T


def own_and_other_cosines(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cosine of each row to its own class's mean, best cosine to any other class's mean), rows flattened to float64."""
    labels = np.asarray(labels)
    classes, cosines = class_cosines(_flat(features), labels)
    rows = np.arange(len(labels))
    own_column = np.searchsorted(classes, labels)
    own = cosines[rows, own_column].copy()
    cosines[rows, own_column] = -np.inf
    return own, cosines.max(axis=1)


def closer_to_other_mean(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows whose cosine to another class's mean exceeds that to their own class's mean."""
    own, other = own_and_other_cosines(features, labels)
    return other > own


def outlier_mask(images: np.ndarray, labels: np.ndarray, space: str) -> np.ndarray:
    """The train images closer to another class's mean than to their own, in `space` (fitted on these images)."""
    return closer_to_other_mean(fit_space(images, labels, space)(images), labels)


def nearest_mean_accuracy(train_images, train_labels, test_images, test_labels, space: str) -> float:
    """Accuracy on the test images of the nearest class mean (by cosine) in `space`, fitted on the train images:
    how well the class means describe images they were not computed from."""
    transform = fit_space(train_images, train_labels, space)
    classes, cosines = class_cosines(transform(test_images), train_labels, means_of=transform(train_images))
    return float(np.mean(classes[np.argmax(cosines, axis=1)] == np.asarray(test_labels)))


def random_like(mask: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """A random mask with as many True entries in each class as `mask` has there, drawn by a generator seeded with `seed`."""
    mask, labels = np.asarray(mask, bool), np.asarray(labels)
    rng = np.random.default_rng([seed, 29])  # its own stream: not the subsetting's nor the label noise's
    chosen = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen[rng.permutation(members)[: int(mask[members].sum())]] = True
    return chosen


def blend_towards(images: np.ndarray, labels: np.ndarray, chosen: np.ndarray, targets: np.ndarray, distance: float) -> np.ndarray:
    """A copy of `images` with each chosen image moved `distance` of the way from its class's mean to the
    mean of class `targets[i]` (means over all of `images` by `labels`, before any is moved); see the module docstring."""
    if not 0.0 <= distance <= 1.0:
        raise OutlierError(f"blend distance {distance!r} is outside [0, 1] (0: the image itself, 1: at the other class's mean)")
    images, labels, chosen = np.asarray(images), np.asarray(labels), np.asarray(chosen, bool)
    targets = np.asarray(targets)
    if len(targets) != int(chosen.sum()):
        raise OutlierError(f"{len(targets)} target classes for {int(chosen.sum())} chosen images: one target per chosen image")
    classes = np.unique(labels)
    missing = sorted(set(targets.tolist()) - set(classes.tolist()))
    if missing:
        raise OutlierError(f"target classes {missing} have no images to take a mean from; classes present: {classes.tolist()}")
    means = np.stack([images[labels == label].astype(np.float64).mean(axis=0) for label in classes])
    shift = means[np.searchsorted(classes, targets)] - means[np.searchsorted(classes, labels[chosen])]
    blended = images.copy()
    blended[chosen] = (images[chosen].astype(np.float64) + distance * shift).astype(images.dtype)
    return blended
