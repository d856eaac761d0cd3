"""Where a sweep's results files are: ``results*.csv`` (shards included), in natural order.

Shared by recording (``sweeps`` skips the runs already in them) and reading
(``report.results_table`` merges them); standard library only, so a sweep does not load pandas
to find its finished runs.
"""

from __future__ import annotations

import re
from pathlib import Path

from tftransfer.errors import UserError

RESULTS_GLOB = "results*.csv"


def find_result_files(results_dir) -> list[Path]:
    """The ``results*.csv`` files (shards included) in ``results_dir``, in natural order.

    Raises:
      UserError: when the directory does not exist or holds no results file.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise UserError(f"results directory {str(results_dir)!r} does not exist; "
                        f"pass the directory the sweep wrote its {RESULTS_GLOB} files to.")
    files = sorted(results_dir.glob(RESULTS_GLOB), key=_natural_key)
    if not files:
        raise UserError(f"no {RESULTS_GLOB} files in {str(results_dir)!r}; "
                        "pass the directory the sweep wrote its results to.")
    return files


def _natural_key(path: Path):
    # "shard-10" must sort after "shard-2" so the kept duplicate does not depend on digit count.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]
