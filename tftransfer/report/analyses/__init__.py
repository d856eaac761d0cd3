"""Analyses that ``report --analysis NAME`` runs after the report: each turns the report's CSVs
(or the results of several sweeps) into one markdown file beside them.

The one-off probes of the replication live here too, run as modules
(``python -m tftransfer.report.analyses.bn_statistics_probe RUN``,
``python -m tftransfer.report.analyses.stage_parameters [MODEL]``,
``python -m tftransfer.report.analyses.head_scale_probe --data-dir DIR``,
``python -m tftransfer.report.analyses.transfer_methods [DIR]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tftransfer.report.analyses import (ablation, blocks, fast_adversarial, length_check,
                                        paper_table, photo_sizes, replication_answers)


@dataclass(frozen=True)
class Analysis:
    """A named analysis: ``markdown(results_dir)`` -> text written to ``results_dir / output``.
    ``standalone``: it reads its own inputs, so ``report`` builds no sweep report when only
    standalone analyses are asked for."""

    name: str
    output: str
    markdown: Callable[[Path], str]
    description: str
    standalone: bool = False


def _answers(results_dir: Path) -> str:
    return replication_answers.markdown(results_dir / "report")


def _paper_table(results_dir: Path) -> str:
    return paper_table.markdown(results_dir / "report")


def _ablation(results_dir: Path) -> str:
    return ablation.markdown(results_dir)


def _blocks(results_dir: Path) -> str:
    return blocks.markdown(results_dir, results_dir.parent)


def _why_no_gain(results_dir: Path) -> str:
    # Imported here: ``python -m ...why_no_gain`` would otherwise find it imported already.
    from tftransfer.report.analyses import why_no_gain
    return why_no_gain.markdown(results_dir)


ANALYSES = {a.name: a for a in (
    Analysis("answers", "answers.md", _answers,
             "the replication's questions (a)-(e) for every robust source"),
    Analysis("paper-table", "paper_table.md", _paper_table,
             "our numbers beside the paper's table (pipelines/reference/utrera2021.csv)"),
    Analysis("blocks", "blocks.md", _blocks,
             "replication-blocks joined with the replication's 0- and 3-block runs (run on "
             "results/replication-blocks; writes its figures there)"),
    Analysis("ablation", "ablation.md", _ablation,
             "the ablation table: one protocol difference at a time (run on "
             "results/replication-paper)"),
    Analysis("fast-adversarial", "fast_adversarial.md", fast_adversarial.markdown,
             "fast robust sources: methods table, robust accuracy vs training time, "
             "transfer beside the PGD source (run on results/fast-adversarial)",
             standalone=True),
    Analysis("why-no-gain", "causes.md", _why_no_gain,
             "the candidate causes of the missing last-stage gain (on results/why-no-gain)",
             standalone=True),
    Analysis("photo-sizes", "sizes.md", photo_sizes.markdown,
             "the same photo grid at two input sizes, paired by seed (on "
             "results/photo/flowers12)", standalone=True),
    Analysis("length-check", "length.md", length_check.markdown,
             "the default training length against long runs (on results/photo/length)",
             standalone=True),
)}
