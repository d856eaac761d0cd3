"""CLI subcommands. Each module defines ``register(subparsers)``; its parser's
``run(args)`` returns the result dict that the CLI prints as the last line.

Add a command by adding its module name here (in the order ``--help`` shows them).
"""

COMMAND_MODULES = (
    "datasets",
    "sources",
    "pretrain",
    "evaluate",
    "transfer",
    "sweep",
    "report",
    "saliency",
    "influence",
    "tune",
    "convert",
    "export",
    "serve",
    "predict",
)
