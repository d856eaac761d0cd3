"""Process-wide TensorFlow settings: seeds, precision policy, distribution strategy."""

from __future__ import annotations

import contextlib
import random
import sys
import threading

import keras
import tensorflow as tf
from tensorflow.python.eager import context as eager_context

from tftransfer.config import check_seed
from tftransfer.errors import UserError


def set_seed(seed: int, keep_compiled_functions: bool = False) -> None:
    """Seeds Python, NumPy, TensorFlow and Keras (every random choice takes this seed).

    Args:
      keep_compiled_functions: seed TensorFlow without clearing its kernel cache, which
        ``tf.random.set_seed`` does to restart the streams of stateful random kernels
        (``tf.random.uniform`` and the like, also inside a ``tf.function``). Clearing it
        also drops every instantiated ``tf.function``: the next call instantiates (and
        optimizes) its graph again, which made a head-only run's one call 1.6-1.7x slower
        (about 0.1 s, ``bench/compiled_loop_parts.py``). Only for work that runs no
        stateful random kernel: the global seed, the op seeds derived from it
        (``tf.compat.v1.get_seed``), Python's, NumPy's and Keras' seeds are then exactly
        what ``tf.random.set_seed`` gives.

    Raises:
      UserError: for a seed outside [0, 2**32), which numpy's seeding refuses with a
        ValueError deep inside Keras (seeds derived from a valid one, such as ``tune``'s
        seed + execution, can still get there).
    """
    check_seed(seed)
    seed = int(seed)
    if not (keep_compiled_functions and tf.executing_eagerly()):
        keras.utils.set_random_seed(seed)
        return
    # keras.utils.set_random_seed's steps, with TensorFlow's seed set as
    # Context._set_global_seed sets it, less its kernel-cache clear.
    context = eager_context.context()
    with _tensorflow_seed_skipped():
        keras.utils.set_random_seed(seed)
    context._seed = seed
    context._rng = random.Random(seed)


_SEED_SKIPPED = threading.Lock()  # one replacement at a time: each restores the original


@contextlib.contextmanager
def _tensorflow_seed_skipped():
    """``tf.random.set_seed`` as a no-op inside the block (Keras calls it by that name)."""
    with _SEED_SKIPPED:
        original = tf.random.set_seed
        try:
            tf.random.set_seed = lambda seed: None
            yield
        finally:
            tf.random.set_seed = original


def set_precision(precision: str) -> None:
    """Sets the global Keras dtype policy (``float32``, ``mixed_float16``, ``mixed_bfloat16``)."""
    try:
        keras.mixed_precision.set_global_policy(precision)
    except ValueError as error:
        raise UserError(f"Unknown precision {precision!r}: {error}") from None


@contextlib.contextmanager
def precision_policy(precision: str):
    """The global Keras dtype policy set to ``precision`` inside the block and restored after
    it: a library call (``transfer.fine_tune``) must not change the caller's process."""
    previous = keras.mixed_precision.global_policy()
    set_precision(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def strategy(name: str) -> tf.distribute.Strategy:
    """``none`` (the default strategy), ``mirrored`` (all local GPUs, else the CPU) or
    ``multi_worker_mirrored`` (configured by ``TF_CONFIG``)."""
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"Unknown distribution strategy {name!r}; use none, mirrored or "
                    f"multi_worker_mirrored.")


@contextlib.contextmanager
def progress_to_stderr():
    """Sends Keras' progress bar (written to stdout) to stderr: stdout carries only results."""
    with contextlib.redirect_stdout(sys.stderr):
        yield
