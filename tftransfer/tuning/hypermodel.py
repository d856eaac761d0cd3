"""The fine-tuning recipe as a keras-tuner HyperModel, and the data every trial reads."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras_tuner as kt
import numpy as np
import tensorflow as tf

from tftransfer import data
from tftransfer.training import runtime
from tftransfer import finetune
from tftransfer.sources import loading as source_loading
from tftransfer.config import TransferConfig
from tftransfer.errors import UserError
from tftransfer.tuning.search_space import (config_from_hps, search_space, searched_values,
                                     unfrozen_block_choices)


@dataclass
class SearchData:
    """Everything a trial reads: the source, the target's training split and the split
    of its N images into a fitting part and a validation part."""

    source: source_loading.SourceModel
    target: data.TargetData
    image_size: int
    train_idx: np.ndarray                  # the N images (what the final retrain uses)
    fit_idx: np.ndarray
    val_idx: np.ndarray
    cache: finetune.RunCache = field(default_factory=finetune.RunCache)


def prepare(cfg) -> SearchData:
    """Loads the source and target and carves the validation split from the N images.

    Args:
      cfg: the search (a ``tuning.TuneConfig``).
    """
    base = cfg.base
    runtime.set_precision(base.precision)
    cache = finetune.RunCache()  # shared by the trials and the final retrain
    source = cache.source(base.source)
    target = cache.target(base)
    image_size = base.data.image_size or int(source.model.inputs[0].shape[1])
    # The same N images as fine_tune selects, so the retrain sees exactly these.
    train_idx = data.select_subset(target.train.labels, base.data.train_images, base.seed)
    fit_idx, val_idx = data.split_validation(target.train.labels, train_idx,
                                             cfg.validation_fraction, base.seed)
    if len(val_idx) == 0:
        raise UserError(f"--train-images {base.data.train_images} leaves no validation images "
                        f"at --validation-fraction {cfg.validation_fraction}; use more images "
                        f"(at least two per class).")
    return SearchData(source, target, image_size, train_idx, fit_idx, val_idx, cache)


# ----------------------------------------------------------------------------- hypermodel

class FineTuneHyperModel(kt.HyperModel):
    """The fine-tuning recipe as a keras-tuner HyperModel.

    ``build`` returns the compiled ``AdversarialTrainer`` (natural training) of the trial's
    ``finetune.Network`` (the source's weights, a new seeded head, the trial's blocks
    unfrozen; when the frozen trunk is fixed, only the part above it, fed with cached trunk
    features), built once per recipe by the search's ``RunCache`` and reset per trial. ``fit``
    trains it on the fitting split and validates on the validation split; its keyword
    arguments go to ``model.fit`` (the tuner's callbacks, Hyperband's epochs).

    Args:
      search_data: from ``prepare``.
      base: the fixed part of every trial's TransferConfig.
      max_epochs: the epoch budget.
      tune_epochs: search ``epochs`` (False for Hyperband, which sets them itself).
      unfrozen_choices: the ``unfrozen_blocks`` values to search (None: every value
        ``unfrozen_block_choices`` offers for the source).
    """

    def __init__(self, search_data: SearchData, base: TransferConfig, max_epochs: int,
                 tune_epochs: bool, unfrozen_choices=None):
        super().__init__(name="fine_tune")
        self.data = search_data
        self.base = base
        self.max_epochs = max_epochs
        self.tune_epochs = tune_epochs
        if unfrozen_choices is None:
            unfrozen_choices = unfrozen_block_choices(search_data.source.model)
        for choice in unfrozen_choices:  # a clear error now, not a failed trial later
            finetune.unfrozen_block_names(search_data.source.model, int(choice))
        self.unfrozen_choices = [int(c) for c in unfrozen_choices]
        self.execution = 0                 # index of the current execution within a trial
        self._seed = base.seed

    def trial_config(self, hp: kt.HyperParameters) -> TransferConfig:
        """The TransferConfig a trial trains (on the fitting split)."""
        search_space(hp, self.unfrozen_choices, self.max_epochs, self.tune_epochs)
        return config_from_hps(self.base, searched_values(hp.values, self.max_epochs))

    def begin_trial(self) -> None:
        """Called by the tuner before each trial: executions count from 0 again."""
        self.execution = 0

    def build(self, hp):
        cfg = self.trial_config(hp)
        # keras-tuner calls clear_session() before every build, which resets the global
        # dtype policy; set it again so trials run at the requested precision.
        runtime.set_precision(cfg.precision)
        # Execution k of every trial uses seed + k: trials are compared on the same
        # initializations and shuffles (common random numbers).
        self._seed = cfg.seed + self.execution
        self.execution += 1
        runtime.set_seed(self._seed)
        # The same built-once networks as fine_tune: source weights, a seeded head and a
        # fresh optimizer on every build, so nothing leaks from one trial to the next.
        network = self._network(cfg)
        network.reset(cfg.head_init, self._seed, cfg.head_std)
        trainer = network.trainer
        # Hyperband loads a previous trial's checkpoint right after build(): a subclassed
        # model accepts weights only once called.
        trainer(tf.zeros([1, *network.trained.inputs[0].shape[1:]]), training=False)
        return trainer

    def fit(self, hp, model, *args, **kwargs):
        """Trains ``model`` on the fitting split, validating every epoch.

        Returns:
          The last epoch's metrics: the retrain runs all epochs, so the last epoch (not
          the best one) is what the search should rank.
        """
        if args:
            raise TypeError("FineTuneHyperModel reads its own data; call search() without "
                            "positional data arguments.")
        cfg = self.trial_config(hp)
        fit_ds, val_ds = self._datasets(cfg)
        kwargs.setdefault("epochs", cfg.epochs)
        initial_epoch = kwargs.get("initial_epoch", 0)
        if initial_epoch:
            # A Hyperband continuation: resume the step-indexed schedule where it would be.
            steps = math.ceil(len(self.data.fit_idx) / cfg.data.batch_size)
            model.optimizer.iterations.assign(initial_epoch * steps)
        with runtime.progress_to_stderr():
            history = model.fit(fit_ds, validation_data=val_ds, shuffle=False, **kwargs)
        return {name: float(values[-1]) for name, values in history.history.items()}

    # -- helpers

    def _network(self, cfg: TransferConfig) -> finetune.Network:
        """The cached ``finetune.Network`` of a trial's recipe (built on first use)."""
        steps = math.ceil(len(self.data.fit_idx) / cfg.data.batch_size)
        return self.data.cache.network(cfg, self.data.source, self.data.target.num_classes,
                                       self.data.image_size, steps)

    def _datasets(self, cfg: TransferConfig):
        network = self._network(cfg)
        if network.cached:
            return self._feature_datasets(cfg, network)
        target, size = self.data.target, self.data.image_size
        fit_ds = data.pipeline(target.train, self.data.fit_idx, size, cfg.data.batch_size,
                               training=True, augmentation=False, flip=target.flip,
                               seed=self._seed)
        val_ds = data.pipeline(target.train, self.data.val_idx, size, 256)
        return fit_ds, val_ds

    def _feature_datasets(self, cfg: TransferConfig, network: finetune.Network):
        # fine_tune's key for the training split, so the retrain reuses these features.
        key = finetune.feature_key(cfg, self.data.source, self.data.target, network,
                                   self.data.image_size) + ("train",)
        labels = self.data.target.train.labels

        def features(indices):
            return self.data.cache.features(key, network.trunk, self.data.target.train,
                                            indices, self.data.image_size)
        fit_ds = (tf.data.Dataset.from_tensor_slices((features(self.data.fit_idx),
                                                      labels[self.data.fit_idx]))
                  .shuffle(len(self.data.fit_idx), seed=self._seed, reshuffle_each_iteration=True)
                  .batch(cfg.data.batch_size).prefetch(tf.data.AUTOTUNE))
        val_ds = (tf.data.Dataset.from_tensor_slices((features(self.data.val_idx),
                                                      labels[self.data.val_idx]))
                  .batch(256).prefetch(tf.data.AUTOTUNE))
        return fit_ds, val_ds
