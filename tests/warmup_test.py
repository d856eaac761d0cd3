"""Two-phase fine-tuning (issue 36 point 8): the head alone for the first K epochs, then the
head and the unfrozen blocks at a lower rate."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest

from tftransfer import config, finetune
from tftransfer.errors import UserError
from tftransfer.finetune.networks import build_network
from tftransfer.finetune.warmup import HeadWarmup
from tftransfer.models import architectures
from tftransfer.sources.loading import load_source
from tests import helpers


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("warmup")
    helpers.make_image_folder(root / "images", classes=("a", "b", "c"), per_class=8,
                              split=True)
    helpers.make_source(root / "src", num_classes=5)
    return root


def _cfg(root, **fields):
    fields = {"unfrozen_blocks": 1, "epochs": 4, "head_warmup_epochs": 2, "eval_every": 0,
              "data": config.DataConfig(augment=False, batch_size=8), **fields}
    return config.TransferConfig(target=str(root / "images"), source=str(root / "src"),
                                 **fields)


class _Snapshots(keras.callbacks.Callback):
    """The weights of the block and of the head after every epoch (and before the first)."""

    def __init__(self, model, blocks):
        super().__init__()
        self.layers = [layer for layer in model.layers
                       if architectures.in_blocks(layer.name, blocks) and layer.weights]
        self.head = model.get_layer(architectures.head_name(model))
        self.trunk, self.heads = [self._trunk()], [self.head.get_weights()]

    def _trunk(self):  # every block weight, BatchNorm statistics included
        return [w for layer in self.layers for w in layer.get_weights()]

    def on_epoch_end(self, epoch, logs=None):
        self.trunk.append(self._trunk())
        self.heads.append(self.head.get_weights())


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_the_trunk_stays_put_for_the_first_k_epochs_and_trains_after(root):
    cfg = _cfg(root, feature_cache="off")
    network = build_network(cfg, load_source(cfg.source), 3, 32, steps_per_epoch=2)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (16, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 3, 16)
    snapshots = _Snapshots(network.model, network.blocks)
    warmup = HeadWarmup(network.model, cfg.unfrozen_blocks, cfg.frozen_bn, 2)
    network.trainer.fit(images, labels, batch_size=8, epochs=4, verbose=0,
                        callbacks=[warmup, snapshots])
    trunk = snapshots.trunk
    assert _same(trunk[0], trunk[1]) and _same(trunk[0], trunk[2])  # epochs 1 and 2
    assert not _same(trunk[2], trunk[3])                            # epoch 3 trains them
    assert not _same(snapshots.heads[0], snapshots.heads[1])        # the head from epoch 1
    # Left as the config describes it: the block trains again after fit().
    assert all(layer.trainable for layer in snapshots.layers)


def test_a_warmed_up_run_records_its_phases(root):
    result = finetune.fine_tune(_cfg(root, out=str(root / "run"), unfrozen_lr_scale=0.5),
                                verbose=False)
    assert (result["head_warmup_epochs"], result["unfrozen_lr_scale"]) == (2, 0.5)
    with open(root / "run" / "history.csv", newline="") as handle:
        rates = [float(row["learning_rate"]) for row in csv.DictReader(handle)]
    # The step schedule (x0.1 every epochs // 3 = 1 epoch), times 0.5 from epoch 3 on.
    assert rates == pytest.approx([0.1, 0.01, 0.0005, 0.00005])
    resolved = json.loads((root / "run" / "config.json").read_text())["resolved_config"]
    assert resolved["head_warmup_epochs"] == 2


def test_the_flags_reach_the_config_and_impossible_warmups_are_refused(root):
    cfg = helpers.config_from_command(
        "python main.py transfer --target x --unfrozen-blocks 3 --head-warmup-epochs 5 "
        "--unfrozen-lr-scale 0.01")
    assert (cfg.head_warmup_epochs, cfg.unfrozen_lr_scale) == (5, 0.01)
    with pytest.raises(UserError, match="unfreeze some"):
        config.TransferConfig(target="x", head_warmup_epochs=2)
    with pytest.raises(UserError, match="fewer than the epochs"):
        config.TransferConfig(target="x", unfrozen_blocks=1, head_warmup_epochs=10, epochs=10)
    with pytest.raises(UserError, match="give head_warmup_epochs too"):
        config.TransferConfig(target="x", unfrozen_lr_scale=0.5)
    with pytest.raises(UserError, match="fewer than the epochs"):  # checked once resolved
        finetune.fine_tune(_cfg(root, steps=3, out=str(root / "steps")), verbose=False)
