"""Several seeds of one fine-tuning cell trained together, each recorded as its own run.

``fine_tune_seeds(cfgs)`` gives each configuration (one cell, the seeds differing) what
``fine_tune`` gives it alone, to float tolerance: its run directory, ``history.csv``,
``metrics.json`` and result row; but the seeds train in one compiled loop
(``multi_seed_loop``), on the trunk features they share. That needs the feature cache, the
compiled loop and no randomness inside training: ``batch_refusal`` says why a cell's seeds
cannot train together, and those run one by one.

Each seed's randomness comes from where its single run takes it: its training images
(``run_indices``, drawn with the seed), its head (``Network.reset``, drawn with the seed)
and its batch order (``data.epoch_order``, from the global seed ``runtime.set_seed`` sets,
read while the seed's batches are built, before training). Training itself draws nothing
(dropout and noise layers are refused), so the seeds can share one traced call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections import OrderedDict
from pathlib import Path

import keras

from tftransfer.config import TransferConfig
from tftransfer.errors import UserError
from tftransfer.finetune.loop import check_finite_result
from tftransfer.finetune.multi_seed_loop import fit_seeds
from tftransfer.finetune.networks import Network, build_network
from tftransfer.finetune.run import (TrainedRun, augments, cached_datasets, default_run_dir,
                                     normalization_statistics, record_run,
                                     resolve_length_and_stages, run_indices)
from tftransfer.finetune.run_cache import RunCache, network_key
from tftransfer.finetune.rundir import check_run_dir, clear_run_record, locked
from tftransfer.models import architectures
from tftransfer.training import runtime

# Layers that draw random numbers in training mode: seeds trained together would share one
# random stream instead of each drawing its own.
_RANDOM_LAYERS = (keras.layers.Dropout, keras.layers.GaussianNoise,
                  keras.layers.GaussianDropout, keras.layers.AlphaDropout)


class SeedNetworks:
    """The networks of groups of seeds, one per seed (each seed trains its own), built once
    per recipe (``run_cache.network_key``) and reset before each group, with their traced
    functions; the least recently used recipe's are dropped beyond ``max_recipes``."""

    def __init__(self, max_recipes: int = 2):
        self.max_recipes = max_recipes
        self._groups: OrderedDict[tuple, tuple[list, dict]] = OrderedDict()

    def get(self, key: tuple, count: int, build) -> tuple[list[Network], dict]:
        """``count`` networks of recipe ``key`` (``build()`` makes each one missing) and the
        store of their traced functions."""
        networks, functions = self._groups.pop(key, ([], {}))
        while len(networks) < count:
            networks.append(build())
        self._groups[key] = (networks, functions)
        while len(self._groups) > self.max_recipes:
            self._groups.popitem(last=False)
        return networks[:count], functions


def batch_refusal(cfg: TransferConfig, cache: RunCache) -> str | None:
    """Why the seeds of ``cfg``'s cell cannot train together, or None when they can: they
    need cached trunk features, the compiled loop and nothing random inside training.

    Args:
      cfg: the configuration of one of the seeds.
      cache: the RunCache the runs would use (its source and target are loaded).

    Returns:
      A phrase (e.g. "its training images are augmented"), or None.
    """
    fixed = _config_refusal(cfg)
    if fixed or cfg.source is None:
        return fixed or "no source is named (a default is chosen for each run)"
    source = cache.source(cfg.source)
    if augments(cfg, cache.target(cfg)):
        return "its training images are augmented, so the trunk's features are not cached"
    blocks = resolve_length_and_stages(cfg, source, cache).unfrozen_blocks
    if blocks == -1 or blocks >= len(architectures.block_names(source.model)):
        return "every block trains, so no frozen trunk's features are cached"
    if any(isinstance(layer, _RANDOM_LAYERS) for layer in _all_layers(source.model)):
        return "the network has dropout or noise layers, which draw random numbers in training"
    return None


def _all_layers(model):
    """The layers of ``model``, those of nested models included."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _config_refusal(cfg: TransferConfig) -> str | None:
    """``batch_refusal``'s reasons that the configuration alone gives."""
    if cfg.feature_cache == "off":
        return "the feature cache is off"
    if cfg.frozen_bn != "inference":
        return (f"frozen BatchNorm is in {cfg.frozen_bn} mode, so the trunk's features "
                f"change and are not cached")
    if cfg.training_loop == "fit" or cfg.head_warmup_epochs:
        return "it trains in fit() (training_loop fit or a head warm-up)"
    if cfg.normalization == "subset":
        return "each seed's training images set its own input normalization"
    if cfg.unfrozen_blocks == -1:
        return "every block trains, so no frozen trunk's features are cached"
    return None


def fine_tune_seeds(cfgs: list[TransferConfig], cache: RunCache | None = None,
                    save_model: bool = True, verbose: bool = True,
                    networks: SeedNetworks | None = None, raise_errors: bool = True) -> list:
    """Fine-tunes the seeds of one cell together and records each as ``fine_tune`` does.

    Args:
      cfgs: the seeds' configurations, the same but for ``seed`` and ``out`` (each seed
        its own, or None for ``default_run_dir``'s).
      cache: a RunCache shared across runs (a new one when None).
      save_model: write each fine-tuned model into its run directory.
      verbose: one line on stderr before training, and feature-extraction progress.
      networks: the caller's ``SeedNetworks``, kept across groups of seeds so that their
        networks are built and traced once (None: built for this call).
      raise_errors: raise the first diverged seed's ``UserError`` once the others are
        recorded; False: return it in that seed's place.

    Returns:
      Per configuration, in order, its result row (``fine_tune``'s), or with
      ``raise_errors=False`` the ``UserError`` its single run raises.

    Raises:
      ValueError: configurations that are not seeds of one cell, or a cell whose seeds
        cannot train together (``batch_refusal``'s reason).
    """
    cfgs = [runtime.with_resolved_precision(cfg) for cfg in cfgs]
    _check_one_cell(cfgs)
    with runtime.precision_policy(cfgs[0].precision), contextlib.ExitStack() as held:
        cache = cache or held.enter_context(RunCache())
        refusal = batch_refusal(cfgs[0], cache)
        if refusal:
            raise ValueError(f"The seeds of this cell cannot train together: {refusal}.")
        outcomes = _fine_tune_seeds(cfgs, cache, save_model, verbose,
                                    networks or SeedNetworks(), held)
    errors = [outcome for outcome in outcomes if isinstance(outcome, UserError)]
    if raise_errors and errors:
        raise errors[0]
    return outcomes


def _check_one_cell(cfgs: list[TransferConfig]) -> None:
    """Refuses configurations that differ in more than their seed and run directory, or
    that share a seed."""
    if not cfgs:
        raise ValueError("fine_tune_seeds needs at least one configuration.")
    cell = dataclasses.replace(cfgs[0], seed=0, out=None)
    if any(dataclasses.replace(cfg, seed=0, out=None) != cell for cfg in cfgs):
        raise ValueError("fine_tune_seeds trains seeds of one cell: the configurations may "
                         "differ only in seed and out.")
    if len({cfg.seed for cfg in cfgs}) < len(cfgs):
        raise ValueError(f"fine_tune_seeds got a seed twice: {[cfg.seed for cfg in cfgs]}.")


def _fine_tune_seeds(cfgs: list, cache: RunCache, save_model: bool, verbose: bool,
                     store: SeedNetworks, held: contextlib.ExitStack) -> list:
    """``fine_tune_seeds`` under its precision policy; ``held`` holds each run directory's
    lock from its check on, until the seeds are recorded."""
    source = cache.source(cfgs[0].source)
    requested, cfgs = cfgs, [resolve_length_and_stages(cfg, source, cache) for cfg in cfgs]
    outs = [Path(cfg.out) if cfg.out else default_run_dir(cfg, source) for cfg in cfgs]
    for out, cfg in zip(outs, cfgs):
        held.enter_context(locked(out))
        check_run_dir(out, cfg, "replace")
    first, target = cfgs[0], cache.target(cfgs[0])
    image_size = first.data.image_size or int(source.model.inputs[0].shape[1])
    indices = [run_indices(cfg, target) for cfg in cfgs]
    steps = math.ceil(len(indices[0][0]) / first.data.batch_size)
    networks, functions = _networks(first, source, target, indices[0][0], image_size, steps,
                                    len(cfgs), store)
    for network, cfg in zip(networks, cfgs):
        network.reset(cfg.head_init, cfg.seed, cfg.head_std)
    if verbose:
        print(f"transfer: {source.identity['source']} -> {target.name} ({len(indices[0][0])} "
              f"images, {image_size}px), unfrozen blocks {first.unfrozen_blocks} "
              f"{networks[0].blocks}, {first.epochs} epochs, seeds "
              f"{[cfg.seed for cfg in cfgs]} in one loop -> {', '.join(map(str, outs))}",
              file=sys.stderr)
    for out in outs:
        clear_run_record(out)
    start = time.time()
    datasets = []
    for cfg, network, seed_indices in zip(cfgs, networks, indices):
        runtime.set_seed(cfg.seed)  # the seed's batch order derives from the global seed
        datasets.append(cached_datasets(cfg, network, source, target, seed_indices,
                                        image_size, cache, tensors=True, progress=verbose))
    _, test_set, curve_set = datasets[0]  # the same test images for every seed
    results = fit_seeds([network.trainer for network in networks], [d[0] for d in datasets],
                        first.epochs, steps, first.eval_every, curve_set, test_set,
                        [out / "history.csv" for out in outs], functions)
    seconds = (time.time() - start) / len(cfgs)  # each seed's share of the time
    runs = [TrainedRun(cfg, asked, source, target, seed_indices, image_size, steps, network,
                       test_set, out) for cfg, asked, seed_indices, network, out
            in zip(cfgs, requested, indices, networks, outs)]
    return [_record(run, result, seconds, save_model) for run, result in zip(runs, results)]


def _networks(cfg: TransferConfig, source, target, train_idx, image_size: int, steps: int,
              count: int, store: SeedNetworks) -> tuple[list[Network], dict]:
    """``count`` networks for the seeds of ``cfg``'s cell, and their traced functions."""
    augment = augments(cfg, target)
    # Not "subset" (refused): the statistics are the same for every seed.
    normalization = normalization_statistics(cfg, target, train_idx, image_size)
    key = network_key(cfg, source, target.num_classes, image_size, steps, augment,
                      normalization)
    return store.get(key, count, lambda: build_network(
        cfg, source, target.num_classes, image_size, steps, augment, normalization))


def _record(run: TrainedRun, result, seconds: float, save_model: bool):
    """One seed's result row, its run recorded; or the ``UserError`` of a diverged seed."""
    if isinstance(result, UserError):
        return result
    try:
        check_finite_result(run.cfg, run.network.trained, result)
    except UserError as error:
        return error
    return record_run(run, result, seconds, save_model)
