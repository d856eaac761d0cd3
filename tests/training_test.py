"""Tests of source-model training (``pretrain``): evaluation schedule and divergence."""

import csv
import math
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tests.helpers import make_image_folder
from tftransfer import training
from tftransfer.callbacks import BackupUnlessNaN
from tftransfer.config import DataConfig, ModelConfig, OptimConfig, PretrainConfig
from tftransfer.errors import UserError


class EvaluationEpochsTest(tf.test.TestCase):

    def test_every_kth_epoch_and_always_the_last(self):
        self.assertEqual(training.evaluation_epochs(30, 7), [7, 14, 21, 28, 30])
        self.assertEqual(training.evaluation_epochs(3, 1), [1, 2, 3])
        self.assertEqual(training.evaluation_epochs(5, 10), [5])

    def test_pretrain_records_the_test_accuracy_of_the_last_epoch(self):
        tmp = Path(self.get_temp_dir())
        folder = make_image_folder(tmp / "images", classes=("a", "b"), per_class=8, split=True)
        config = PretrainConfig(out=str(tmp / "model"), epochs=3, eval_every=2,
                                data=DataConfig(dataset=str(folder), image_size=16, batch_size=8),
                                model=ModelConfig(arch="resnet20", width=0.25))
        training.pretrain(config)
        with open(tmp / "model" / "history.csv") as handle:
            evaluated = [row["epoch"] for row in csv.DictReader(handle) if row["val_accuracy"]]
        self.assertEqual(evaluated, ["2", "3"])


class DivergenceTest(tf.test.TestCase):

    def backup(self, directory):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        callback = BackupUnlessNaN(str(directory), double_checkpoint=True)
        callback.set_model(model)
        return callback

    def test_a_nan_epoch_is_not_checkpointed(self):
        directory = Path(self.get_temp_dir()) / "checkpoint"
        callback = self.backup(directory)
        callback.on_epoch_end(0, {"loss": 0.5})
        saved = sorted(path.name for path in directory.iterdir())
        self.assertIn("training_metadata.json", saved)
        before = (directory / "training_metadata.json").read_text()
        callback.on_epoch_end(1, {"loss": math.nan})
        callback.on_epoch_end(1, {"loss": math.inf})
        self.assertEqual((directory / "training_metadata.json").read_text(), before)
        # A finite mean loss but NaN weights (the epoch's last step diverged): not saved either.
        callback.model.weights[0].assign(np.full((2, 1), np.nan, "float32"))
        callback.on_epoch_end(1, {"loss": 0.4})
        self.assertEqual((directory / "training_metadata.json").read_text(), before)

    def test_a_diverged_pretrain_stops_with_a_clear_error_and_is_not_finished(self):
        tmp = Path(self.get_temp_dir())
        folder = make_image_folder(tmp / "images", classes=("a", "b"), per_class=8, split=True)
        config = PretrainConfig(out=str(tmp / "model"), epochs=2,
                                data=DataConfig(dataset=str(folder), image_size=16, batch_size=8),
                                model=ModelConfig(arch="resnet20", width=0.25),
                                optim=OptimConfig(learning_rate=1e30, schedule="cosine"))
        for _ in range(2):  # the re-run diverges again rather than finishing NaN weights
            with self.assertRaisesRegex(UserError, "NaN at epoch 1"):
                training.pretrain(config)
        self.assertFalse((tmp / "model" / "model.keras").exists())


if __name__ == "__main__":
    tf.test.main()
