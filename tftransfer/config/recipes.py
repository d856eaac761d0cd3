"""Named fine-tuning recipes: one flag (``--recipe NAME``) that sets a published protocol.

A recipe is a list of ``--set``-style assignments, so it means exactly what those fields
mean (``config.TransferConfig``) and is recorded in each run's ``config.json`` (the
resolved fields, and ``recipe`` = the name). ``config.apply_recipe`` applies one; fields a
user sets after the recipe (a flag typed on the command line, ``--set``, or a sweep's cell
values such as epochs) win over it.
This module is data only (``config`` imports it).
"""

from __future__ import annotations

# Utrera et al. (ICLR 2021), github utrerf/robust_transfer_learning. Each line names the line of
# the paper's code it follows.
UTRERA2021 = (
    # robustness.train.train_model calls model.train() every epoch: every BatchNorm layer, frozen
    # or not, normalises with batch statistics and updates its running ones (momentum 0.1);
    # tools/helpers.py re_init_and_freeze_blocks only sets requires_grad = False.
    "frozen_bn=train",
    # tools/helpers.py load_model: make_and_restore_model(arch, dataset=target) builds the
    # normaliser from the target's fixed mean/std of tools/custom_datasets.py name_to_dataset.
    "normalization=target",
    # tools/batch.py: 150 epochs for every N; tools/helpers.py make_train_args: step_lr =
    # epochs // 3 (x0.1 every 50 epochs), lr 0.1; the robustness CIFAR defaults fill in
    # momentum 0.9, weight decay 5e-4; batch 128 (-b default).
    "epochs=150", "optim.schedule=step", "optim.step_every=50", "optim.learning_rate=0.1",
    "optim.momentum=0.9", "optim.weight_decay=5e-4", "data.batch_size=128",
    # train.py: dataset.make_loaders(subset=N, subset_seed=seed): robustness' subset_type
    # 'rand', np.random.RandomState(seed).choice(range(len(train)), N, replace=False).
    "data.subset=random",
    # tools/transforms.py: TRAIN_TRANSFORMS_DEFAULT (random crop pad 4, flip, colour jitter
    # 0.25/0.25/0.25, rotation 2 degrees) for colour targets, BLACK_N_WHITE (none) for grayscale.
    "data.augment=true", "data.augment_policy=utrera2021",
    # tools/helpers.py re_init_and_freeze_blocks: nn.init.normal_(fc.weight), fc.bias = 0.
    "head_init=normal",
    # tools/batch.py: -li 5 (log every 5 epochs).
    "eval_every=5",
)

RECIPES: dict[str, tuple[str, ...]] = {"utrera2021": UTRERA2021}

