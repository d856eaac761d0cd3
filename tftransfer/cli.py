"""The ``tftransfer`` / ``python main.py`` command line: argparse subcommands -> library calls.

Contract for every command: progress and logs go to standard error; the result is
one JSON object printed as the last line of standard output (and written to
``--json-out FILE`` when given). Bad input ends with one sentence and exit code 2, and so does a failed file operation
(``error: <what failed>: <path>``: a full disk, a read-only folder); a finished run whose
record could not be saved still prints its result first. A reader of stdout that goes away
(``| head``) ends the command quietly with exit code 141, as SIGPIPE ends other tools.
Ctrl-C (exit 130) and SIGTERM (exit 143, what Slurm and Kubernetes send) raise in the
command, so that its claims and locks are released, and print one line on what was kept
and how to go on.
A command whose work partly failed still prints its result, then exits with the code
its ``exit_code(result)`` default returns (``sweep``: 1 when any run failed).
That line is strict JSON: a result holding NaN or an infinity (which JSON cannot
represent) is replaced by an ``{"error": ...}`` object naming those values, and the
command exits with code 1.

TensorFlow's start-up logging stays off stderr (``tflog``) unless ``--verbose`` is given;
every command's ``--help`` shows each flag's default.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import numbers
import os
import re
import select
import signal
import sys
import threading
from pathlib import Path

from tftransfer import __version__, tflog
from tftransfer.commands import COMMAND_MODULES
from tftransfer.errors import UnsavedResult, UserError, os_error_sentence

VERBOSE_FLAG = "--verbose"
_NAMES_DEFAULT = re.compile(r"\(default|default:|%\(default\)")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to a flag's help unless the help already names its default,
    or the default says nothing (None, False of an on/off switch, a required value)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if _NAMES_DEFAULT.search(text) or action.required:
            return text
        if action.default is None or action.default is False or action.default == [] \
                or action.default == argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """Every command's parser: help with defaults shown."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command module."""
    parser = argparse.ArgumentParser(
        prog="tftransfer",
        description="Robust transfer learning with Keras: train or import source models, "
                    "fine-tune them on targets, run sweeps, explain, tune and export. "
                    "`tftransfer COMMAND --help` documents each command.")
    parser.add_argument("--version", action="version", version=f"tftransfer {__version__}",
                        help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND",
                                       parser_class=CommandParser)
    subparsers.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"tftransfer.commands.{name}")
        sub = module.register(subparsers)
        sub.add_argument("--json-out", metavar="FILE",
                         help="also write the result JSON object to FILE")
        sub.add_argument(VERBOSE_FLAG, action="store_true",
                         help="also show TensorFlow's own start-up and C++ logging on stderr "
                              "(hidden by default unless TF_CPP_MIN_LOG_LEVEL is set)")
    return parser


def emit_result(result: dict, json_out: str | None = None) -> bool:
    """Prints the result as the last line of stdout and optionally writes it to a file.

    Returns:
      False when the result held non-finite numbers and an error object was printed in
      its place (see ``result_line``).
    """
    line, complete = result_line(result)
    sys.stdout.write(line + "\n")  # first: a file that cannot be written must not lose it
    sys.stdout.flush()
    if json_out:
        try:
            with open(json_out, "w") as handle:
                handle.write(line + "\n")
        except OSError as error:
            raise UserError(f"Could not write --json-out {json_out} ({error.strerror}); the "
                            "result is the last line of standard output.") from None
    return complete


def result_line(result: dict) -> tuple[str, bool]:
    """The result as one line of strict JSON, and whether it is the result itself.

    ``json.dumps`` writes NaN and infinities as ``NaN``/``Infinity``, which JSON parsers
    refuse; such a result is a failed computation, so it becomes an error object that names
    the values (the sentence also goes to stderr).
    """
    bad = non_finite_values(result)
    if not bad:
        return json.dumps(result, sort_keys=False, default=_json_default, allow_nan=False), True
    shown = ", ".join(f"{path} {value}" for path, value in bad[:5])
    shown += f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    error = (f"The result holds non-finite numbers ({shown}), so the computation diverged or "
             f"its input is bad; nothing of it is reported as a result.")
    print(f"error: {error}", file=sys.stderr)
    return json.dumps({"error": error, "non_finite": [path for path, _ in bad]}), False


def non_finite_values(value, path: str = "") -> list[tuple[str, float]]:
    """``(place, number)`` for each NaN or infinity in ``value``; places read ``key``,
    ``key.sub``, ``key[2]``."""
    if isinstance(value, dict):
        return [found for k, v in value.items()
                for found in non_finite_values(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, (list, tuple)):
        return [found for i, v in enumerate(value)
                for found in non_finite_values(v, f"{path}[{i}]")]
    if hasattr(value, "item") and getattr(value, "size", 1) == 1:
        value = value.item()  # numpy scalars, as _json_default writes them
    if isinstance(value, numbers.Real) and not math.isfinite(value):
        return [(path, value)]
    return []


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
    argv = sys.argv[1:] if argv is None else list(argv)
    # Before the parser is built: building it can import TensorFlow already.
    tflog.quiet_tensorflow(verbose=VERBOSE_FLAG in argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with sigterm_raises():
            return run_command(args)
    except UserError as error:
        if isinstance(error, UnsavedResult):
            with contextlib.suppress(UserError):  # an unwritable --json-out: stdout has it
                emit_result(error.result, args.json_out)
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if isinstance(error, BrokenPipeError) and stdout_closed():
            return leave_quietly()
        print(f"error: {os_error_sentence(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        how, code = (("terminated (SIGTERM)", 143) if isinstance(stop, Terminated) else
                     ("interrupted", 130))
        print(f"{how}; {kept_note(args)}", file=sys.stderr)
        return code


def run_command(args) -> int:
    """Runs the parsed command and prints its result line; returns the exit code."""
    check_json_out(args.json_out)
    result = args.run(args)
    exit_code = getattr(args, "exit_code", None)
    # Decided (and explained on stderr) before --json-out is written, which can fail.
    code = exit_code(result) if exit_code and result is not None else 0
    if result is not None and not emit_result(result, args.json_out):
        code = code or 1
    return code


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt: every ``finally`` that releases a
    sweep's claim or a run directory's lock runs, and so do the handlers of Ctrl-C."""


@contextlib.contextmanager
def sigterm_raises():
    """Inside the block, SIGTERM raises ``Terminated`` in the main thread, once: a second
    SIGTERM ends the process at once, as it would without the block.

    Python runs the handler between bytecodes, so a SIGTERM that arrives during one long
    TensorFlow call (a compiled stretch of epochs) takes effect when that call returns.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers (the CLI run inside a thread)
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def kept_note(args) -> str:
    """What an interrupted command kept and how to go on: the command's own ``kept(args)``,
    else whether the same command resumes it."""
    kept = getattr(args, "kept", None)
    if kept is not None:
        return kept(args)
    return ("finished work is kept and the same command resumes it."
            if getattr(args, "resumable", False) else
            "nothing of this run is kept; re-running starts it again.")


def stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (``| head``), as a BrokenPipeError
    from a socket is not: the pipe's write end then polls as an error."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no descriptor (a test's StringIO), no poll
        return False


def leave_quietly() -> int:
    """Exit code 141 (128 + SIGPIPE) for a command whose stdout reader has gone, with
    stdout pointed at /dev/null: Python flushes it again at exit, which would otherwise print
    "Exception ignored ... BrokenPipeError" (the recipe of Python's ``signal`` docs)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141
