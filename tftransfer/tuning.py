"""Hyperparameter search for fine-tuning, with keras-tuner.

``FineTuneHyperModel`` searches the knobs of ``transfer.fine_tune``'s recipe (learning
rate, weight decay, unfrozen blocks, batch size, head initialization, label smoothing,
epochs) and trains every trial with ``transfer``'s own building blocks. The objective
is accuracy on a stratified validation split carved from the N training images; the
test split is never read during the search. ``tune`` then retrains the best
configuration on all N images with ``transfer.fine_tune`` and evaluates it once on the
test split, and writes it as a ready-to-run ``python main.py transfer ...`` command.

Every search lives in a directory and resumes from it (finished trials are kept).
keras-tuner's distributed mode works unchanged: one chief process serves the oracle,
worker processes run trials (see ``role`` and ``results/tuning/README.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf

from tftransfer import architectures, data, runs, runtime, transfer
from tftransfer.config import DataConfig, TransferConfig
from tftransfer.errors import UserError

from tftransfer.config import TUNERS  # noqa: E402  (re-exported)
OBJECTIVE = "val_accuracy"
PROJECT_NAME = "search"
from tftransfer.config import TUNE_DEFAULT_MAX_TRIALS as DEFAULT_MAX_TRIALS  # noqa: E402
HYPERBAND_FACTOR = 3

# The search space. Defaults are the paper's recipe, so trial 0 of a fixed-order
# search and `populate` builds start from the known-good point.
LEARNING_RATE_RANGE = (1e-3, 0.5)             # sampled on a log scale
WEIGHT_DECAYS = (0.0, 5e-5, 5e-4, 5e-3)
BATCH_SIZES = (32, 64, 128)
HEAD_INITS = ("normal", "glorot")
LABEL_SMOOTHINGS = (0.0, 0.1, 0.2)

BEST_HPS_FILE = "best_hyperparameters.json"
BEST_COMMAND_FILE = "best_command.sh"
RESULT_FILE = "result.json"
BEST_RUN_DIR = "best_run"


# ----------------------------------------------------------------------------- config

@dataclass(frozen=True)
class TuneConfig:
    """A hyperparameter search.

    ``base`` holds what is not searched (target, source, N, seed, precision, data);
    its searched fields are replaced trial by trial.
    """

    base: TransferConfig
    directory: str
    tuner: str = "hyperband"
    max_trials: int | None = None          # None: 10 for random/bayesian, no cap for Hyperband
    executions_per_trial: int = 1
    max_epochs: int = 10
    validation_fraction: float = 0.2
    overwrite: bool = False
    unfrozen_choices: tuple | None = None  # None: every choice valid for the source

    def __post_init__(self):
        def check(condition, message):
            if not condition:
                raise UserError(message)
        check(self.tuner in TUNERS,
              f"--tuner must be one of {', '.join(TUNERS)}, got {self.tuner!r}.")
        check(self.max_trials is None or self.max_trials >= 1,
              f"--max-trials must be at least 1, got {self.max_trials}.")
        check(self.executions_per_trial >= 1,
              f"--executions-per-trial must be at least 1, got {self.executions_per_trial}.")
        check(self.max_epochs >= 1, f"--max-epochs must be at least 1, got {self.max_epochs}.")
        check(0.0 < self.validation_fraction < 1.0,
              f"--validation-fraction must be between 0 and 1, got {self.validation_fraction}.")
        check(self.unfrozen_choices is None or len(self.unfrozen_choices) >= 1,
              "--unfrozen-choices needs at least one value.")
        check(self.base.data.train_images is not None,
              "tune needs --train-images N: the validation split is carved from those N images.")

    @property
    def resolved_max_trials(self) -> int | None:
        """The trial budget (Hyperband: an optional cap on its own schedule)."""
        if self.max_trials is None and self.tuner != "hyperband":
            return DEFAULT_MAX_TRIALS
        return self.max_trials


def base_config(target: str, source: str | None, train_images: int, seed: int = 0,
                precision: str = "float32", data_dir: str | None = None,
                download: bool = True, test_images: int | None = None,
                image_size: int | None = None) -> TransferConfig:
    """The fixed part of every trial: the paper's recipe without augmentation, so that
    the frozen trunk's features can be cached; test accuracy only after the last epoch."""
    return TransferConfig(
        target=target, source=source,
        data=DataConfig(dataset=target, data_dir=data_dir, download=download,
                        image_size=image_size, train_images=train_images,
                        test_images=test_images, augment=False),
        eval_every=0, seed=seed, precision=precision)


# ----------------------------------------------------------------------------- search space

def unfrozen_block_choices(model: keras.Model) -> list[int]:
    """Valid ``unfrozen_blocks`` values for a source: head only, the last block, the last
    stage, the last two stages, ... and -1 (everything).

    The stages are the source architecture's (``architectures``); a source no registered
    architecture describes offers only 0 and -1.

    Args:
      model: the source network.

    Returns:
      The choices in increasing order, -1 last.
    """
    stages = architectures.stages(model)
    blocks = [block for stage in stages for block in stage.blocks]
    choices = {0, 1} if blocks else {0}
    counted = 0
    for stage in reversed(stages):
        counted += len(stage.blocks)
        choices.add(counted)
    if blocks:  # every residual block but the stem is -1 in all but name; keep -1
        choices.discard(len(blocks))
    return sorted(choices) + [-1]


def search_space(hp: kt.HyperParameters, unfrozen_choices, max_epochs: int,
                 tune_epochs: bool) -> dict:
    """Declares (on first use) and returns the trial's hyperparameter values.

    Args:
      hp: the trial's hyperparameters.
      unfrozen_choices: valid ``unfrozen_blocks`` values (``unfrozen_block_choices``).
      max_epochs: the epoch budget.
      tune_epochs: declare ``epochs`` (random/bayesian); Hyperband instead sets
        ``tuner/epochs``, its resource.

    Returns:
      name -> value, the names of ``TransferConfig`` knobs.
    """
    values = {
        "learning_rate": hp.Float("learning_rate", *LEARNING_RATE_RANGE, sampling="log",
                                  default=0.1),
        "weight_decay": hp.Choice("weight_decay", list(WEIGHT_DECAYS), default=5e-4),
        # The paper's head-only default when it is searched, else the first choice
        # (keras-tuner refuses a default outside the choices).
        "unfrozen_blocks": hp.Choice("unfrozen_blocks", list(unfrozen_choices),
                                     default=0 if 0 in unfrozen_choices else unfrozen_choices[0]),
        "batch_size": hp.Choice("batch_size", list(BATCH_SIZES), default=128),
        "head_init": hp.Choice("head_init", list(HEAD_INITS), default="normal"),
        "label_smoothing": hp.Choice("label_smoothing", list(LABEL_SMOOTHINGS), default=0.0),
    }
    if tune_epochs:
        values["epochs"] = hp.Int("epochs", max(1, max_epochs // 3), max_epochs,
                                  default=max_epochs)
    return values


def searched_values(hp_values: dict, max_epochs: int) -> dict:
    """The searched knobs of a trial, with Hyperband's ``tuner/epochs`` as ``epochs``."""
    values = {k: v for k, v in hp_values.items() if not k.startswith("tuner/")}
    if "tuner/epochs" in hp_values:
        values["epochs"] = int(hp_values["tuner/epochs"])
    values.setdefault("epochs", max_epochs)
    return values


def config_from_hps(base: TransferConfig, values: dict) -> TransferConfig:
    """``base`` with the searched knobs of ``values`` (see ``searched_values``)."""
    return dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, batch_size=int(values["batch_size"])),
        optim=dataclasses.replace(base.optim, learning_rate=float(values["learning_rate"]),
                                  weight_decay=float(values["weight_decay"]),
                                  label_smoothing=float(values["label_smoothing"])),
        unfrozen_blocks=int(values["unfrozen_blocks"]), head_init=str(values["head_init"]),
        epochs=int(values["epochs"]))


# ----------------------------------------------------------------------------- data

@dataclass
class SearchData:
    """Everything a trial reads: the source, the target's training split and the split
    of its N images into a fitting part and a validation part."""

    source: transfer.SourceModel
    target: data.TargetData
    image_size: int
    train_idx: np.ndarray                  # the N images (what the final retrain uses)
    fit_idx: np.ndarray
    val_idx: np.ndarray
    cache: transfer.RunCache = field(default_factory=transfer.RunCache)


def prepare(cfg: TuneConfig) -> SearchData:
    """Loads the source and target and carves the validation split from the N images."""
    base = cfg.base
    runtime.set_precision(base.precision)
    cache = transfer.RunCache()  # shared by the trials and the final retrain
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
    ``transfer.Network`` (the source's weights, a new seeded head, the trial's blocks
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
            transfer.unfrozen_block_names(search_data.source.model, int(choice))
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
        network.reset(cfg.head_init, self._seed)
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

    def _network(self, cfg: TransferConfig) -> transfer.Network:
        """The cached ``transfer.Network`` of a trial's recipe (built on first use)."""
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

    def _feature_datasets(self, cfg: TransferConfig, network: transfer.Network):
        # fine_tune's key for the training split, so the retrain reuses these features.
        key = transfer.feature_key(cfg, self.data.source, self.data.target, network,
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


# ----------------------------------------------------------------------------- tuners

def role() -> str:
    """``single``, or in keras-tuner's distributed mode ``chief`` / ``worker`` (from
    ``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT``)."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    missing = [name for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID")
               if name not in os.environ]
    if missing:
        raise UserError(f"KERASTUNER_ORACLE_IP is set but {' and '.join(missing)} is not; "
                        f"distributed tuning needs all three (TUNER_ID 'chief' or 'tuner0', "
                        f"'tuner1', ...).")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


class _TrialRecorder:
    """Resets the hypermodel's execution counter per trial and records the trials this
    process ran (in distributed mode: this worker's share)."""

    def __init__(self, *args, **kwargs):
        self.trials_run: list[str] = []
        super().__init__(*args, **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        self.hypermodel.begin_trial()
        self.trials_run.append(trial.trial_id)
        return super().run_trial(trial, *args, **kwargs)


class HyperbandTuner(_TrialRecorder, kt.Hyperband):
    """keras-tuner's Hyperband, recording its trials."""


class ResumableBayesianOracle(kt.oracles.BayesianOptimizationOracle):
    """keras-tuner's Bayesian-optimization oracle, with its numpy random state saved with
    the search: keras-tuner's own restarts from the seed on reload, so once the Gaussian
    process takes over, a resumed search would propose other trials than an uninterrupted
    one."""

    def get_state(self):
        state = super().get_state()
        kind, keys, position, has_gauss, cached = self._random_state.get_state()
        state["random_state"] = [kind, keys.tolist(), position, has_gauss, cached]
        return state

    def set_state(self, state):
        super().set_state(state)
        self._random_state = np.random.RandomState(self.seed)  # a search saved without it
        if "random_state" in state:
            kind, keys, position, has_gauss, cached = state["random_state"]
            self._random_state.set_state((kind, np.asarray(keys, dtype=np.uint32), position,
                                          has_gauss, cached))


class BayesianTuner(_TrialRecorder, kt.Tuner):
    """keras-tuner's Bayesian optimization (``ResumableBayesianOracle``), recording its
    trials."""

    def __init__(self, hypermodel, objective, max_trials, seed, **kwargs):
        oracle = ResumableBayesianOracle(objective=objective, max_trials=max_trials, seed=seed)
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)


class RandomTuner(_TrialRecorder, kt.RandomSearch):
    """keras-tuner's random search, recording its trials."""


def make_tuner(cfg: TuneConfig, hypermodel: FineTuneHyperModel):
    """The tuner of ``cfg.tuner`` in ``cfg.directory`` (resumed unless ``overwrite``)."""
    if cfg.overwrite and role() == "worker":
        raise UserError("--overwrite deletes the search directory; give it to the chief only, "
                        "never to a worker.")
    common = dict(objective=kt.Objective(OBJECTIVE, direction="max"),
                  directory=cfg.directory, project_name=PROJECT_NAME, overwrite=cfg.overwrite,
                  executions_per_trial=cfg.executions_per_trial,
                  seed=oracle_seed(cfg.base.seed))
    with runtime.progress_to_stderr():  # keras-tuner prints "Reloading ..." on stdout
        if cfg.tuner == "hyperband":
            tuner = HyperbandTuner(hypermodel, max_epochs=cfg.max_epochs,
                                   factor=HYPERBAND_FACTOR, **common)
            if role() != "worker":     # a worker's oracle is a client of the chief's
                tuner.oracle.max_trials = cfg.resolved_max_trials
        elif cfg.tuner == "bayesian":
            _require_bayesian()
            tuner = BayesianTuner(hypermodel, max_trials=cfg.resolved_max_trials, **common)
        else:
            tuner = RandomTuner(hypermodel, max_trials=cfg.resolved_max_trials, **common)
    return tuner


def oracle_seed(seed: int) -> int:
    """The keras-tuner oracle seed of a search with ``--seed seed``: never 0, which
    keras-tuner would replace by a random seed (an unrepeatable search), and below 2**32,
    which numpy's random state and scikit-learn need."""
    return seed % (2**32 - 1) + 1


def _require_bayesian() -> None:
    import importlib.util

    if importlib.util.find_spec("sklearn") is None:
        raise UserError("--tuner bayesian needs scikit-learn (pip install 'keras-tuner[bayesian]'"
                        "); --tuner hyperband and random work without it.")


def run_search(tuner, verbose: bool = True, callbacks=None) -> None:
    """Runs the tuner's remaining trials (a chief serves the oracle until they are done)."""
    with runtime.progress_to_stderr():  # the oracle's trial summaries go to stdout
        tuner.search(verbose=2 if verbose else 0, callbacks=list(callbacks or []))


# ----------------------------------------------------------------------------- best run

def transfer_command(cfg: TransferConfig) -> str:
    """``python main.py transfer ...`` that trains exactly ``cfg``."""
    d, o = cfg.data, cfg.optim
    args = ["--target", cfg.target]
    if cfg.source is not None:
        args += ["--source", cfg.source]
    args += ["--train-images", str(d.train_images)]
    if d.test_images is not None:
        args += ["--test-images", str(d.test_images)]
    args += ["--unfrozen-blocks", str(cfg.unfrozen_blocks), "--epochs", str(cfg.epochs),
             "--lr", repr(o.learning_rate), "--weight-decay", repr(o.weight_decay),
             "--batch-size", str(d.batch_size), "--head-init", cfg.head_init,
             "--label-smoothing", repr(o.label_smoothing), "--momentum", repr(o.momentum),
             "--schedule", o.schedule, "--frozen-bn", cfg.frozen_bn,
             "--eval-every", str(cfg.eval_every), "--seed", str(cfg.seed),
             "--precision", cfg.precision, "--feature-cache", cfg.feature_cache]
    if d.image_size is not None:
        args += ["--image-size", str(d.image_size)]
    if d.augment:
        args.append("--augment")
    if d.data_dir is not None:
        args += ["--data-dir", d.data_dir]
    if not d.download:
        args.append("--no-download")
    if cfg.out is not None:
        args += ["--out", cfg.out]
    return "python main.py transfer " + " ".join(shlex.quote(a) for a in args)


def config_from_command(command: str) -> TransferConfig:
    """The TransferConfig that a ``python main.py transfer ...`` command trains."""
    from tftransfer.commands import transfer as transfer_command_module

    words = shlex.split(command)
    if words[:3] != ["python", "main.py", "transfer"]:
        raise ValueError(f"not a transfer command: {command!r}")
    parser = argparse.ArgumentParser(prog="main.py")
    transfer_command_module.register(parser.add_subparsers())
    return transfer_command_module.config_from_args(parser.parse_args(words[2:]))


def best_trial(tuner):
    """The completed trial with the highest objective, the earliest among ties (so that
    a reloaded search picks the same one); a clear error when every trial failed."""
    trials = [t for t in tuner.oracle.trials.values()
              if t.status == "COMPLETED" and t.score is not None]
    if not trials:
        failed = [t for t in tuner.oracle.trials.values() if t.message]
        detail = (f" The first failure ended with: {failed[0].message.strip().splitlines()[-1]}"
                  if failed else "")
        raise UserError(f"No trial of the search in {tuner.project_dir} finished.{detail}")
    order = {trial_id: i for i, trial_id in enumerate(tuner.oracle.start_order)}
    return min(trials, key=lambda t: (-t.score, order.get(t.trial_id, len(order))))


def trial_number(tuner, trial_id: str) -> int:
    """The 1-based number keras-tuner's log gives a trial ("Trial #2" is trial id 1)."""
    return tuner.oracle.start_order.index(trial_id) + 1


def retrain_best(cfg: TuneConfig, tuner, search_data: SearchData, verbose: bool = True) -> dict:
    """Writes the best hyperparameters and command, retrains that configuration on all N
    images and evaluates it once on the test split.

    A rerun after a finished retrain of the same command reuses its result instead of
    touching the test split again.

    Returns:
      The tune result: best hyperparameters, validation and test accuracy, command, dir.
    """
    directory = Path(cfg.directory)
    trial = best_trial(tuner)
    values = searched_values(trial.hyperparameters.values, cfg.max_epochs)
    out = directory / BEST_RUN_DIR
    best_cfg = dataclasses.replace(config_from_hps(cfg.base, values), out=str(out))
    command = transfer_command(best_cfg)
    retrain_cfg = config_from_command(command)
    if retrain_cfg != best_cfg:  # the printed command must train what was found
        raise AssertionError(f"transfer_command does not round-trip: {retrain_cfg} != {best_cfg}")
    runs.write_json(directory / BEST_HPS_FILE, values)
    if verbose:
        print(f"best trial: #{trial_number(tuner, trial.trial_id)} (id {trial.trial_id}), "
              f"{OBJECTIVE} {trial.score:.4f} with {values}\n"
              f"best configuration (retrained on all {cfg.base.data.train_images} images):\n"
              f"  {command}", file=sys.stderr)

    row = _finished_retrain(directory, out, command)
    retrained = row is None
    if retrained:
        runs.write_text_atomic(directory / BEST_COMMAND_FILE, command + "\n")
        row = transfer.fine_tune(retrain_cfg, cache=search_data.cache, verbose=verbose)
    result = {
        "best_hyperparameters": values, "val_accuracy": float(trial.score),
        "test_accuracy": row["test_accuracy"], "command": command, "dir": str(directory),
        "best_trial": trial.trial_id,
        "best_trial_number": trial_number(tuner, trial.trial_id),
        "trials": _completed_trials(tuner),
        "tuner": cfg.tuner, "target": cfg.base.target, "source": row["source"],
        "train_images": int(cfg.base.data.train_images),
        "validation_images": int(len(search_data.val_idx)),
        "test_images": row["test_images"], "run_dir": str(out), "retrained": retrained,
    }
    runs.write_json(directory / RESULT_FILE, result)
    return result


def _finished_retrain(directory: Path, out: Path, command: str) -> dict | None:
    command_file, metrics_file = directory / BEST_COMMAND_FILE, out / "metrics.json"
    previous = command_file.read_text().strip() if command_file.exists() else None
    if previous == command and metrics_file.exists():
        return runs.read_json(metrics_file)
    if metrics_file.exists():
        metrics_file.unlink()  # a different best: its old result must not be reused
    return None


def _completed_trials(tuner) -> int:
    return sum(1 for t in tuner.oracle.trials.values() if t.status == "COMPLETED")


# ----------------------------------------------------------------------------- entry point

def default_directory(base: TransferConfig, tuner: str) -> str:
    """``runs/tune/<target>__<source>__n<N>__<tuner>__s<seed>``."""
    def slug(text):
        return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(text)).strip("_")[-60:]
    source = base.source or transfer.DEFAULT_SOURCE
    return str(Path("runs/tune") / (f"{slug(base.target)}__{slug(source)}__n"
                                    f"{base.data.train_images}__{tuner}__s{base.seed}"))


def tune(cfg: TuneConfig, verbose: bool = True, callbacks=None) -> dict:
    """Runs (or resumes) a search, then retrains and tests its best configuration.

    In distributed mode a worker only runs trials and returns which ones; the chief
    serves the oracle and, when all trials are done, retrains the best configuration.

    Args:
      cfg: the search.
      verbose: per-epoch progress and trial summaries on stderr.
      callbacks: extra Keras callbacks for every trial's ``fit``.

    Returns:
      The result dict (see ``retrain_best``), or a worker's summary.
    """
    search_data = prepare(cfg)
    hypermodel = FineTuneHyperModel(search_data, cfg.base, cfg.max_epochs,
                                    tune_epochs=cfg.tuner != "hyperband",
                                    unfrozen_choices=cfg.unfrozen_choices)
    tuner = make_tuner(cfg, hypermodel)
    if verbose:
        print(f"tune: {cfg.tuner} search ({role()}) of {search_data.source.identity['source']}"
              f" -> {search_data.target.name}: {len(search_data.fit_idx)} fitting + "
              f"{len(search_data.val_idx)} validation images, unfrozen-block choices "
              f"{hypermodel.unfrozen_choices} -> {cfg.directory}", file=sys.stderr)
    run_search(tuner, verbose, callbacks)
    if role() == "worker":
        return {"role": "worker", "tuner_id": os.environ["KERASTUNER_TUNER_ID"],
                "trials_run": list(tuner.trials_run), "dir": cfg.directory}
    result = retrain_best(cfg, tuner, search_data, verbose)
    result["trials_run_here"] = list(tuner.trials_run)
    return result
