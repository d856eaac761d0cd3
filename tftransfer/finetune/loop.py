"""The fine-tuning loop: ``fit()`` with the per-epoch test curve, or the compiled loop on
cached features, a checkpoint after every epoch or stretch, and the checks that refuse to
record a diverged run."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from tftransfer import runs
from tftransfer.training import checkpoints
from tftransfer.finetune import compiled_loop
from tftransfer.training import runtime
from tftransfer.training.callbacks import HistoryCSV, StopOnNaN
from tftransfer.config import TransferConfig, to_dict
from tftransfer.errors import UserError
from tftransfer.finetune.networks import Network


class EvaluateEvery(keras.callbacks.Callback):
    """Test accuracy on the curve's images every ``every`` epochs and after the last one,
    into the epoch logs (so ``HistoryCSV`` records it): the learning-speed result is a
    curve over epochs. After the last epoch, the final accuracy on all the test images
    (``final``; the curve's own value when the curve uses all of them)."""

    def __init__(self, curve_ds, every: int, epochs: int, test_ds=None):
        super().__init__()
        self.curve_ds, self.every, self.epochs = curve_ds, every, epochs
        self.test_ds = test_ds if test_ds is not None else curve_ds
        self.curve: dict[int, float] = {}
        self.final: dict = {}

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done == self.epochs or (self.every and done % self.every == 0):
            results = self.model.evaluate(self.curve_ds, verbose=0, return_dict=True)
            logs["test_accuracy"] = float(results["accuracy"])
            logs["test_loss"] = float(results["loss"])
            self.curve[done] = logs["test_accuracy"]
            if done == self.epochs:
                if self.test_ds is not self.curve_ds:
                    results = self.model.evaluate(self.test_ds, verbose=0, return_dict=True)
                self.final = {"test_accuracy": float(results["accuracy"]),
                              "test_loss": float(results["loss"])}


def use_compiled_loop(cfg: TransferConfig, network: Network) -> bool:
    """``training_loop`` auto: the compiled loop exactly when training runs on cached features
    (where fit()'s per-epoch overhead dominates); ``compiled`` needs the cache too. A head
    warm-up changes what trains between epochs (``finetune.warmup``), so it runs in fit()."""
    if cfg.training_loop == "compiled" and not network.cached:
        raise UserError("--set training_loop=compiled needs the feature cache (no augmentation, "
                        "--frozen-bn inference, not every block unfrozen).")
    if cfg.training_loop == "compiled" and cfg.head_warmup_epochs:
        raise UserError("--set training_loop=compiled trains one set of layers throughout; "
                        "--head-warmup-epochs runs in fit() (drop one of them).")
    return network.cached and cfg.training_loop != "fit" and not cfg.head_warmup_epochs


def train(cfg, trainer, train_ds, test_ds, curve_ds, steps, out: Path, verbose: bool,
          compiled: bool = False, saver: "Checkpointer | None" = None,
          compiled_functions: dict | None = None, callbacks=()):
    """Trains from epoch 0, or from ``saver.start`` (a resumed run); ``saver`` also writes a
    checkpoint after every epoch (``fit()``) or compiled stretch. ``compiled_functions``:
    the network's store of the compiled loop's traced functions; ``callbacks``: more for
    ``fit()``, called first (``warmup.HeadWarmup``)."""
    out.mkdir(parents=True, exist_ok=True)
    history_file = out / "history.csv"  # an earlier run's is gone (clear_run_record)
    start = saver.start if saver else compiled_loop.Start()
    if compiled:
        return compiled_loop.fit_compiled(trainer, train_ds, cfg.epochs, steps, cfg.eval_every,
                                          curve_ds, test_ds, history_file, verbose, start,
                                          saver.save if saver else None,
                                          compiled_functions)
    evaluator = EvaluateEvery(curve_ds, cfg.eval_every, cfg.epochs, test_ds)
    evaluator.curve.update(start.curve)
    history = _ResumedHistory(history_file, start.rows)
    nan_guard = StopOnNaN(check_weights=True)
    callbacks = [*callbacks, evaluator, history, nan_guard]
    if saver:
        callbacks.append(_SaveEveryEpoch(saver, history, evaluator))
    with runtime.progress_to_stderr():
        trainer.fit(train_ds, epochs=cfg.epochs, initial_epoch=start.epoch, steps_per_epoch=steps,
                    shuffle=False, verbose=2 if verbose else 0, callbacks=callbacks)
    if not evaluator.final:  # resumed after the last epoch's checkpoint: nothing left to train
        results = trainer.evaluate(test_ds, verbose=0, return_dict=True)
        evaluator.final = {"test_accuracy": float(results["accuracy"]),
                           "test_loss": float(results["loss"])}
    if nan_guard.bad_epoch is not None:
        # A diverged head would otherwise be recorded as a chance-level test accuracy.
        what = ("the training loss became NaN" if nan_guard.reason == "loss"
                else "the weights became NaN or infinite")
        raise _diverged(cfg, f"{what} at epoch {nan_guard.bad_epoch}")
    return evaluator


class Checkpointer:
    """Writes a run's checkpoint (``checkpoints``) and knows where a resumed run starts."""

    def __init__(self, cfg: TransferConfig, network: Network, out: Path, point=None):
        self.config, self.network, self.out = to_dict(cfg), network, out
        state = point.checkpoint if point else None
        self.extended_from = state.extended_from if state else []
        self.start = (compiled_loop.Start(state.epoch, state.rows, state.curve) if state
                      else compiled_loop.Start())
        if state:  # a killed run may have written history rows past its checkpoint
            runs.write_csv_atomic(out / "history.csv", state.rows)

    def save(self, epoch: int, rows, curve) -> None:
        """The checkpoint after ``epoch`` finished epochs; not when the weights have become
        non-finite (the run stops as diverged, and the last good checkpoint stays)."""
        state = checkpoints.capture(self.network.trained, self.network.trainer.optimizer,
                                    self.config, epoch, rows, curve, self.extended_from)
        if all(np.isfinite(w).all() for w in state.weights):
            checkpoints.save(self.out, state)


class _ResumedHistory(HistoryCSV):
    """``HistoryCSV`` that starts from the rows of a resumed run's checkpoint (those of
    the epochs before ``fit(initial_epoch=...)``), not from what the file holds."""

    def __init__(self, path, rows):
        super().__init__(path)
        self._first_rows = {int(row["epoch"]): dict(row) for row in rows}

    def on_train_begin(self, logs=None):
        self.rows = dict(self._first_rows)


class _SaveEveryEpoch(keras.callbacks.Callback):
    """Saves the checkpoint after each epoch, once its history row and curve point exist
    (so it goes after ``EvaluateEvery`` and ``HistoryCSV`` in the callback list)."""

    def __init__(self, saver: Checkpointer, history: HistoryCSV, evaluator: EvaluateEvery):
        super().__init__()
        self.saver, self.history, self.evaluator = saver, history, evaluator

    def on_epoch_end(self, epoch, logs=None):
        rows = [self.history.rows[e] for e in sorted(self.history.rows)]
        self.saver.save(epoch + 1, rows, self.evaluator.curve)


def extensions(point) -> dict:
    """``{"extended_from": [...]}`` for an extended run (see ``checkpoints``), else {}."""
    if point is None or not point.checkpoint.extended_from:
        return {}
    return {"extended_from": point.checkpoint.extended_from}


def check_finite_result(cfg: TransferConfig, trained: keras.Model, evaluator) -> None:
    """Refuses to record a run whose trained weights or final test result are not finite,
    whichever loop trained it (a last update can break the weights after the last check)."""
    if not all(np.isfinite(w).all() for w in trained.get_weights()):
        raise _diverged(cfg, "the trained weights are NaN or infinite")
    if not all(math.isfinite(v) for v in evaluator.final.values()):
        raise _diverged(cfg, f"the final test result is not finite ({evaluator.final})")


def _diverged(cfg: TransferConfig, what: str) -> UserError:
    return UserError(f"Fine-tuning diverged: {what}; lower the learning rate (now "
                     f"{cfg.optim.learning_rate}) or check the data.")
