"""Process-wide TensorFlow settings: seeds, precision policy, distribution strategy."""

from __future__ import annotations

import contextlib
import dataclasses
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


# The precision ``auto`` last said on stderr (once per process and value: a sweep's cells
# each resolve it, and one line says it for all of them), and the last one resolved.
_said_auto = None
_resolved_auto = None  # (policy, why) of the last ``auto`` resolved, said or not


def resolve_precision(precision: str, say: bool = True) -> str:
    """The dtype policy that ``precision`` names: ``auto`` is ``mixed_float16`` when
    TensorFlow sees a GPU and ``float32`` when it does not (on a CPU float16 is emulated and
    slower, and whether bfloat16 pays depends on the CPU: bench/photo_step.py measures it);
    it says which on stderr, one line per process. Other values are returned as they are.

    Args:
      precision: ``auto``, ``float32``, ``mixed_float16`` or ``mixed_bfloat16``.
      say: print the line now; False leaves it to ``say_auto_precision`` (a command whose
        first line says something else, as ``transfer``'s does).

    Returns:
      A Keras dtype policy name, never ``auto`` (what a run records).
    """
    global _resolved_auto
    if precision != "auto":
        return precision
    gpus = tf.config.list_physical_devices("GPU")
    resolved = "mixed_float16" if gpus else "float32"
    _resolved_auto = (resolved, f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''}" if gpus
                      else "no GPU")
    if say:
        say_auto_precision()
    return resolved


def say_auto_precision() -> None:
    """Says on stderr what the last ``auto`` precision resolved to, once per process and
    value (nothing when none was resolved)."""
    global _said_auto
    if _resolved_auto is not None and _said_auto != _resolved_auto[0]:
        print(f"precision: {_resolved_auto[0]} (auto: {_resolved_auto[1]})", file=sys.stderr)
        _said_auto = _resolved_auto[0]


def with_resolved_precision(cfg, say: bool = True):
    """``cfg`` (a config with a ``precision`` field) with ``auto`` resolved
    (``resolve_precision``): runs record, compare and fingerprint what they ran with."""
    resolved = resolve_precision(cfg.precision, say)
    return cfg if resolved == cfg.precision else dataclasses.replace(cfg, precision=resolved)


def set_precision(precision: str) -> None:
    """Sets the global Keras dtype policy (``auto``, ``float32``, ``mixed_float16``,
    ``mixed_bfloat16``; ``auto`` as ``resolve_precision`` resolves it)."""
    try:
        keras.mixed_precision.set_global_policy(resolve_precision(precision))
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
