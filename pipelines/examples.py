"""Small sweeps for trying the toolkit and for tests."""

from pipelines import register
from tftransfer.config import CellOverride, SweepConfig

# 2 sources x 1 target x 3 N x 2 seeds: the resumability demo of the sweeps issue. It uses the
# two committed natural sources (3 and 10 epochs), so report it with --baseline.
TINY = register(SweepConfig(
    name="tiny",
    description="Two sources on MNIST, N in {100, 200, 400}, last stage, 2 seeds, 6 epochs.",
    sources=("cifar10-resnet20-natural-3ep", "cifar10-resnet20-natural-10ep"),
    targets=("mnist",),
    train_images=(100, 200, 400),
    unfrozen_blocks=(3,),
    seeds=(0, 1),
    epochs=6,
    eval_every=2,
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
