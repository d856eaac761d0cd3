"""The ``tftransfer`` / ``python main.py`` command line: argparse subcommands -> library calls.

Contract for every command: progress and logs go to standard error; the result is
one JSON object printed as the last line of standard output (and written to
``--json-out FILE`` when given). Bad input ends with one sentence and exit code 2.
A command whose work partly failed still prints its result, then exits with the code
its ``exit_code(result)`` default returns (``sweep``: 1 when any run failed).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

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
    sys.stdout.write(line + "\n")  # first: a file that cannot be written must not lose it
    sys.stdout.flush()
    if json_out:
        try:
            with open(json_out, "w") as handle:
                handle.write(line + "\n")
        except OSError as error:
            raise UserError(f"Could not write --json-out {json_out} ({error.strerror}); the "
                            "result is the last line of standard output.") from None


def check_json_out(json_out: str | None) -> None:
    """Refuses a ``--json-out`` whose folder does not exist before any work is done."""
    if json_out and not Path(json_out).resolve().parent.is_dir():
        raise UserError(f"--json-out {json_out}: the folder {Path(json_out).parent} does not "
                        "exist.")


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
        check_json_out(args.json_out)
        result = args.run(args)
        exit_code = getattr(args, "exit_code", None)
        # Decided (and explained on stderr) before --json-out is written, which can fail.
        code = exit_code(result) if exit_code and result is not None else 0
        if result is not None:
            emit_result(result, args.json_out)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; " + ("finished work is kept and the same command resumes it."
                                 if getattr(args, "resumable", False) else
                                 "nothing of this run is kept; re-running starts it again."),
              file=sys.stderr)
        return 130
    return code
