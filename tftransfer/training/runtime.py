"""Process-wide TensorFlow settings: seeds, precision policy, distribution strategy."""

from __future__ import annotations

import contextlib
import sys

import keras
import tensorflow as tf

from tftransfer.config import check_seed
from tftransfer.errors import UserError


def set_seed(seed: int) -> None:
    """Seeds Python, NumPy, TensorFlow and Keras (every random choice takes this seed).

    ``keras.utils.set_random_seed``, public API only: TensorFlow's reseeding clears its kernel
    cache, so every instantiated ``tf.function`` is instantiated again on its next call (about
    0.1 s for a head-only run's compiled call, ``bench/README.md``), a cost accepted for not
    writing TensorFlow's private seed state.

    Raises:
      UserError: for a seed outside [0, 2**32), which numpy's seeding refuses with a
        ValueError deep inside Keras (seeds derived from a valid one, such as ``tune``'s
        seed + execution, can still get there).
    """
    check_seed(seed)
    keras.utils.set_random_seed(int(seed))


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
