"""The fine-tuning recipe: a new head on a source network, the last N blocks unfrozen.

``fine_tune(cfg)`` is the one place the recipe lives (``transfer``, ``sweep`` and
``tune`` all call it). When the frozen part of the network sees the same input every
epoch (no augmentation, frozen BatchNorm in inference mode), its output is computed
once (``RunCache``) and only the unfrozen part is trained, on the cached
activations: the same result, many times faster. A sweep also reuses loaded sources
and datasets and the built, traced networks (reset before each run).

The parts live in their own modules, and this one re-exports what callers use:
``sources.loading`` (the source and its identity), ``networks`` (head, freezing, the
trunk boundary, the compiled trainer), ``finetune.run_cache`` (``RunCache``),
``finetune.loop`` (training, the test curve, checkpoints) and ``finetune.result`` (the
result row).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import sys
import time
from pathlib import Path

import numpy as np

from tftransfer import data, runs
from tftransfer.config import TransferConfig, to_dict
from tftransfer.config.length import EPOCHS_AUTO, Length, auto_eval_every, training_length
from tftransfer.errors import UnsavedResult, UserError, os_error_sentence
from tftransfer.finetune.loop import (Checkpointer, check_finite_result, extensions, train,
                                      use_compiled_loop)
from tftransfer.finetune.input_plan import (first_line_first, photo_input_size, say_photo_input,
                                           target_sizes)
from tftransfer.finetune.networks import Network
from tftransfer.finetune.result import (per_class_accuracy, per_class_summary, result_row,
                                        training_columns)
from tftransfer.finetune.rundir import check_run_dir, clear_run_record, locked, resume_point
from tftransfer.finetune.run_cache import RunCache
from tftransfer.finetune.warmup import warmup_callbacks
from tftransfer.models import architectures
from tftransfer.sources import hub, saving
from tftransfer.sources.loading import SourceModel
from tftransfer.training import checkpoints, runtime


def normalization_statistics(cfg: TransferConfig, target, train_idx, image_size: int):
    """(mean, std) for ``cfg.normalization``: None (the source's), the target's fixed
    per-dataset statistics (``data.target_statistics``, the paper's), or those of the run's
    training images (``subset``)."""
    if cfg.normalization == "source":
        return None
    if cfg.normalization == "target":
        return data.target_statistics(target.name)
    from tftransfer.training.pretrain import channel_statistics  # training imports nothing of ours
    return channel_statistics(target.train, train_idx, image_size, cfg.seed)


def augments(cfg: TransferConfig, target) -> bool:
    """Whether this run's training images are augmented: ``cfg.data.augment``, except that
    the paper's policy leaves grayscale targets as they are (its BLACK_N_WHITE transform)."""
    if cfg.data.augment_policy == "utrera2021" and target.grayscale:
        return False
    return cfg.data.augment


# ----------------------------------------------------------------------------- the recipe

def fine_tune(cfg: TransferConfig, cache: RunCache | None = None, save_model: bool = True,
              verbose: bool = True, existing_run: str = "replace", checkpoint: bool = False,
              resume: bool = False, feature_cache_memory: int | None = None) -> dict:
    """Fine-tunes ``cfg.source`` on ``cfg.target`` and records the run.

    A run starts from epoch 0, and the run directory's old record files are removed before
    training, so it never holds parts of two runs; unless ``resume``: then it continues from
    the run directory's checkpoint (``rundir.resume_point``: the same configuration, or more
    epochs to extend it; a finished run is reported as it is).

    Args:
      cfg: the run's configuration.
      cache: a RunCache shared across runs (a new one when None).
      save_model: write the fine-tuned model into the run directory.
      verbose: per-epoch and feature-extraction progress on stderr.
      existing_run: what a finished run of another configuration in the run directory
        gets: ``replace`` (it is replaced whole) or ``refuse`` (a UserError naming it,
        before any work; the ``transfer`` command's choice). See ``rundir.check_run_dir``.
      checkpoint: write ``checkpoints.CHECKPOINT_FILE`` after every epoch or compiled
        stretch, so that ``resume`` can continue a killed run or extend a finished one.
      resume: continue from that checkpoint (implies ``checkpoint``).
      feature_cache_memory: bytes of cached trunk features a new RunCache holds in memory
        before it writes them to disk (None: ``config.DEFAULT_FEATURE_CACHE_MEMORY``); the
        result is the same either way.

    Returns:
      The result row: test accuracy (a fraction) and loss, the paper's variables, time,
      per-epoch test accuracies and the run directory.
    """
    # precision auto resolved first: config.json, the result and the run-directory checks
    # hold what the run ran with (a run recorded as float32 before auto compares equal).
    # Said after the run's own first lines (source, input size, length: _fine_tune).
    cfg = runtime.with_resolved_precision(cfg, say=False)
    # The precision policy holds while the networks are built, and is the caller's again after.
    # `held` keeps the run directory's lock until the last write (see _fine_tune).
    with runtime.precision_policy(cfg.precision), contextlib.ExitStack() as held:
        # A cache of its own is closed on the way out, an exception's too: its feature
        # files on disk (gigabytes at photo scale) go with the run.
        cache = cache or held.enter_context(RunCache(memory_budget=feature_cache_memory))
        return _fine_tune(cfg, cache, save_model, verbose, existing_run,
                          checkpoint, resume, held)


def _fine_tune(cfg: TransferConfig, cache: RunCache, save_model: bool, verbose: bool,
               existing_run: str, checkpoint: bool, resume: bool,
               held: contextlib.ExitStack) -> dict:
    """``fine_tune`` under its precision policy; ``held`` holds the run directory's lock
    from its check on, until ``fine_tune`` returns."""
    if cfg.source is None:  # a default that fits the target; hub.default_source says why
        cfg = dataclasses.replace(cfg, source=hub.default_source(
            cfg.target, cfg.data.data_dir, cfg.data.image_size, verbose))
    hub.model_dir(cfg.source, progress=verbose)  # a published source: fetched once, quiet if asked
    source = cache.source(cfg.source)
    requested = cfg
    with first_line_first(cfg.target) as stderr:  # the target's warnings after that line
        cfg = resolve_length_and_stages(cfg, source, cache)
        length = run_length(requested, cache) if verbose else None  # for the first lines
        if verbose:
            say_photo_input(requested, source.identity["source"], _source_size(source),
                            cfg.data.image_size or _source_size(source),
                            lambda: target_sizes(cfg, cache), length, file=stderr)
    out = Path(cfg.out) if cfg.out else default_run_dir(cfg, source)
    # From the check to the last write: a second run into `out` is refused, not mixed in.
    held.enter_context(locked(out))
    # A resumed run is compared with its checkpoint instead (resume_point), epochs aside.
    check_run_dir(out, cfg, "replace" if resume else existing_run)
    point = resume_point(out, cfg) if resume else None
    if point is not None and point.finished is not None:
        print(f"{out} holds this finished run ({point.checkpoint.epoch} epochs); reporting "
              f"it (a larger --epochs extends it).", file=sys.stderr)
        return point.finished
    target = cache.target(cfg)
    image_size = cfg.data.image_size or int(source.model.inputs[0].shape[1])
    train_idx, test_idx, curve_idx = run_indices(cfg, target)
    steps = math.ceil(len(train_idx) / cfg.data.batch_size)
    augment = augments(cfg, target)
    network = cache.network(cfg, source, target.num_classes, image_size, steps, augment,
                            normalization_statistics(cfg, target, train_idx, image_size))
    network.reset(cfg.head_init, cfg.seed, cfg.head_std)
    compiled = use_compiled_loop(cfg, network)
    runtime.set_seed(cfg.seed)
    first = point.checkpoint.epoch if point else 0
    if point:
        checkpoints.restore(point.checkpoint, network.trained, network.trainer.optimizer)
    if verbose:
        print(f"transfer: {source.identity['source']} -> {target.name} "
              f"({len(train_idx)} images, {image_size}px), unfrozen blocks "
              f"{cfg.unfrozen_blocks} {network.blocks}, {length.describe()}, "
              f"feature cache {'on' if network.cached else 'off'} -> {out}"
              + (f"; resumed after epoch {first}" if point else ""), file=sys.stderr)
        runtime.say_auto_precision()

    if not point:
        clear_run_record(out)  # only now: a run that stops on bad input keeps the old one
    start = time.time()
    if network.cached:
        datasets = cached_datasets(cfg, network, source, target,
                                   (train_idx, test_idx, curve_idx), image_size, cache,
                                   tensors=compiled, first_epoch=first, progress=verbose)
    else:
        datasets = _image_datasets(cfg, target, (train_idx, test_idx, curve_idx), image_size,
                                   augment, first_epoch=first)
    saver = Checkpointer(cfg, network, out, point) if checkpoint or resume else None
    evaluator = train(cfg, network.trainer, *datasets, steps, out, verbose, compiled, saver,
                      network.compiled_functions, warmup_callbacks(cfg, network))
    check_finite_result(cfg, network.trained, evaluator)
    seconds = time.time() - start
    trained = TrainedRun(cfg, requested, source, target, (train_idx, test_idx, curve_idx),
                         image_size, steps, network, datasets[1], out)
    return record_run(trained, evaluator, seconds, save_model, point)


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A trained run, as ``record_run`` records it: its resolved and requested configs, the
    source and target, the (train, test, curve) indices, the image size, the SGD steps per
    epoch, the network, the final test set and the run directory."""

    cfg: TransferConfig
    requested: TransferConfig
    source: SourceModel
    target: object
    indices: tuple
    image_size: int
    steps: int
    network: Network
    test_set: object
    out: Path


def record_run(run: TrainedRun, evaluator, seconds: float, save_model: bool,
               point=None) -> dict:
    """Writes a trained run's record (``metrics.json``, and the model when ``save_model``)
    and returns its result row: what ``fine_tune`` and each seed of
    ``multi_seed.fine_tune_seeds`` record.

    Args:
      run: the trained run.
      evaluator: its curve, final result and (optionally) final predictions.
      seconds: its training time.
      save_model: write the fine-tuned model into the run directory.
      point: the ``rundir.resume_point`` it continued from (None: a new run).
    """
    cfg, source, target, network, out = run.cfg, run.source, run.target, run.network, run.out
    result = result_row(cfg, source, target, run.indices, evaluator, seconds, out,
                        network.cached)
    result.update(requested_columns(run.requested, len(run.indices[0])))
    training, convergence = training_columns(out / "history.csv", run.steps * cfg.epochs,
                                             target.num_classes)
    result.update(training)
    per_class = per_class_accuracy(network.trained, run.test_set,
                                   target.test.labels[run.indices[1]], target.class_names,
                                   getattr(evaluator, "predictions", None))
    result.update(per_class_summary(per_class))
    if "warning" in result:
        print(f"warning: {result['warning']}", file=sys.stderr)
    extended = extensions(point)
    result.update(extended)
    with _reported_if_unsaved(result, out):
        if save_model:
            config = {"kind": "transfer", "arch": source.identity["source_arch"],
                      "dataset": target.name, "num_classes": target.num_classes,
                      "class_names": list(target.class_names), "image_size": run.image_size,
                      "unfrozen_block_names": network.blocks, **source.identity,
                      "resolved_config": to_dict(cfg),
                      "test_accuracy": result["test_accuracy"], **extended}
            saving.save_model_dir(network.model, out, config)
        runs.write_json(out / "metrics.json", {**result, "per_class_accuracy": per_class,
                                               "convergence": convergence})
    return result


@contextlib.contextmanager
def _reported_if_unsaved(result: dict, out: Path):
    """Turns a failed write of a finished run's record (a full disk, a read-only folder)
    into ``UnsavedResult``, which carries ``result``: the run is over, and the CLI still
    prints its result instead of losing it with the file."""
    try:
        yield
    except OSError as error:
        raise UnsavedResult(f"{os_error_sentence(error, out)} (while saving the finished "
                            f"run's model and metrics.json)", result) from error


def resolve_length_and_stages(cfg: TransferConfig, source: SourceModel,
                              cache: RunCache) -> TransferConfig:
    """``cfg`` with ``unfrozen_stages`` turned into the number of blocks those stages hold,
    ``steps`` or ``epochs`` auto into a number of epochs (``run_length``), ``steps`` and
    ``unfrozen_stages`` then None, and an input size other than the source's own that
    ``input_plan.photo_input_size`` chooses set as ``data.image_size``: the resolved config
    is what config.json records and what resuming or extending the run compares."""
    if cfg.unfrozen_stages is not None:
        blocks = architectures.blocks_of_last_stages(source.model, cfg.unfrozen_stages)
        if cfg.unfrozen_blocks not in (0, blocks):
            raise UserError(f"--unfrozen-stages {cfg.unfrozen_stages} ({blocks} blocks) and "
                            f"--unfrozen-blocks {cfg.unfrozen_blocks} disagree; give one.")
        cfg = dataclasses.replace(cfg, unfrozen_blocks=blocks, unfrozen_stages=None)
    if cfg.steps is not None or cfg.epochs == EPOCHS_AUTO:
        length = run_length(cfg, cache)
        cfg = dataclasses.replace(cfg, epochs=length.epochs, steps=None,
                                  eval_every=auto_eval_every(cfg.eval_every, length))
    size = photo_input_size(cfg, _source_size(source), lambda: target_sizes(cfg, cache))
    if size is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_size=size))
    return cfg


def run_length(cfg: TransferConfig, cache: RunCache) -> Length:
    """How long ``cfg`` trains (``config.length.training_length``) over the training images
    it selects (this loads the target)."""
    target = cache.target(cfg)
    images = len(data.select_subset(target.train.labels, cfg.data.train_images, cfg.seed,
                                    method=cfg.data.subset))
    return training_length(cfg.epochs, cfg.steps, images, cfg.data.batch_size,
                           head_only=head_only(cfg))


def head_only(cfg: TransferConfig) -> bool:
    """Whether only the new head trains (no unfrozen blocks or stages)."""
    return cfg.unfrozen_blocks == 0 and not cfg.unfrozen_stages


def _source_size(source: SourceModel) -> int:
    return int(source.model.inputs[0].shape[1])


def requested_columns(requested: TransferConfig, images: int | None = None) -> dict:
    """Result columns for how the run's length and freezing were asked for, when they were
    given as ``steps`` / ``unfrozen_stages`` (the resolved config holds epochs and blocks),
    and with the run's ``images`` training images, ``epochs_rule`` for a length given as
    steps or by the auto rule (``config.length.Length.rule``)."""
    columns = {name: getattr(requested, name) for name in ("steps", "unfrozen_stages")
               if getattr(requested, name) is not None}
    if images is not None and (requested.steps is not None or requested.epochs == EPOCHS_AUTO):
        columns["epochs_rule"] = training_length(requested.epochs, requested.steps, images,
                                                 requested.data.batch_size,
                                                 head_only=head_only(requested)).rule
    return columns


def run_indices(cfg: TransferConfig, target):
    """Training images (the run's seed), test images and the per-epoch curve's test images
    (fixed seed 0, nested: the curve's images are a stratified part of the test images)."""
    train_idx = data.select_subset(target.train.labels, cfg.data.train_images, cfg.seed,
                                   method=cfg.data.subset)
    test_idx = data.select_subset(target.test.labels, cfg.data.test_images, 0, "--test-images")
    if cfg.data.test_images is None:
        test_idx = np.sort(test_idx)
    curve_idx = test_idx
    if cfg.curve_test_images is not None and cfg.curve_test_images < len(test_idx):
        curve_idx = data.select_subset(target.test.labels, cfg.curve_test_images, 0,
                                       "--curve-test-images")
    return train_idx, test_idx, curve_idx


def default_run_dir(cfg: TransferConfig, source: SourceModel) -> Path:
    """``runs/transfer/<target>__<source>__n<N>__b<blocks>__s<seed>``."""
    def slug(text):
        return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(text)).strip("_")[-60:]
    n = cfg.data.train_images or "all"
    return Path("runs/transfer") / (f"{slug(cfg.target)}__{slug(source.identity['source'])}"
                                    f"__n{n}__b{cfg.unfrozen_blocks}__s{cfg.seed}")


def feature_key(cfg: TransferConfig, source: SourceModel, target, network: Network,
                image_size: int) -> tuple:
    """The RunCache key of a network's trunk features (add the split): the same for every
    run and search trial that shares the source, target, boundary, size and precision."""
    # The load options (keys, splits, crop) change the images, so they are part of the key.
    return (source.identity["source_path"], target.name,
            tuple(sorted(cfg.data.load_options().items())),
            network.boundary_key, image_size, runtime.resolve_precision(cfg.precision),
            network.normalization)  # auto and what it resolves to share features


def cached_datasets(cfg, network: Network, source, target, indices, image_size,
                    cache: RunCache, tensors: bool = False, first_epoch: int = 0,
                    progress: bool = False):
    """(train, test, curve) datasets of trunk activations; with ``tensors``, test and curve
    are (features, labels) tensors instead where they are held in memory (``finetune.compiled_loop``
    evaluates those). The training batches start at epoch ``first_epoch`` (a resumed run).
    ``progress``: the feature extraction's progress on stderr."""
    train_idx, test_idx, curve_idx = indices
    key = feature_key(cfg, source, target, network, image_size)
    # The same epoch-seeded order as the uncached path: both give the same result.
    train_ds = cache.training_batches(key + ("train",), network.trunk, target.train, train_idx,
                                      image_size, cfg.data.batch_size, cfg.seed, cfg.epochs,
                                      first_epoch, progress, indexed=tensors)

    def evaluation_set(idx, within=None):
        return cache.evaluation_set(key + ("test",), network.trunk, target.test, idx, image_size,
                                    within, tensors, progress)
    test_ds = evaluation_set(test_idx)
    curve_ds = test_ds if curve_idx is test_idx else evaluation_set(curve_idx, test_idx)
    return train_ds, test_ds, curve_ds


def _image_datasets(cfg, target, indices, image_size, augment: bool, first_epoch: int = 0):
    """(train, test, curve) datasets of images, for a network trained end to end (training
    batches from epoch ``first_epoch`` on)."""
    train_idx, test_idx, curve_idx = indices
    train_ds = data.training_pipeline(
        target.train, train_idx, image_size, cfg.data.batch_size, cfg.seed, cfg.epochs,
        first_epoch=first_epoch, augmentation=augment, flip=target.flip, color_jitter=cfg.data.color_jitter,
        policy=cfg.data.augment_policy)
    test_ds = data.pipeline(target.test, test_idx, image_size, 256)
    curve_ds = test_ds if curve_idx is test_idx else data.pipeline(target.test, curve_idx,
                                                                   image_size, 256)
    return train_ds, test_ds, curve_ds
