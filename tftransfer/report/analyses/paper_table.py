"""Our replication numbers beside the paper's table, from the report's CSVs.

``python main.py report --results results/replication --analysis paper-table`` writes it to
``results/replication/paper_table.md``: for each robust source, N x target with the paper's
natural / robust
(difference) at unfrozen blocks = 3 and ours at the last stage (3 blocks) and head only
(0 blocks), each "natural / robust (difference ± 95% half-width, paired by seed)".
"""

from __future__ import annotations

import csv
import functools
import io
from pathlib import Path

import pandas as pd

import pipelines

# The paper repository's summary table (pipelines/reference/README.md): unfrozen blocks = 3,
# (natural, robust, difference) per target and N, the differences as the paper reports them.
REFERENCE = pipelines.REFERENCE_DIR / "utrera2021.csv"


def _paper_table(path: Path = REFERENCE) -> dict:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    table: dict = {}
    for row in rows:
        table.setdefault(row["target"], {})[int(row["train_images"])] = tuple(
            float(row[key]) for key in ("natural", "robust", "difference"))
    return table


PAPER = _paper_table()


def paper_cell(target: str, n: int) -> str:
    natural, robust, difference = PAPER[target][n]
    return f"{natural:.1f} / {robust:.1f} ({difference:+.1f})"


def our_cell(row) -> str:
    if row is None:
        return "not run"
    half = row.difference_ci_half * 100
    interval = f" ± {half:.1f}" if pd.notna(half) else ""
    return (f"{row.baseline_mean * 100:.1f} / {row.source_mean * 100:.1f} "
            f"({row.difference_mean * 100:+.1f}{interval})")


def table(differences: pd.DataFrame, source: str) -> str:
    """The markdown table of one robust source against the baseline."""
    rows = differences[differences.source == source]
    lookup = {(r.target, r.train_images, r.unfrozen_blocks): r for r in rows.itertuples()}
    targets = [t for t in PAPER if t in set(rows.target)]
    header = ["N"] + [f"{t}: {who}" for t in targets
                      for who in ("paper (3 blocks)", "ours, last stage", "ours, head only")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for n in sorted(PAPER["mnist"]):
        cells = [str(n)]
        for t in targets:
            cells += [paper_cell(t, n), our_cell(lookup.get((t, n, 3))),
                      our_cell(lookup.get((t, n, 0)))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(report_dir) -> str:
    """The tables as markdown, from ``report_dir`` (a ``report`` output directory)."""
    stream = io.StringIO()
    emit = functools.partial(print, file=stream)
    differences = pd.read_csv(Path(report_dir) / "differences.csv")
    if differences.empty:
        emit("No robust source beside the natural one in this report yet: nothing to compare.")
    for source in sorted(differences.source.unique()):
        baseline = differences[differences.source == source].baseline.iloc[0]
        emit(f"### {baseline} / {source}\n")
        emit(table(differences, source), end="\n\n")
    return stream.getvalue()
