"""The paper's grid at CPU scale (issue 8): CIFAR-10 resnet20 sources -> MNIST, Fashion-MNIST.

Targets mnist and fashion_mnist; N in {100, ..., 3200}; head only (0) and the last
stage (3 blocks of resnet20, like layer4 of ResNet-50); 5 seeds for N <= 800 and 3
above; the per-epoch curve (every 5 epochs) on a stratified 2,000 of the 10,000 test
images, the final accuracy on all of them.

Epochs (lr x0.1 every epochs/3): the paper's 30 with the last stage, where the training
accuracy reaches 100% by epoch 10 at every N. The head alone, drawn from N(0, 1), is far from
converged after 30 epochs: at N = 100 that is 30 SGD steps (MNIST, natural source: 18% test,
19% train). So head-only cells get about 2,000-7,500 steps, where the training loss and the
test curve have flattened (results/replication/README.md, "Why the head only gets more epochs").
"""

from pipelines import register
from tftransfer.config import CellOverride, SweepConfig

SOURCES = ("cifar10-resnet20-natural", "cifar10-resnet20-l2-eps0.25",
           "cifar10-resnet20-l2-eps0.5", "cifar10-resnet20-l2-eps1.0")

# N -> epochs for the head only: >= 2,000 SGD steps of batch 128 (one step per epoch at N <= 128).
HEAD_ONLY_EPOCHS = tuple(
    CellOverride(train_images=(n,), unfrozen_blocks=(0,), epochs=epochs)
    for n, epochs in {100: 2000, 200: 1000, 400: 600, 800: 400, 1600: 300, 3200: 300}.items())

REPLICATION = register(SweepConfig(
    name="replication",
    description="Natural vs L2-robust CIFAR-10 resnet20 sources on MNIST and Fashion-MNIST.",
    sources=SOURCES,
    targets=("mnist", "fashion_mnist"),
    train_images=(100, 200, 400, 800, 1600, 3200),
    unfrozen_blocks=(0, 3),
    seeds=(0, 1, 2, 3, 4),
    epochs=30,
    eval_every=5,
    curve_test_images=2000,
    overrides=(CellOverride(train_images=(1600, 3200), seeds=(0, 1, 2)),
               *HEAD_ONLY_EPOCHS),
))

# The replication's recipe on the committed 10-epoch source pair, a smaller grid: an early look
# at the comparison while the 30-epoch sources train (results/pilot-10ep/).
PILOT_10EP = register(SweepConfig(
    name="pilot-10ep",
    description="The replication recipe with the 10-epoch natural / L2 eps 0.5 sources; "
                "N in {100, 400, 1600}, 3 seeds.",
    sources=("cifar10-resnet20-natural-10ep", "cifar10-resnet20-l2-eps0.5-10ep"),
    targets=("mnist", "fashion_mnist"),
    train_images=(100, 400, 1600),
    unfrozen_blocks=(0, 3),
    seeds=(0, 1, 2),
    epochs=30,
    eval_every=5,
    curve_test_images=2000,
))
