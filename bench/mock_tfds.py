"""Runs one tftransfer command with TFDS replaced by ``tfds.testing.mock_data`` (offline).

Every TFDS data set then yields random examples shaped by its real metadata (Flowers-102's images
have random heights and widths, its labels 102 classes), ``--num-examples`` per split, with no
download and no prepared files: the photo path can be timed at its real image sizes without the
data. The accuracies of such runs are meaningless (random images and labels).

    python bench/mock_tfds.py --num-examples 6149 -- transfer --target oxford_flowers102 ...
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-examples", type=int, default=100,
                        help="examples in every split of every data set (default: 100)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the tftransfer command line, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the tftransfer command after --")

    from tftransfer import cli, tflog

    tflog.quiet_tensorflow(verbose=cli.VERBOSE_FLAG in command)  # before TensorFlow is imported
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    if cli.VERBOSE_FLAG not in command:  # the mock's own deprecation warnings, once per example
        absl_logging.set_verbosity(absl_logging.ERROR)

    # The AUTO policy uses prepared files when a data set has them and random examples shaped
    # by the metadata TFDS ships otherwise; the data sets named here have no prepared files.
    with tfds.testing.mock_data(num_examples=args.num_examples):
        sys.exit(cli.main(command))


if __name__ == "__main__":
    main()
