"""K seeds of a last-stage cell trained together (``finetune.fine_tune_seeds``) against the same
K seeds run one after another (``finetune.fine_tune``), in one process (issue 37, item 2).

The cell is the ``replication`` grid's last stage on MNIST: the natural
``cifar10-resnet20-natural`` source (a real resnet20), 32 px, batch 128, layer3 and the head
trained on cached features, the curve every 5 epochs on ``--curve-images`` test images, the
final accuracy on ``--test-images``. One RunCache serves both sides, as in a sweep; every
seed's features are computed first (untimed), and a first round of each side builds and
traces the networks (a sweep pays that
once per recipe, and the batched side builds and traces K networks: both first rounds are
printed too), so each timed round is what a sweep pays per cell afterwards: K calls of
``fine_tune`` (each a run of its own, recorded), or one call of ``fine_tune_seeds`` (K runs,
recorded). The printed ratio is the best single-run round over the best batched round;
the results of both sides are compared too (they should agree to float tolerance).

The ratio depends on the machine's load: both sides are CPU-bound, and the batched side gains
where the K seeds' updates run side by side on idle cores, which a busy machine does not
have. The machine note printed first says what else was running; measure on a quiet machine.

    python bench/multi_seed.py [--data-dir ../shared/tfds] [--n 100] [--epochs 90] [--k 5]
        [--test-images 10000] [--curve-images 2000] [--repeats 2] [--quick]
        [--source NAME | --arch ARCH] [--target mnist] [--mock-examples M]
        [--image-size PX] [--unfrozen-stages S]

``--quick``: N = 100, 10 epochs, K = 3, 2,000 test images, 1,000 for the curve, one round.

Another cell (``bench/gpu_grid.sh``: a ResNet-50's layer4 at 224 px): ``--arch resnet50``
builds a randomly initialised source of that architecture (saved in the temporary folder;
``--source`` names a saved or registered one instead), ``--target`` the TFDS data set,
``--mock-examples M`` replaces TFDS by ``tfds.testing.mock_data`` (random images shaped by the
data set's metadata, M per split: no data, no download; timing only; a data set of
varying image sizes such as oxford_flowers102: TensorFlow aborts reading a fixed-shape one,
such as cifar10, from the mock), ``--image-size`` the input size (default: the source's) and
``--unfrozen-stages S`` the last S stages (default: resnet20's layer3, 3 blocks).

    python bench/multi_seed.py --arch resnet50 --image-size 224 --unfrozen-stages 1 \
        --target oxford_flowers102 --mock-examples 1100 --n 1020 --test-images 1000 \
        --curve-images 500 --epochs 30
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time

from common import machine_note

from tftransfer import config, finetune

SOURCE = "cifar10-resnet20-natural"
EVAL_EVERY = 5
LAST_STAGE_BLOCKS = 3  # resnet20's layer3


def cell_config(args, root: str, seed: int, name: str) -> config.TransferConfig:
    """The last-stage cell's run of ``seed`` into ``root/name``."""
    stages = args.unfrozen_stages
    return config.TransferConfig(
        target=args.target, source=args.source, out=f"{root}/{name}s{seed}",
        epochs=args.epochs, unfrozen_blocks=LAST_STAGE_BLOCKS if stages is None else 0,
        unfrozen_stages=stages, eval_every=EVAL_EVERY, curve_test_images=args.curve_images,
        seed=seed,
        data=config.DataConfig(dataset=args.target, data_dir=args.data_dir,
                               download=bool(args.mock_examples), image_size=args.image_size,
                               train_images=args.n, test_images=args.test_images,
                               augment=False))


def random_source(arch: str, image_size: int | None, root: str) -> str:
    """A randomly initialised ``arch`` (1,000 classes) saved as a source in ``root``."""
    import keras

    from tftransfer.models import architectures
    from tftransfer.sources import saving

    keras.utils.set_random_seed(0)
    size = image_size or 224
    model = architectures.build(arch, 1000, size)
    out = f"{root}/source-{arch}"
    saving.save_model_dir(model, out, {"kind": "random", "arch": arch, "dataset": "none",
                                       "num_classes": 1000, "image_size": size})
    return out


def mocked_tfds(examples: int):
    """TFDS replaced by random examples shaped by each data set's metadata (as
    bench/mock_tfds.py does), ``examples`` per split; nothing replaced when 0."""
    if not examples:
        return contextlib.nullcontext()
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    return tfds.testing.mock_data(num_examples=examples)


def singles(args, root: str, cache, name: str) -> tuple[float, list[dict]]:
    """(seconds, rows) of the K seeds run one after another."""
    began = time.perf_counter()
    rows = [finetune.fine_tune(cell_config(args, root, seed, name), cache=cache,
                               save_model=False, verbose=False) for seed in range(args.k)]
    return time.perf_counter() - began, rows


def together(args, root: str, cache, networks, name: str) -> tuple[float, list[dict]]:
    """(seconds, rows) of the K seeds trained in one call."""
    began = time.perf_counter()
    rows = finetune.fine_tune_seeds([cell_config(args, root, seed, name)
                                     for seed in range(args.k)], cache=cache,
                                    save_model=False, verbose=False, networks=networks)
    return time.perf_counter() - began, rows


def cell_name(args) -> str:
    """What the cell trains, of what, on what (the default cell's words unchanged)."""
    if args.arch is None and args.unfrozen_stages is None and args.image_size is None \
            and args.target == "mnist" and not args.mock_examples:
        return f"Last stage (layer3 + head) of {args.source} on MNIST"
    trained = (f"Last {args.unfrozen_stages} stage(s)" if args.unfrozen_stages is not None
               else f"Last {LAST_STAGE_BLOCKS} blocks")
    source = f"{args.arch} (random weights)" if args.arch else args.source
    size = f" at {args.image_size} px" if args.image_size else ""
    data = (f"{args.target} (mocked: random images, {args.mock_examples} a split)"
            if args.mock_examples else args.target)
    return f"{trained} + head of {source}{size} on {data}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/tfds")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=90)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--test-images", type=int, default=10000)
    parser.add_argument("--curve-images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--source", default=SOURCE, help=f"default: {SOURCE}")
    parser.add_argument("--arch", help="a randomly initialised source of this architecture "
                                       "(e.g. resnet50) instead of --source")
    parser.add_argument("--target", default="mnist", help="TFDS data set (default: mnist)")
    parser.add_argument("--mock-examples", type=int, default=0,
                        help="random TFDS examples per split (tfds.testing.mock_data; "
                             "default 0: the prepared data set)")
    parser.add_argument("--image-size", type=int, help="input pixels (default: the source's)")
    parser.add_argument("--unfrozen-stages", type=int,
                        help=f"the last S stages (default: {LAST_STAGE_BLOCKS} blocks)")
    args = parser.parse_args()
    if args.quick:
        args.n, args.epochs, args.k, args.test_images, args.curve_images, args.repeats = (
            100, 10, 3, 2000, 1000, 1)
    print(machine_note())
    cache, networks = finetune.RunCache(), finetune.SeedNetworks()
    with tempfile.TemporaryDirectory() as root, mocked_tfds(args.mock_examples):
        if args.arch:
            args.source = random_source(args.arch, args.image_size, root)
        # Every seed's features, through a network of another recipe (1 epoch), untimed.
        singles(argparse.Namespace(**{**vars(args), "epochs": 1}), root, cache, "features")
        first_single, _ = singles(args, root, cache, "cold")  # the network built and traced
        first_batched, _ = together(args, root, cache, networks, "cold")  # K networks
        single_times, batched_times = [], []
        for _ in range(args.repeats):  # alternated, so that a load change hits both
            seconds, single_rows = singles(args, root, cache, "single")
            single_times.append(seconds)
            seconds, batched_rows = together(args, root, cache, networks, "batched")
            batched_times.append(seconds)
    gap = max(abs(a["test_accuracy"] - b["test_accuracy"])
              for a, b in zip(single_rows, batched_rows))
    single, batched = min(single_times), min(batched_times)
    print(f"\n{cell_name(args)}, N = {args.n}, {args.epochs} "
          f"epochs, batch 128, curve every {EVAL_EVERY} epochs on {args.curve_images} test "
          f"images, final on {args.test_images}; K = {args.k} seeds, best of {args.repeats}:\n")
    print(f"  {args.k} single runs one after another: {single:8.2f} s "
          f"({single / args.k:.2f} s a run)")
    print(f"  {args.k} seeds in one call:            {batched:8.2f} s "
          f"({batched / args.k:.2f} s a run)")
    print(f"  ratio (single / together):       {single / batched:8.2f}x")
    print(f"  largest test-accuracy difference between the two: {gap:.2g}")
    print(f"\nFirst round of each (a sweep's first cell of a recipe: the single side builds and "
          f"traces one network, the batched side {args.k}): {first_single:.2f} s one after "
          f"another, {first_batched:.2f} s together ({first_single / first_batched:.2f}x)")


if __name__ == "__main__":
    main()
