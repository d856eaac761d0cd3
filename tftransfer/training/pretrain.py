"""Training a source model (``pretrain``), naturally or adversarially, with ``fit()``.

A run directory holds ``model.keras`` + ``config.json`` (the trained classifier),
``history.csv`` (one row per epoch), ``metrics.json`` (the final result),
``checkpoint/`` (``callbacks.AtomicBackup``: a killed run resumes from its last finished
epoch) and ``logs/`` (TensorBoard).

Resume has one source of truth: the checkpoint restored before ``fit()``, whose weights
file records its epoch; the input pipeline starts from that epoch and ``fit()`` from the
same one. Every resume file is written atomically; an unusable one stops the run with one
sentence instead of training from a wrong epoch.

Methods (``config.attack_methods``): PGD and FGSM with a random start train one optimizer step
per minibatch. Free training's step accounting: ``--epochs E`` is the budget in
epoch-equivalents of gradient computations; the run makes E / m passes over the data
(``fit()`` epochs, history rows and checkpoints count passes), each minibatch replayed m
(``free_replays``) times in a row, one forward-backward pass and one optimizer step per
replay: E x batches optimizer steps in all, as natural training for E epochs, and the
learning-rate schedule spans those steps. With ``adversarial.early_stop``, ``early_stop_images``
training images are held out of training for the PGD check (``early_stop.PGDEarlyStop``).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tftransfer import data, runs
from tftransfer.models import architectures
from tftransfer.adversarial import early_stop
from tftransfer.training import runtime
from tftransfer.sources import saving
from tftransfer.adversarial.train_step import AdversarialTrainer
from tftransfer.training.checkpoints import EXTENSION_RULE
from tftransfer.training.resume_fields import ResumeFile
from tftransfer.training.callbacks import BackupUnlessNaN, HistoryCSV, StopOnNaN
from tftransfer.config import PretrainConfig, from_dict, to_dict
from tftransfer.errors import UserError
from tftransfer.training.optim import make_optimizer

METRICS_FILE = "metrics.json"
EXTENSIONS_FILE = "extensions.json"
RUN_CONFIG_FILE = "run_config.json"
_RECORD_REMEDY = "restore it, or choose another --out"
_STATS_SAMPLE = 10_000


def pretrain(cfg: PretrainConfig) -> dict:
    """Trains a source model as ``cfg`` says, resuming an interrupted run in ``cfg.out``.

    Returns:
      The final metrics (test accuracy as a fraction, time, epochs, paths).
    """
    out = Path(cfg.out)
    cfg = runtime.with_resolved_precision(cfg)  # recorded and compared as resolved, never auto
    _check_same_run(out, cfg)
    _record_extension(out, cfg)
    if (out / METRICS_FILE).exists() and (out / saving.MODEL_FILE).exists():
        print(f"{out} already holds this finished run; reporting it.", file=sys.stderr)
        return _metrics(out)
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json(out / RUN_CONFIG_FILE, to_dict(cfg))

    runtime.set_seed(cfg.seed)
    runtime.set_precision(cfg.precision)
    target = data.load(cfg.data.dataset, cfg.data.data_dir, cfg.data.download,
                       **cfg.data.load_options())
    train_idx = data.select_subset(target.train.labels, cfg.data.train_images, cfg.seed)
    check_idx = None
    if cfg.early_stop:
        train_idx, check_idx = early_stop.hold_out(train_idx, cfg.early_stop_images, cfg.seed)
    test_idx = data.select_subset(target.test.labels, cfg.data.test_images, 0, "--test-images")
    image_size = cfg.data.image_size or _native_size(target)
    strategy = runtime.strategy(cfg.distribute)
    test_ds = data.pipeline(target.test, test_idx, image_size, cfg.data.batch_size)
    batches = math.ceil(len(train_idx) / cfg.data.batch_size)
    # Free training: fit() epochs are passes over the data, each minibatch one step per replay.
    replays = cfg.free_replays if cfg.attack.replays_batches else 1

    backup = BackupUnlessNaN(str(out / "checkpoint"), double_checkpoint=True,
                             delete_checkpoint=False)
    with strategy.scope():
        mean, std = channel_statistics(target.train, train_idx, image_size, cfg.seed)
        classifier = build_classifier(cfg, target.num_classes, image_size, mean, std)
        trainer = AdversarialTrainer(classifier, attack=cfg.attack,
                                     adversarial_fraction=cfg.adversarial_fraction,
                                     weight_decay=cfg.optim.weight_decay)
        # The schedule counts optimizer steps: epochs x batches for every method.
        trainer.compile(optimizer=make_optimizer(cfg.optim, cfg.epochs, batches),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        trainer.build((None, image_size, image_size, 3))
        first_epoch = resume(backup, trainer, cfg.passes)
    # The batches of the remaining epochs only, from the epoch the restored weights end.
    train_ds = replay_batches(data.training_pipeline(
        target.train, train_idx, image_size, cfg.data.batch_size, cfg.seed, cfg.passes,
        first_epoch=first_epoch, augmentation=cfg.data.augment, flip=target.flip,
        color_jitter=cfg.data.color_jitter), replays)

    nan_guard = StopOnNaN()
    stopper = _early_stopper(cfg, target, check_idx, image_size, classifier)
    callbacks = [
        # First, so that the other callbacks see the restored epoch.
        backup,
        # Before HistoryCSV, which then records the check accuracy of every epoch.
        *([stopper] if stopper else []),
        HistoryCSV(out / "history.csv"),
        keras.callbacks.TensorBoard(str(out / "logs"), update_freq="epoch"),
        nan_guard,
    ]
    print(f"pretrain: {cfg.model.arch} on {target.name} ({len(train_idx)} images, "
          f"{image_size}px), attack={_attack_label(cfg)}, {cfg.epochs} epochs -> {out}",
          file=sys.stderr)
    start = time.time()
    with runtime.progress_to_stderr():
        history = trainer.fit(train_ds, epochs=cfg.passes, initial_epoch=first_epoch,
                              validation_data=test_ds, callbacks=callbacks, shuffle=False,
                              steps_per_epoch=batches * replays,
                              validation_freq=evaluation_epochs(cfg.passes, cfg.eval_every),
                              verbose=1 if sys.stderr.isatty() else 2)
    if nan_guard.bad_epoch is not None:
        raise UserError(f"The training loss became NaN at epoch {nan_guard.bad_epoch}; lower "
                        f"the learning rate (now {cfg.optim.learning_rate}) with a new --out, "
                        f"or check the data. Checkpoints in {out} stop at the last finite epoch.")
    extra = stopper.summary() if stopper else {}
    if cfg.attack.replays_batches:
        extra.update(free_replays=cfg.free_replays, passes=cfg.passes)
    return _finish(cfg, out, trainer, test_ds, target, image_size, len(train_idx),
                   len(test_idx), time.time() - start, history, extra, first_epoch)


def replay_batches(dataset, replays: int):
    """Each batch of ``dataset`` ``replays`` times in a row (free training's minibatch
    replay; ``dataset`` itself for 1)."""
    if replays == 1:
        return dataset
    return dataset.flat_map(
        lambda *batch: tf.data.Dataset.from_tensors(batch).repeat(replays))


def _attack_label(cfg: PretrainConfig) -> str:
    if cfg.attack.norm == "none":
        return "none"
    label = f"{cfg.attack.norm} {cfg.attack.method} eps {cfg.attack.eps:g}"
    if cfg.attack.replays_batches:
        label += f" ({cfg.free_replays} replays: {cfg.passes} passes)"
    return label


def _early_stopper(cfg, target, check_idx, image_size, classifier):
    """The PGD early stop on the held-out images, or None when it is off."""
    if check_idx is None:
        return None
    batches = list(data.pipeline(target.train, check_idx, image_size, 512, cache=False))
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    return early_stop.PGDEarlyStop(images, labels, cfg.attack, cfg.early_stop_drop, classifier)


def evaluation_epochs(epochs: int, every: int) -> list[int]:
    """The 1-based epochs with a test evaluation: every ``every``-th, and always the last
    (Keras' integer ``validation_freq`` would skip it when ``every`` does not divide
    ``epochs``)."""
    return sorted(set(range(every, epochs + 1, every)) | {epochs})


def build_classifier(cfg: PretrainConfig, num_classes: int, image_size: int, mean, std):
    """The registered architecture of ``cfg.model`` for ``num_classes`` at ``image_size``."""
    small = cfg.model.small_inputs
    if small is None:
        small = image_size <= 64
    return architectures.build(cfg.model.arch, num_classes, image_size, width=cfg.model.width,
                               small_inputs=small, mean=mean, std=std)


def channel_statistics(image_set, indices, image_size, seed):
    """Per-channel mean and std of (a seeded sample of) the training images in [0, 1]."""
    rng = np.random.default_rng(seed)
    sample = np.asarray(indices)
    if len(sample) > _STATS_SAMPLE:
        sample = rng.choice(sample, _STATS_SAMPLE, replace=False)
    total, squares, count = np.zeros(3), np.zeros(3), 0
    for images, _ in data.pipeline(image_set, sample, image_size, 512, cache=False):
        pixels = images.numpy().reshape(-1, 3).astype(np.float64)
        total += pixels.sum(0)
        squares += (pixels ** 2).sum(0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 1e-12))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def resume(backup: BackupUnlessNaN, trainer, epochs: int) -> int:
    """Restores ``backup``'s checkpoint into ``trainer`` now, before ``fit()``, and returns
    the epoch it ends: the one source of truth for both the input pipeline and ``fit()``.

    Raises:
      UserError: when the checkpoint is unusable, or holds more epochs than ``epochs``.
    """
    backup.set_model(trainer)
    epoch = backup.restore()
    if epoch > epochs:
        raise UserError(f"The checkpoint in {backup.backup_dir} holds {epoch} epochs, more "
                        f"than the {epochs} asked for; give --epochs {epoch} or more, or "
                        f"another --out.")
    return epoch


def _native_size(target) -> int:
    shape = target.train.fixed_shape
    if shape is None:
        raise UserError(f"{target.name} has images of different sizes: give an --image-size.")
    return int(shape[0])


def _check_same_run(out: Path, cfg: PretrainConfig) -> None:
    """Refuses to resume a run directory that holds a run of another configuration.

    The directory's own path is not compared (``--out DIR/``, or the directory moved),
    and data paths are compared once normalised. More epochs than recorded are not another
    configuration: they extend the run (``_record_extension``).
    """
    before = _recorded_config(out)
    if before is None:
        return
    changed = _differences(_comparable(before), _comparable(cfg))
    if before.epochs < cfg.epochs:
        changed = [c for c in changed if not c.startswith("epochs:")]
    if changed:
        raise UserError(f"{out} holds a run with a different configuration "
                        f"({'; '.join(changed)}); resume it with the same options or choose "
                        f"another --out.")


def _record_extension(out: Path, cfg: PretrainConfig) -> None:
    """When ``cfg`` asks for more epochs than the run in ``out`` was started with, records
    the extension in ``extensions.json`` (copied into config.json and metrics.json at the
    end) and withdraws the finished run's metrics. The checkpoint then continues with the
    new total's learning-rate schedule from the epoch it holds
    (``checkpoints.EXTENSION_RULE``)."""
    before = _recorded_config(out)
    if before is None or before.epochs >= cfg.epochs:
        return
    metrics = _metrics(out)
    entries = _extensions(out) + [{
        "epochs": before.epochs, "finished": bool(metrics), "new_epochs": cfg.epochs,
        "accuracy": metrics.get("accuracy"), "learning_rate": EXTENSION_RULE}]
    runs.write_json(out / EXTENSIONS_FILE, entries)
    (out / METRICS_FILE).unlink(missing_ok=True)
    # A kill from here on resumes the extension.
    runs.write_json(out / RUN_CONFIG_FILE, to_dict(cfg))
    print(f"pretrain: extending {out} from {before.epochs} to {cfg.epochs} epochs.",
          file=sys.stderr)


def _recorded_config(out: Path) -> PretrainConfig | None:
    """The configuration the run in ``out`` was started with (None: no run there yet),
    validated as a config built from flags is."""
    fields = ResumeFile(out / RUN_CONFIG_FILE, _RECORD_REMEDY)
    recorded = fields.read_json(None)
    if recorded is None:
        return None
    try:
        # As configs, not as files: fields added to the config later take their defaults.
        return from_dict(PretrainConfig, fields.object(None, recorded))
    except (UserError, ValueError, TypeError) as error:  # not a config's JSON
        raise fields.corrupt(str(error).rstrip(".")) from None


def _extensions(out: Path) -> list[dict]:
    """The run's recorded extensions (``extensions.json``; [] without one), checked."""
    fields = ResumeFile(out / EXTENSIONS_FILE, _RECORD_REMEDY)
    return fields.objects(None, fields.read_json([]))


def _metrics(out: Path) -> dict:
    """The finished run's ``metrics.json`` ({} without one), checked to be an object."""
    fields = ResumeFile(out / METRICS_FILE, _RECORD_REMEDY)
    return fields.object(None, fields.read_json({}))


def _comparable(cfg: PretrainConfig) -> dict:
    """``cfg`` as JSON data without its run directory, with normalised data paths."""
    values = runs.as_json_data(to_dict(cfg))
    values.pop("out", None)
    for key in ("dataset", "data_dir"):
        if values["data"].get(key) is not None:
            values["data"][key] = _normal_path(values["data"][key])
    return values


def _normal_path(text: str) -> str:
    """An existing path resolved (symlinks, ``..``, a trailing slash); a TFDS name or a
    missing path with only its spelling normalised."""
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else os.path.normpath(text)


def _differences(before: dict, now: dict, prefix: str = "") -> list[str]:
    """``field: old -> new`` for every field that differs (nested fields dotted)."""
    changed = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            changed.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changed


def _finish(cfg, out, trainer, test_ds, target, image_size, n_train, n_test, seconds, history,
            extra, first_epoch: int):
    with runtime.progress_to_stderr():
        results = trainer.evaluate(test_ds, verbose=0, return_dict=True)
    config = {
        "kind": "pretrain",
        "arch": cfg.model.arch,
        "dataset": target.name,
        "num_classes": target.num_classes,
        "class_names": list(target.class_names),
        "image_size": image_size,
        "attack": cfg.attack.describe(),
        "precision": cfg.precision,
        "resolved_config": to_dict(cfg),
    }
    extended = {"extended_from": _extensions(out)} if _extensions(out) else {}
    config.update(extended)
    saving.save_model_dir(trainer.classifier, out, config)
    epochs_run = first_epoch + len(history.epoch)
    metrics = {
        "dataset": target.name, "split": "test", "examples": n_test,
        "accuracy": float(results["accuracy"]), "loss": float(results["loss"]),
        "arch": cfg.model.arch, **cfg.attack.describe(), "epochs": cfg.epochs,
        "epochs_this_session": len(history.epoch), "last_epoch": epochs_run,
        "train_images": n_train, "seed": cfg.seed,
        "train_seconds_this_session": round(seconds, 1),
        "model": str(out), **extra, **extended,
    }
    runs.write_json(out / METRICS_FILE, metrics)
    return metrics
