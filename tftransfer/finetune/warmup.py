"""Two-phase fine-tuning, as keras-io's transfer-learning guide does it: the new head alone
for the first ``head_warmup_epochs`` epochs, the unfrozen blocks frozen (their BatchNorm in
inference mode), so that a random head's large early gradients do not wreck the pretrained
blocks; then the head and the blocks together at a lower rate (``training.optim.ScaledAfter``,
``unfrozen_lr_scale``).

One ``fit()`` runs both phases: ``HeadWarmup`` switches the trainable layers at an epoch's
start and makes the trainer's train function again, which ``fit()`` calls for every step.
"""

from __future__ import annotations

import keras

from tftransfer.config import TransferConfig
from tftransfer.finetune.networks import Network, freeze


class HeadWarmup(keras.callbacks.Callback):
    """Freezes ``model``'s unfrozen blocks for the epochs before ``warmup_epochs`` and
    unfreezes them from that epoch on (and when training ends, so the network is left as
    its config describes it). Works for a resumed run too: the phase follows the epoch."""

    def __init__(self, model: keras.Model, unfrozen_blocks: int, frozen_bn: str,
                 warmup_epochs: int):
        super().__init__()
        self.network_model, self.unfrozen_blocks = model, unfrozen_blocks
        self.frozen_bn, self.warmup_epochs = frozen_bn, warmup_epochs
        self._head_only: bool | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self._set_phase(epoch < self.warmup_epochs)

    def on_train_end(self, logs=None):
        self._set_phase(False)

    def _set_phase(self, head_only: bool) -> None:
        if head_only == self._head_only:
            return
        freeze(self.network_model, 0 if head_only else self.unfrozen_blocks, self.frozen_bn)
        # The traced train function holds the trainable variables it was traced with.
        self.model.make_train_function(force=True)
        self._head_only = head_only


def warmup_callbacks(cfg: TransferConfig, network: Network) -> list[keras.callbacks.Callback]:
    """``[HeadWarmup]`` for a run with ``head_warmup_epochs``, else ``[]``."""
    if not cfg.head_warmup_epochs:
        return []
    return [HeadWarmup(network.model, cfg.unfrozen_blocks, cfg.frozen_bn,
                       cfg.head_warmup_epochs)]
