"""The fine-tuning search space: the knobs of ``transfer.fine_tune``'s recipe that a
keras-tuner search varies, and the TransferConfig of a trial's values."""

from __future__ import annotations

import dataclasses

import keras
import keras_tuner as kt

from tftransfer.models import architectures
from tftransfer.config import TransferConfig

# The search space. Defaults are the paper's recipe, so trial 0 of a fixed-order
# search and `populate` builds start from the known-good point.
LEARNING_RATE_RANGE = (1e-3, 0.5)             # sampled on a log scale
WEIGHT_DECAYS = (0.0, 5e-5, 5e-4, 5e-3)
BATCH_SIZES = (32, 64, 128)
HEAD_INITS = ("normal", "glorot")
LABEL_SMOOTHINGS = (0.0, 0.1, 0.2)


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
