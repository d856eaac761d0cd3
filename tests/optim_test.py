"""Tests of the learning-rate schedules: the one-cycle (triangular) schedule's shape."""

import keras
import numpy as np
import tensorflow as tf

from tftransfer.config import OptimConfig
from tftransfer.training.optim import OneCycle, learning_rate_schedule


def _values(schedule, total):
    return np.array([float(schedule(step)) for step in range(total)])


class OneCycleTest(tf.test.TestCase):

    def test_rises_linearly_to_the_peak_at_two_fifths_then_falls_to_zero(self):
        schedule = learning_rate_schedule(OptimConfig(learning_rate=0.2, schedule="one_cycle"),
                                          epochs=10, steps_per_epoch=10)
        lr = _values(schedule, 100)
        peak = int(np.argmax(lr))
        self.assertEqual(peak, 39)                      # step 39 is the 40th of 100
        self.assertAllClose(lr[peak], 0.2)
        self.assertAllClose(np.diff(lr[:peak + 1]), np.full(peak, 0.2 / 40), atol=1e-7)
        self.assertAllClose(np.diff(lr[peak:]), np.full(100 - peak - 1, -0.2 / 60), atol=1e-7)
        self.assertGreater(lr[0], 0.0)                  # no step at a zero learning rate
        self.assertAllClose(float(schedule(99)), 0.0, atol=1e-7)
        self.assertAllClose(float(schedule(150)), 0.0)  # past the end: zero, never negative

    def test_warmup_epochs_move_the_peak(self):
        schedule = learning_rate_schedule(
            OptimConfig(learning_rate=0.1, schedule="one_cycle", warmup_epochs=1), 4, 5)
        self.assertEqual(int(np.argmax(_values(schedule, 20))), 4)

    def test_survives_a_keras_round_trip(self):
        schedule = OneCycle(0.1, 100, 40)
        copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
        self.assertAllClose(_values(copy, 100), _values(schedule, 100))


class ShortRunScheduleTest(tf.test.TestCase):
    """A run too short for a step boundary must be extendable into one that has boundaries."""

    def _variable_count(self, optim, epochs):
        from tftransfer.training.optim import make_optimizer

        optimizer = make_optimizer(optim, epochs, steps_per_epoch=4)
        optimizer.build([keras.Variable(np.zeros(3, np.float32))])
        return len(optimizer.variables)

    def test_one_epoch_holds_the_same_optimizer_variables_as_six(self):
        optim = OptimConfig(schedule="step", learning_rate=0.1)
        self.assertEqual(self._variable_count(optim, 1), self._variable_count(optim, 6))

    def test_constant_schedule_keeps_its_value(self):
        schedule = learning_rate_schedule(OptimConfig(schedule="constant", learning_rate=0.05),
                                          10, 4)
        self.assertAllClose(schedule(0), 0.05)
        self.assertAllClose(schedule(39), 0.05)
        restored = keras.optimizers.schedules.deserialize(
            keras.optimizers.schedules.serialize(schedule))
        self.assertAllClose(restored(7), 0.05)
