"""Data only: the registered sweep grids (``grids/*.toml``), the papers' reference numbers
(``reference/``) and the source-training scripts. Nothing here imports ``tftransfer``; the grid
registry that reads these files is ``tftransfer.sweeps.registry``.
"""

from pathlib import Path

GRIDS_DIR = Path(__file__).resolve().parent / "grids"
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
