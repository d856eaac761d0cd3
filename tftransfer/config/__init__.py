"""Frozen, validated experiment configs and typed ``--set section.field=value`` overrides.

Configs are plain frozen dataclasses: they serialize to the ``config.json`` of every
run (``to_dict``) and validate themselves on construction, so an impossible config
stops with one sentence before any TensorFlow work starts.

This package's face is the one place callers import them from; each job lives in its own
module: ``checks`` (validation), ``sections`` (data, attack, optimizer, model), ``run``
(pretrain, transfer), ``length`` (a run's training length: epochs, steps or auto), ``sweep``
(grids), ``overrides`` (``to_dict``/``from_dict``, ``--set``, recipes, sizes), ``recipes``
(the named presets), ``config.attack_methods`` (the registry of adversarial training
methods) and ``interpret`` (the ``saliency`` and ``influence`` commands).
"""

from __future__ import annotations

# Re-exported: callers write ``from tftransfer.config import TransferConfig`` and so on.
from tftransfer.config.checks import SEED_LIMIT, check_seed  # noqa: F401
from tftransfer.config.overrides import (  # noqa: F401
    apply_overrides, apply_recipe, from_dict, parse_size, to_dict)
from tftransfer.config.run import (  # noqa: F401
    DEFAULT_FEATURE_CACHE_MEMORY, DISTRIBUTIONS, FEATURE_CACHE_MODES, FROZEN_BN_MODES,
    HEAD_INITS, NORMALIZATIONS, PRECISIONS, TRAINING_LOOPS, PretrainConfig, TransferConfig)
from tftransfer.config.sections import (  # noqa: F401
    ARCHITECTURES, ATTACKS, AUGMENT_POLICIES, AUGMENT_PRESETS, PREPROCESSING_OPTIONS,
    RESIZE_MODES, SCHEDULES, SUBSET_METHODS, AttackConfig, DataConfig, ModelConfig, OptimConfig,
    recorded_load_options)
from tftransfer.config.interpret import (  # noqa: F401
    INFLUENCE_METHODS, INFLUENCE_RANKINGS, SALIENCY_RENDERINGS, InfluenceConfig, SaliencyConfig)
from tftransfer.config.sweep import SWEEP_ORDERS, CellOverride, SweepConfig  # noqa: F401

# The tune command's choices (here so that the CLI lists them without TensorFlow).
TUNERS = ("hyperband", "bayesian", "random")
TUNE_DEFAULT_MAX_TRIALS = 10                # random and bayesian; Hyperband sizes itself
