"""``datasets``: list the TFDS datasets prepared in a data directory."""

from __future__ import annotations

import sys


def register(subparsers):
    parser = subparsers.add_parser(
        "datasets", help="list the datasets available offline",
        description="List the TFDS datasets prepared in the data directory (name, version, "
                    "split sizes): the targets and pretraining sets that work without the "
                    "network. Any other TFDS name works online (TFDS downloads it once), and "
                    "any folder of class sub-folders works as a target.")
    parser.add_argument("--data-dir", default=None,
                        help="TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    parser.set_defaults(run=run)
    return parser


def run(args) -> dict:
    from tftransfer import data

    where = args.data_dir or data.default_data_dir()
    found = data.prepared_datasets(args.data_dir)
    print(f"Datasets prepared in {where}:" if found else f"No prepared datasets in {where}.",
          file=sys.stderr)
    for entry in found:
        splits = ", ".join(f"{k} {v}" for k, v in entry["splits"].items())
        print(f"  {entry['name']:<20} {entry['version']:<8} {splits}", file=sys.stderr)
    return {"data_dir": where, "datasets": found}
