"""Training-time augmentation of the Frankle et al. runs (`TrainingConfig.augment`).

open_lth's torchvision RandomCrop(32, padding=4) and RandomHorizontalFlip, on purpose: a crop pads
with black (0 before normalisation, -mean/std after), and an image is mirrored with probability
1/2. Departure: the draws are stateless Philox ops seeded by (seed, step), not torch's generator,
so an iteration's augmentation is the same on any device and after a resume, and augmented runs
match open_lth in distribution, not image by image.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kphases.data import IMAGE_SIZE, preprocess

CROP_PADDING = 4
# The flips' Philox key differs from the crops' in the high bits of its second word, far from any step.
FLIP_KEY_OFFSET = 1 << 40


def pad_value(dataset_name: str, channels: int) -> np.ndarray:
    """The normalised value of a black pixel, per channel: what a crop pads with (torchvision pads the raw image with 0)."""
    return preprocess(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, channels), np.float32), dataset_name)[0, 0, 0]


def crop_and_flip(images: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor, flips: tf.Tensor, fill: tf.Tensor) -> tf.Tensor:
    """Each image padded by CROP_PADDING pixels of `fill` (per channel), cropped back to its size at
    offset (rows[i], cols[i]) of the padded image (0..2*CROP_PADDING), then mirrored left-right if
    flips[i]. Pure copies (no arithmetic on pixel values): a gather with a mask for the padding."""
    height, width = images.shape[1], images.shape[2]
    row_index = rows[:, None] + tf.range(height)[None, :] - CROP_PADDING  # (B, H) rows of the unpadded image
    columns = tf.range(width)[None, :]
    columns = tf.where(flips[:, None], width - 1 - columns, columns)  # flip after the crop = read the window mirrored
    col_index = cols[:, None] + columns - CROP_PADDING
    inside = ((row_index >= 0) & (row_index < height))[:, :, None] & ((col_index >= 0) & (col_index < width))[:, None, :]
    gathered = tf.gather(images, tf.clip_by_value(row_index, 0, height - 1), axis=1, batch_dims=1)
    gathered = tf.gather(gathered, tf.clip_by_value(col_index, 0, width - 1), axis=2, batch_dims=1)
    return tf.where(inside[:, :, :, None], gathered, tf.cast(fill, images.dtype))


def augment_batch(images: tf.Tensor, step, seed: int, fill) -> tf.Tensor:
    """Random horizontal flips and 4-pixel crops padded with black (`fill`, see `pad_value`), drawn
    from (seed, step): the batch of iteration `step` is augmented alike in the compiled loop, in the
    one-call-per-step loop and after a resume."""
    count = tf.shape(images)[0]
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
    offsets = tf.random.stateless_uniform([2, count], seed=key, minval=0, maxval=2 * CROP_PADDING + 1, dtype=tf.int32, alg="philox")
    flip_key = key + tf.constant([0, FLIP_KEY_OFFSET], tf.int64)
    flips = tf.random.stateless_uniform([count], seed=flip_key, minval=0, maxval=2, dtype=tf.int32, alg="philox") > 0
    return crop_and_flip(images, offsets[0], offsets[1], flips, fill)
