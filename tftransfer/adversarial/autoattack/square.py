"""Square Attack of Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient
black-box adversarial attack via random search" (ECCV 2020), for L2 and L-infinity.

A random search on the margin loss z_y - max_{i != y} z_i that uses only the model's
outputs: each query changes the perturbation inside a random square window of side s
(drawn per example) and is kept if it lowers the margin. s is set so that the
window covers a fraction p of the image, p = p_init / 2^j halved after queries 10, 50, 200,
500, 1000, 2000, 4000, 6000 and 8000 (AutoAttack: 5,000 queries, p_init = 0.8, no rescaling
of the schedule).

L-infinity: the start is x + eps * a random sign per column and channel (vertical
stripes); a query sets the window, per channel, to +-eps. L2: the start is a grid of
windows of side h // 5 holding the paper's pattern (nested squares of weights 1 / (k+1)^2,
positive in one half and negative in the other, a random sign per channel and a random
orientation) scaled to norm eps; a query moves the mass of a second random window into the
first, drawn with the same pattern, keeping the total norm at eps.

The windows and signs are drawn independently for every example (the paper's random search
per image). cleverhans 4.0.0 has no Square Attack, so this is written from the paper.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tftransfer.adversarial.autoattack import _common
from tftransfer.errors import UserError

_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def margin(z, y):
    """z_y - max_{i != y} z_i [N] (positive while the example is classified correctly)."""
    true = tf.gather(z, y, batch_dims=1)
    return true - tf.reduce_max(tf.where(tf.one_hot(y, tf.shape(z)[1]) > 0, -1e30, z), 1)


def window_fraction(query, p_init: float):
    """The schedule of p for query ``query`` (0-based), as a float32 tensor."""
    halvings = tf.reduce_sum(tf.cast(tf.constant(_SCHEDULE) < query, tf.float32))
    return p_init / 2.0 ** halvings


def _harmonic_squares(size: int) -> np.ndarray:
    """H[n] = sum_{m=1}^{n} 1 / m^2 for n = 0..size."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, size + 1) ** 2)])


def _half(rows: int, cols: int, harmonic: np.ndarray) -> np.ndarray:
    """The unnormalised nested-square pattern of a rows x cols rectangle (numpy): at each
    cell the sum of 1 / (k+1)^2 over k from its Chebyshev distance to the centre to the
    largest square, i.e. H[top] - H[distance]."""
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    distance = np.maximum(np.abs(i - rows // 2), np.abs(j - cols // 2))
    return harmonic[max(rows // 2, cols // 2) + 1] - harmonic[distance]


def _half_at(rows, cols, i, j, harmonic):
    """``_half(rows, cols)`` at local coordinates (i, j) (tensors; clipped outside)."""
    top = tf.maximum(rows // 2, cols // 2) + 1
    distance = tf.maximum(tf.abs(i - rows // 2), tf.abs(j - cols // 2))
    return tf.gather(harmonic, top) - tf.gather(harmonic, tf.clip_by_value(distance, 0, top))


def pattern(side: int) -> np.ndarray:
    """The paper's side x side L2 window (numpy): nested squares, positive in the top half
    and negative in the bottom half, each half of unit norm, the whole of unit norm."""
    harmonic = _harmonic_squares(side + 1)
    parts = []
    for rows, sign in ((side // 2, 1.0), (side - side // 2, -1.0)):
        if rows:
            half = _half(rows, side, harmonic)
            parts.append(sign * half / np.linalg.norm(half))
    whole = np.concatenate(parts, 0)
    return (whole / np.linalg.norm(whole)).astype(np.float32)


def _window_pattern(i, j, side, harmonic):
    """``pattern(side)`` at the local coordinates (i, j) [N, H, W] of a window of side
    ``side`` >= 2 (a scalar tensor) in each example; 0 outside the window."""
    inside = (i >= 0) & (i < side) & (j >= 0) & (j < side)
    upper_rows, lower_rows = side // 2, side - side // 2
    upper = tf.where(inside & (i < upper_rows), _half_at(upper_rows, side, i, j, harmonic), 0.0)
    lower = tf.where(inside & (i >= upper_rows),
                     _half_at(lower_rows, side, i - upper_rows, j, harmonic), 0.0)

    def unit(t):
        return t / tf.sqrt(tf.reduce_sum(tf.square(t), [1, 2], keepdims=True) + 1e-30)
    return (unit(upper) - unit(lower)) / math.sqrt(2.0)


def _window(seed, x, side):
    """A random side x side window per example: its mask [N, H, W] and top-left corner
    (each [N, 1, 1]), the corner uniform over the positions inside the image."""
    count, height, width = tf.shape(x)[0], int(x.shape[1]), int(x.shape[2])
    top = tf.random.stateless_uniform([count, 1, 1], _common.salted(seed, 0), 0,
                                      height - side + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([count, 1, 1], _common.salted(seed, 1), 0,
                                       width - side + 1, dtype=tf.int32)
    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return inside, top, left


def _signs(seed, shape):
    return tf.sign(tf.random.stateless_uniform(shape, seed, -1.0, 1.0))


def _l2_start(x, eps, seed):
    """The L2 start: a grid of ``pattern(h // 5)`` windows, a random orientation per window
    and example and a random sign per window, example and channel, scaled to norm eps."""
    count, height, width, channels = (tf.shape(x)[0],) + tuple(int(d) for d in x.shape[1:])
    side = max(height // 5, 1)
    offset = (height - 5 * side) // 2
    tiles_h, tiles_w = min(height // side, (height - offset) // side), (width - offset) // side
    base, flipped = np.zeros([height, width], np.float32), np.zeros([height, width], np.float32)
    tile = np.full([height, width], tiles_h * tiles_w, np.int32)  # the last id: no tile
    for a in range(tiles_h):
        for b in range(tiles_w):
            r, q = offset + a * side, offset + b * side
            base[r:r + side, q:q + side] = pattern(side)
            flipped[r:r + side, q:q + side] = pattern(side).T
            tile[r:r + side, q:q + side] = a * tiles_w + b
    tiles = tiles_h * tiles_w + 1
    flip = tf.random.stateless_uniform([count, tiles], _common.salted(seed, 1)) < 0.5
    sign = _signs(_common.salted(seed, 2), [count, tiles, channels])
    flip_at = tf.gather(flip, tile, axis=1)[..., None]  # [N, H, W, 1]
    delta = tf.where(flip_at, flipped[..., None], base[..., None]) * tf.gather(sign, tile, axis=1)
    return _scaled(x, delta, eps)


def _scaled(x, delta, eps):
    norms = _common.per_example(_common.lp_norm(delta, "l2"), x)
    return tf.clip_by_value(x + eps * delta / (norms + 1e-12), 0.0, 1.0)


def _linf_query(x, x_best, eps, p, seed):
    count, height, width, channels = (tf.shape(x)[0],) + tuple(int(d) for d in x.shape[1:])
    side = tf.cast(tf.round(tf.sqrt(p * height * width)), tf.int32)
    side = tf.clip_by_value(side, 1, min(height, width))
    inside, _, _ = _window(_common.salted(seed, 0), x, side)
    step = 2.0 * eps * _signs(_common.salted(seed, 1), [count, 1, 1, channels])
    x_new = x_best + tf.where(inside[..., None], step, 0.0)
    return tf.clip_by_value(tf.clip_by_value(x_new, x - eps, x + eps), 0.0, 1.0)


def _l2_query(x, x_best, eps, p, seed, harmonic):
    count, height, width, channels = (tf.shape(x)[0],) + tuple(int(d) for d in x.shape[1:])
    side = tf.maximum(tf.cast(tf.round(tf.sqrt(p * height * width)), tf.int32), 3)
    side = tf.minimum(side + 1 - side % 2, min(height, width))
    inside, top, left = _window(_common.salted(seed, 0), x, side)
    inside2, _, _ = _window(_common.salted(seed, 1), x, side)
    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]
    first = tf.cast(inside, tf.float32)[..., None]
    both = tf.cast(inside | inside2, tf.float32)[..., None]
    flip = tf.random.stateless_uniform([count, 1, 1], _common.salted(seed, 2)) < 0.5
    i, j = tf.where(flip, cols - left, rows - top), tf.where(flip, rows - top, cols - left)
    fresh = _window_pattern(i, j, side, harmonic)[..., None] * _signs(
        _common.salted(seed, 3), [count, 1, 1, channels])

    def channel_norm(t):
        return tf.sqrt(tf.reduce_sum(tf.square(t), [1, 2], keepdims=True))
    delta = x_best - x
    image_norm = _common.per_example(_common.lp_norm(delta, "l2"), x)
    old = delta * first / (1e-12 + channel_norm(delta * first))
    fresh = fresh + old
    budget = tf.sqrt(tf.maximum(eps ** 2 - image_norm ** 2, 0.0) / channels
                     + channel_norm(delta * both) ** 2)
    fresh = fresh / (1e-12 + channel_norm(fresh)) * budget
    return _scaled(x, delta * (1.0 - both) + fresh * first, eps)


def square_run(model, x, y, norm: str, eps: float, queries: int = 5000, p_init: float = 0.8,
               seed=0):
    """One Square Attack run on a batch of NHWC images (traceable); it stops early once
    every example is misclassified.

    Args:
      model: Keras classifier on [0, 1] images [N, H, W, C].
      x: float32 images in [0, 1]; y: true labels [N].
      norm: ``"l2"`` or ``"linf"``; eps: the radius in [0, 1] pixel units.
      queries: queries after the start; p_init: the first window fraction.
      seed: an int or a [2] int64 stateless seed.

    Returns:
      ``(x_adv, fooled)``: the best point of each example where its margin became <= 0,
      ``x`` elsewhere (within eps of ``x`` and in [0, 1]), and those flags [N].
    """
    _common.check(norm, eps)
    if len(x.shape) != 4:
        raise UserError(f"Square Attack needs images [N, H, W, C], got shape {tuple(x.shape)}.")
    x, y = tf.cast(x, tf.float32), tf.cast(y, tf.int32)
    seed = _common.salted(seed)
    harmonic = tf.constant(_harmonic_squares(max(x.shape[1], x.shape[2]) + 1), tf.float32)
    if norm == "linf":
        stripes = [tf.shape(x)[0], 1, int(x.shape[2]), int(x.shape[3])]
        x_best = tf.clip_by_value(x + eps * _signs(seed, stripes), 0.0, 1.0)
    else:
        x_best = _l2_start(x, eps, seed)
    best = margin(_common.logits(model, x_best), y)

    def body(query, x_best, best):
        p = window_fraction(query, p_init)
        query_seed = _common.salted(seed, 7, query)
        x_new = (_linf_query(x, x_best, eps, p, query_seed) if norm == "linf"
                 else _l2_query(x, x_best, eps, p, query_seed, harmonic))
        new = margin(_common.logits(model, x_new), y)
        better = (best > 0.0) & (new < best)
        x_best = tf.where(_common.per_example(better, x), x_new, x_best)
        return query + 1, x_best, tf.where(better, new, best)

    def going(query, x_best, best):
        return (query < queries) & tf.reduce_any(best > 0.0)

    _, x_best, best = tf.while_loop(going, body, (tf.constant(0), x_best, best),
                                    maximum_iterations=queries)
    fooled = best <= 0.0
    return tf.stop_gradient(tf.where(_common.per_example(fooled, x), x_best, x)), fooled


def square_attack(model, x, y, norm: str, eps: float, queries: int = 5000,
                  p_init: float = 0.8, seed: int = 0, batch_size: int = 256):
    """Square Attack as AutoAttack runs it (one restart) on a whole set.

    Args:
      model: Keras classifier on [0, 1] images [N, H, W, C].
      x, y: images and labels (numpy or tensors).
      norm: ``"l2"`` or ``"linf"``; eps: the radius in [0, 1] pixel units.
      queries, p_init: the query budget and first window fraction; seed: the draws' seed.
      batch_size: points per batch.

    Returns:
      float32 numpy images: an adversarial example within eps where one was found, ``x``
      elsewhere (misclassified points are not attacked).
    """
    run = tf.function(lambda xb, yb, _, s: square_run(model, xb, yb, norm, eps, queries, p_init,
                                                     s)[0],
                      input_signature=_common.signature(x))
    return _common.attack_rounds(model, x, y, norm, eps, batch_size, range(1), run, seed,
                                 _common.name_salt("square"))
