"""The paper's own fine-tuning protocol (issue 25): the ``utrera2021`` recipe on the replication's
sources and targets, and an ablation that moves from our protocol to the paper's one step at a time.

``replication-paper``: the natural and the L2 eps 0.5 CIFAR-10 resnet20 sources, MNIST and
Fashion-MNIST, N in {100, 400, 1600}, the head only (0) and the last stage (3 blocks: resnet20's
layer3, the analogue of the paper's "-ub 3" = layer4 of ResNet-50), 5 seeds for N <= 400 and 3
at 1600, with the ``utrera2021`` preset (tftransfer/recipes.py: frozen BatchNorm in train mode,
the target's normalisation constants, 150 epochs with lr x0.1 every 50, random subsets, no
augmentation for these grayscale targets). Smallest N first, so that an interrupted run has both
sources' small-N cells. The per-epoch curve every 10 epochs on a stratified 1,000 of the 10,000
test images (the final accuracy on all of them): with batch statistics in the frozen layers the
feature cache cannot be used, and a denser curve would cost as much as the training at N = 100.

``replication-paper-ablation-{bn,norm,epochs,subset}``: today's ``replication`` protocol for the
last stage at N = 100 and 400 (90 and 30 epochs, lr x0.1 every epochs // 3, stratified subsets,
frozen BatchNorm in inference mode, the source's normalisation), with one difference changed to
the paper's. Its two ends are already measured: ``replication`` (results/replication, seeds 0-4)
and ``replication-paper`` (the same cells with all differences).
"""

from pipelines import register
from pipelines.replication import LAST_STAGE_EPOCHS
from tftransfer.config import CellOverride, SweepConfig

SOURCES = ("cifar10-resnet20-natural", "cifar10-resnet20-l2-eps0.5")
CURVE = dict(eval_every=10, curve_test_images=1000)

REPLICATION_PAPER = register(SweepConfig(
    name="replication-paper",
    description="The paper's protocol (--recipe utrera2021): natural vs L2 eps 0.5 resnet20 "
                "sources on MNIST and Fashion-MNIST, N in {100, 400, 1600}, 150 epochs.",
    sources=SOURCES,
    targets=("mnist", "fashion_mnist"),
    train_images=(100, 400, 1600),
    unfrozen_blocks=(0, 3),
    seeds=(0, 1, 2, 3, 4),
    epochs=150,
    **CURVE,
    overrides=(CellOverride(train_images=(1600,), seeds=(0, 1, 2)),),
    preset="utrera2021",
    order="train_images",
))

# One difference at a time, on top of the replication's last-stage protocol.
ABLATION_CHANGES = {
    "bn": ("frozen_bn=train",),
    "norm": ("normalization=target",),
    "epochs": ("optim.step_every=50",),     # with epochs 150 below
    "subset": ("data.subset=random",),
}


def _ablation(change: str) -> SweepConfig:
    epochs_changed = change == "epochs"
    return SweepConfig(
        name=f"replication-paper-ablation-{change}",
        description=f"The replication's last-stage protocol at N = 100 and 400 with one "
                    f"difference changed to the paper's: {', '.join(ABLATION_CHANGES[change])}"
                    + (", 150 epochs" if epochs_changed else "") + ".",
        sources=SOURCES,
        targets=("mnist", "fashion_mnist"),
        train_images=(100, 400),
        unfrozen_blocks=(3,),
        seeds=(0, 1, 2, 3, 4),
        epochs=150 if epochs_changed else 30,
        eval_every=5 if not epochs_changed else 10,
        curve_test_images=2000 if not epochs_changed else 1000,
        overrides=() if epochs_changed else tuple(
            o for o in LAST_STAGE_EPOCHS if 100 in o.train_images),
        recipe=ABLATION_CHANGES[change],
        order="train_images",
    )


ABLATIONS = {change: register(_ablation(change)) for change in ABLATION_CHANGES}
