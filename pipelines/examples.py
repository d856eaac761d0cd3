"""Small sweeps for trying the toolkit and for tests."""

from pipelines import register
from tftransfer.config import CellOverride, SweepConfig

# 2 sources x 1 target x 3 N x 2 seeds: the resumability demo of the sweeps issue.
TINY = register(SweepConfig(
    name="tiny",
    description="Two sources on MNIST, N in {100, 200, 400}, head only, 2 seeds, 4 epochs.",
    sources=("cifar10-resnet20-natural", "cifar10-resnet20-l2-eps0.5"),
    targets=("mnist",),
    train_images=(100, 200, 400),
    unfrozen_blocks=(0,),
    seeds=(0, 1),
    epochs=4,
    test_images=2000,
))

# The throughput benchmark's shape: the replication recipe at N = 400.
THROUGHPUT = register(SweepConfig(
    name="throughput",
    description="Runs-per-hour benchmark cells: N = 400, head only and last stage.",
    sources=("cifar10-resnet20-natural",),
    targets=("mnist",),
    train_images=(400,),
    unfrozen_blocks=(0, 3),
    seeds=(0, 1, 2),
    epochs=30,
    eval_every=5,
    overrides=(CellOverride(train_images=(400,), seeds=(0, 1, 2)),),
))
