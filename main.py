"""Thin entry point: ``python main.py COMMAND ...`` is the same CLI as ``tftransfer``."""

import sys

from tftransfer.cli import main

if __name__ == "__main__":
    sys.exit(main())
