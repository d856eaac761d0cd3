"""keras-tuner tuners of a fine-tuning search: which one, resumable, distributed roles."""

from __future__ import annotations

import os

import keras_tuner as kt
import numpy as np

from tftransfer.training import runtime
from tftransfer.errors import UserError

OBJECTIVE = "val_accuracy"
PROJECT_NAME = "search"
HYPERBAND_FACTOR = 3


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


def make_tuner(cfg, hypermodel):
    """The tuner of ``cfg.tuner`` (a ``tuning.TuneConfig``) in ``cfg.directory``, searching
    ``hypermodel`` (a ``hypermodel.FineTuneHyperModel``); resumed unless ``overwrite``."""
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
