"""The SGD optimizer and learning-rate schedules shared by pretraining and fine-tuning."""

from __future__ import annotations

import keras
import tensorflow as tf

from tftransfer.config import OptimConfig

# Wong et al.'s one-cycle CIFAR-10 schedule peaks at 2/5 of the run.
ONE_CYCLE_PEAK_AT = 0.4


@keras.saving.register_keras_serializable(package="tftransfer")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """The triangular one-cycle schedule of Wong, Rice & Kolter (ICLR 2020): linear from 0
    to ``peak`` over ``rise_steps`` optimizer steps, then linear back to 0 at
    ``total_steps``. Step ``s`` (from 0) takes the value at ``s + 1``, as their per-iteration
    schedule does, so that no step is taken with a zero learning rate."""

    def __init__(self, peak: float, total_steps: int, rise_steps: int):
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.rise_steps = int(min(max(1, rise_steps), self.total_steps))

    def __call__(self, step):
        t = tf.cast(step, tf.float32) + 1.0
        up = self.peak * t / self.rise_steps
        down = self.peak * (self.total_steps - t) / max(1, self.total_steps - self.rise_steps)
        return tf.maximum(0.0, tf.where(t <= self.rise_steps, up, down))

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "rise_steps": self.rise_steps}


@keras.saving.register_keras_serializable(package="tftransfer")
class Constant(keras.optimizers.schedules.LearningRateSchedule):
    """A constant learning rate as a schedule. A plain number would make the optimizer hold
    one more variable than a schedule does, so a run of fewer than 3 epochs (the step schedule
    without boundaries) could not be extended into one with boundaries: its checkpoint would
    not fit the extended run's optimizer."""

    def __init__(self, value: float):
        self.value = float(value)

    def __call__(self, step):
        return tf.constant(self.value, tf.float32)

    def get_config(self):
        return {"value": self.value}


@keras.saving.register_keras_serializable(package="tftransfer")
class ScaledAfter(keras.optimizers.schedules.LearningRateSchedule):
    """``schedule``'s rate, times ``scale`` from optimizer step ``first_step`` (from 0) on:
    the lower rate of a two-phase fine-tune's second phase. Step-indexed like the schedule
    it wraps, so that a resumed run continues in the right phase."""

    def __init__(self, schedule, first_step: int, scale: float):
        self.schedule = (keras.optimizers.schedules.deserialize(schedule)
                         if isinstance(schedule, dict) else schedule)
        self.first_step, self.scale = int(first_step), float(scale)

    def __call__(self, step):
        rate = tf.cast(self.schedule(step), tf.float32)
        return tf.where(tf.cast(step, tf.int64) >= self.first_step, rate * self.scale, rate)

    def get_config(self):
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule),
                "first_step": self.first_step, "scale": self.scale}


def learning_rate_schedule(optim: OptimConfig, epochs: int, steps_per_epoch: int):
    """A step-indexed schedule, so that a resumed run continues where it stopped.

    ``step``: x0.1 every ``step_every`` epochs (default ``epochs // 3``, the paper's);
    ``cosine``: cosine decay to zero after an optional linear warm-up; ``constant``;
    ``one_cycle``: ``OneCycle``, peaking after ``warmup_epochs`` (default 2/5 of the run).
    """
    total = max(1, epochs * steps_per_epoch)
    if optim.schedule == "constant":
        return Constant(optim.learning_rate)
    if optim.schedule == "one_cycle":
        rise = optim.warmup_epochs * steps_per_epoch or round(ONE_CYCLE_PEAK_AT * total)
        return OneCycle(optim.learning_rate, total, rise)
    if optim.schedule == "cosine":
        warmup = min(total - 1, optim.warmup_epochs * steps_per_epoch)
        if warmup > 0:
            return keras.optimizers.schedules.CosineDecay(
                0.0, total - warmup, warmup_target=optim.learning_rate, warmup_steps=warmup)
        return keras.optimizers.schedules.CosineDecay(optim.learning_rate, total)
    every = optim.step_every or max(1, epochs // 3)
    # PiecewiseConstantDecay keeps value i while step <= boundary i; optimizer step s (from 0)
    # is the first step of epoch s // steps_per_epoch, so the boundary is the step before.
    boundaries = [k * every * steps_per_epoch - 1 for k in range(1, (epochs - 1) // every + 1)]
    if not boundaries:
        return Constant(optim.learning_rate)
    values = [optim.learning_rate * 0.1 ** i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def make_optimizer(optim: OptimConfig, epochs: int, steps_per_epoch: int,
                   scaled_after: tuple[int, float] | None = None) -> keras.optimizers.SGD:
    """SGD with momentum and the schedule above; ``scaled_after`` = (epochs, scale): the
    rate times ``scale`` after that many epochs (``ScaledAfter``).

    Weight decay is not the optimizer's (Keras' is decoupled); the trainer adds
    PyTorch's coupled L2 term to the loss so the paper's 5e-4 means what it meant there.
    """
    schedule = learning_rate_schedule(optim, epochs, steps_per_epoch)
    if scaled_after is not None:
        schedule = ScaledAfter(schedule, scaled_after[0] * steps_per_epoch, scaled_after[1])
    return keras.optimizers.SGD(learning_rate=schedule, momentum=optim.momentum,
                                nesterov=optim.nesterov)
