"""The ``tftransfer`` / ``python main.py`` command line: argparse subcommands -> library calls.

Contract for every command: progress and logs go to standard error; the result is
one JSON object printed as the last line of standard output (and written to
``--json-out FILE`` when given). Bad input ends with one sentence and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from tftransfer import __version__
from tftransfer.commands import COMMAND_MODULES
from tftransfer.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command module."""
    parser = argparse.ArgumentParser(
        prog="tftransfer",
        description="Robust transfer learning with Keras: train or import source models, "
                    "fine-tune them on targets, run sweeps, explain, tune and export.")
    parser.add_argument("--version", action="version", version=f"tftransfer {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"tftransfer.commands.{name}")
        sub = module.register(subparsers)
        sub.add_argument("--json-out", metavar="FILE",
                         help="also write the result JSON object to FILE")
    return parser


def emit_result(result: dict, json_out: str | None = None) -> None:
    """Prints the result as the last line of stdout and optionally writes it to a file."""
    line = json.dumps(result, sort_keys=False, default=_json_default)
    if json_out:
        with open(json_out, "w") as handle:
            handle.write(line + "\n")
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _json_default(value):
    # numpy scalars and paths appear in results; JSON has no type for them.
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def main(argv=None) -> int:
    """Entry point of ``python main.py`` and the ``tftransfer`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and the same command resumes it.",
              file=sys.stderr)
        return 130
    if result is not None:
        emit_result(result, args.json_out)
    return 0
