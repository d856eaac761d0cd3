"""Hyperparameter search for fine-tuning, with keras-tuner.

``FineTuneHyperModel`` searches the knobs of ``finetune.fine_tune``'s recipe (learning
rate, weight decay, unfrozen blocks, batch size, head initialization, label smoothing,
epochs) and trains every trial with ``transfer``'s own building blocks. The objective
is accuracy on a stratified validation split carved from the N training images; the
test split is never read during the search. ``tune`` then retrains the best
configuration on all N images with ``finetune.fine_tune`` and evaluates it once on the
test split, and writes it as a ready-to-run ``python main.py transfer ...`` command.

Every search lives in a directory and resumes from it (finished trials are kept). One
process searches a directory at a time (its lock, ``runs.locked``; a second is refused):
two oracles on one directory would each claim every trial. For a parallel search,
keras-tuner's distributed mode works unchanged: one chief process serves the oracle (and
holds the lock), worker processes run trials (see ``tuners.role`` and
``results/tuning/README.md``).

The parts: ``tuning.search_space`` (the knobs), ``hypermodel`` (a trial's training),
``tuners`` (keras-tuner), ``tuning.best`` (the best trial's command and retrain); this
module holds the search's config and ``tune``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path


from tftransfer import runs
from tftransfer.sources import loading as source_loading
from tftransfer.config import TUNE_DEFAULT_MAX_TRIALS as DEFAULT_MAX_TRIALS
from tftransfer.config import TUNERS, DataConfig, TransferConfig
from tftransfer.config.checks import check, check_finite, check_values, check_whole_number
from tftransfer.training import runtime
from tftransfer.tuning.hypermodel import FineTuneHyperModel, prepare
from tftransfer.tuning.best import retrain_best
from tftransfer.tuning.tuners import make_tuner, role, run_search

__all__ = ["DEFAULT_MAX_TRIALS", "TUNERS", "TuneConfig", "base_config", "default_directory",
           "tune"]

LOCK_FILE = ".lock"  # in the search directory, beside keras-tuner's project folder


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
        # The fields are the command's flags, and the messages name them.
        check(self.tuner in TUNERS,
              f"--tuner must be one of {', '.join(TUNERS)}, got {self.tuner!r}.")
        for name in ("max_trials", "executions_per_trial", "max_epochs"):
            value, flag = getattr(self, name), "--" + name.replace("_", "-")
            if value is not None:
                check_whole_number(value, flag)
                check(value >= 1, f"{flag} must be at least 1, got {value}.")
        check_finite(self)
        check(0.0 < self.validation_fraction < 1.0,
              f"--validation-fraction must be between 0 and 1, got {self.validation_fraction}.")
        if self.unfrozen_choices is not None:
            check_values("tune", "--unfrozen-choices", self.unfrozen_choices)
            for value in self.unfrozen_choices:
                check_whole_number(value, "each of --unfrozen-choices")
        check(self.base.data.train_images is not None,
              "tune needs --train-images N: the validation split is carved from those N images.")

    @property
    def resolved_max_trials(self) -> int | None:
        """The trial budget (Hyperband: an optional cap on its own schedule)."""
        if self.max_trials is None and self.tuner != "hyperband":
            return DEFAULT_MAX_TRIALS
        return self.max_trials


def base_config(target: str, source: str | None, train_images: int, seed: int = 0,
                precision: str = "auto", data_dir: str | None = None,
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


# ----------------------------------------------------------------------------- entry point

def default_directory(base: TransferConfig, tuner: str) -> str:
    """``runs/tune/<target>__<source>__n<N>__<tuner>__s<seed>``."""
    def part(text):
        return runs.slug(text, keep=".+-", max_chars=60)  # as run directories' parts
    source = base.source or source_loading.DEFAULT_SOURCE
    return str(Path("runs/tune") / (f"{part(base.target)}__{part(source)}__n"
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

    Raises:
      UserError: at once, when another search (not a worker of this one) holds the
        directory's lock.
    """
    # precision auto resolved once: the trials, the retrain and their records agree.
    cfg = dataclasses.replace(cfg, base=runtime.with_resolved_precision(cfg.base))
    with search_lock(cfg.directory):
        return _tune(cfg, verbose, callbacks)


def search_lock(directory):
    """The lock of a search directory, held by a single search or a distributed search's
    chief, never by its workers (they share the chief's directory); refused at once when
    another process holds it."""
    if role() == "worker":
        return contextlib.nullcontext()
    return runs.locked(Path(directory) / LOCK_FILE, busy=lambda holder: (
        f"--dir {directory} is in use by another tune ({holder}); wait for it to end, or "
        f"for a parallel search start one chief and several workers on it in keras-tuner's "
        f"distributed mode (KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and "
        f"KERASTUNER_ORACLE_PORT; see `tune --help` and results/tuning/README.md)."))


def _tune(cfg: TuneConfig, verbose: bool, callbacks) -> dict:
    """``tune`` under the search directory's lock."""
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
