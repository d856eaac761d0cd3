"""Why the paper's last-stage gain is missing, one candidate cause at a time.

``python -m tftransfer.report.analyses.why_no_gain --results results/why-no-gain`` (or ``main.py
report ... --analysis why-no-gain``) reads ``<results>/<cause>/`` (grids ``why-no-gain-<cause>``)
and writes there ``causes.md`` and ``causes.csv``: per cause and cell (target, N; blocks for
depth; the natural source for source-quality) the robust-minus-natural gap paired by seed, and
its change against the baseline's gap paired by seed (``(rob_c - nat_c) - (rob_b - nat_b)``;
source-quality reuses the baseline's robust runs: ``nat_b - nat_c``), each with its 95% t
interval (``stats.interval_table``), n, df, t-test p and Holm's p across the cells; the same for
the area between the test curves (per seed the gap's trapezoid over the recorded epochs / their
span); the paper's gap, each cell's completeness and a conclusion written from the numbers. And
``curves.csv`` / ``curves.png``: the gap at every recorded epoch with its 95% interval.
Accuracies are fractions in the CSVs, points in the markdown; no TensorFlow needed.
"""

from __future__ import annotations

import argparse
import functools
import io
import shlex
import sys
import tomllib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import integrate

import pipelines
from tftransfer import runs
from tftransfer.report import plot_parts, significance, stats
from tftransfer.report.analyses.paper_table import PAPER
from tftransfer.sweeps.result_files import RESULTS_GLOB

NATURAL, ROBUST = "cifar10-resnet20-natural", "cifar10-resnet20-l2-eps0.5"
BASELINE = "baseline"
CAUSES = {  # results folder (and grid why-no-gain-<folder>) -> what it changes
    "baseline": "nothing: natural vs L2 eps 0.5 source, last stage (3 blocks), utrera2021 preset",
    "head-scale": "the new head drawn with std 5.657 (the paper's initial logit size)",
    "upsample": "every target image down to 8 px and back up to 32 (the paper's blur)",
    "depth": "the last 1 or 2 blocks fine-tuned instead of the last stage's 3",
    "source-quality": "natural sources trained 3 or 10 epochs, not 30 (the baseline's robust runs)",
}
TARGETS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
CELL = ["target", "train_images", "unfrozen_blocks"]
KEYS = ["cause"] + CELL + ["natural"]
VALUE = "test_accuracy"
FAMILIES = {"gap": "robust minus natural", "change": "change of the gap against the baseline",
            "area": "area between the curves", "area_change": "change of the area"}
LEVEL = 1 - stats.CONFIDENCE
CAUSES_CSV, CURVES_CSV, FIGURE = "causes.csv", "curves.csv", "curves.png"


def read_cause(results_dir, cause: str) -> pd.DataFrame:
    """The cause's validated rows; empty without a results file or row (bad rows still raise)."""
    files = (Path(results_dir) / cause).glob(RESULTS_GLOB)
    has_rows = any(len(path.read_text().splitlines()) > 1 for path in files)  # past the header
    return stats.read_results(Path(results_dir) / cause) if has_rows else pd.DataFrame()


def per_seed(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """``source``'s final and per-epoch accuracies per cell and seed (replicates averaged)."""
    if table.empty:
        return pd.DataFrame(columns=CELL + ["seed", VALUE])
    values = [VALUE] + stats.epoch_columns(table)
    return table[table.source == source].groupby(CELL + ["seed"], as_index=False)[values].mean()


def subtract(left: pd.DataFrame, right: pd.DataFrame, on: list[str]) -> pd.DataFrame:
    """``left - right`` for every value column both have, on the rows whose ``on`` keys both
    have (an inner join: a seed only one side has is dropped, never paired with another)."""
    values = [c for c in left.columns if c not in on and c in right.columns and c not in KEYS]
    merged = left.merge(right[on + values], on=on, suffixes=("", "_right"))
    for column in values:
        merged[column] = merged[column] - merged[f"{column}_right"]
    return merged.drop(columns=[f"{column}_right" for column in values])


def seed_gaps(tables: dict) -> pd.DataFrame:
    """Robust minus natural per cause, cell and seed (``KEYS`` + seed + value columns)."""
    frames = []
    for cause, table in tables.items():
        if table.empty:
            continue
        robust = per_seed(tables[BASELINE] if cause == "source-quality" else table, ROBUST)
        naturals = table.loc[table.source_attack == stats.NATURAL_ATTACK, "source"].unique()
        frames += [subtract(robust, per_seed(table, natural), CELL + ["seed"])
                   .assign(cause=cause, natural=natural) for natural in sorted(naturals)]
    frames = [frame for frame in frames if not frame.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=KEYS + [
        "seed", VALUE])


def seed_changes(gaps: pd.DataFrame) -> pd.DataFrame:
    """Each non-baseline gap minus the baseline's gap of the same target, N and seed."""
    base = gaps[gaps.cause == BASELINE].drop(columns=["cause", "unfrozen_blocks", "natural"])
    return subtract(gaps[gaps.cause != BASELINE], base, ["target", "train_images", "seed"])


def area(frame: pd.DataFrame) -> pd.Series:
    """Per row, the mean of its per-epoch values over the recorded epochs (trapezoid rule
    divided by the span); NaN with a missing epoch or fewer than two recorded."""
    columns = [c for c in stats.epoch_columns(frame) if frame[c].notna().any()]
    epochs = np.array([int(c.rsplit("_", 1)[1]) for c in columns], dtype=float)
    if len(epochs) < 2:
        return pd.Series(np.nan, index=frame.index)
    mean = integrate.trapezoid(frame[columns].to_numpy(float), epochs, axis=1) / np.ptp(epochs)
    return pd.Series(mean, index=frame.index)


def intervals(frame: pd.DataFrame, value: str, prefix: str) -> pd.DataFrame:
    """``stats.interval_table`` per cell, plus df, the two-sided t-test p and Holm's p."""
    if frame.empty:
        return pd.DataFrame(columns=KEYS + stats.interval_columns(prefix)
                            + [f"{prefix}_{c}" for c in ("df", "p", "p_holm")])
    return significance.add_t_tests(stats.interval_table(frame, KEYS, value, prefix), prefix)


def expected_cells(grids_dir: Path = pipelines.GRIDS_DIR) -> pd.DataFrame:
    """Every cell the why-no-gain grids ask for, with the grid's number of seeds."""
    rows = []
    for cause in CAUSES:
        path = Path(grids_dir) / f"why-no-gain-{cause}.toml"
        grid = tomllib.loads(path.read_text()) if path.exists() else {"sources": []}
        rows += [{"cause": cause, "target": target, "train_images": n, "unfrozen_blocks": blocks,
                  "natural": natural, "seeds_expected": len(grid["seeds"])}
                 for natural in grid["sources"] if natural != ROBUST for target in grid["targets"]
                 for n in grid["train_images"] for blocks in grid["unfrozen_blocks"]]
    return pd.DataFrame(rows, columns=KEYS + ["seeds_expected"])


def causes_table(results_dir, grids_dir: Path = pipelines.GRIDS_DIR):
    """``(causes, curves)``: one row per expected or measured cell (see the module doc), and
    the gap per cell and recorded epoch. The analysis' public entry."""
    tables = {cause: read_cause(results_dir, cause) for cause in CAUSES}
    gaps = seed_gaps(tables)
    gaps["area"] = pd.concat([area(rows) for _, rows in gaps.groupby("cause")] or [area(gaps)])
    changes = seed_changes(gaps).rename(columns={"area": "area_change"})  # area_c - area_b
    table = expected_cells(grids_dir).merge(gaps[KEYS].drop_duplicates(), on=KEYS, how="outer")
    for frame, value, prefix in ((gaps, VALUE, "gap"), (changes, VALUE, "change"),
                                 (gaps, "area", "area"), (changes, "area_change", "area_change")):
        table = table.merge(intervals(frame.dropna(subset=[value]), value, prefix), on=KEYS,
                            how="left")
    table["paper_gap"] = [PAPER.get(t, {}).get(n, (np.nan,) * 3)[2] / 100
                          for t, n in zip(table.target, table.train_images)]
    ran = Counter((c, *r) for c, t in tables.items() if not t.empty
                  for r in t[CELL + ["source"]].itertuples(index=False))
    table["runs"] = [sum(ran[(r.cause, r.target, r.train_images, r.unfrozen_blocks, source)]
                         for source in (r.natural, ROBUST)) for r in table.itertuples()]
    table["status"] = [status(row) for row in table.itertuples()]
    order = {name: i for i, name in enumerate([*CAUSES, *TARGETS])}
    table = table.sort_values(KEYS, key=lambda c: c.map(order) if c.name in KEYS[:2] else c)
    return table.reset_index(drop=True), epoch_curves(gaps)


def status(row) -> str:
    """"complete", "k of n seeds" (paired seeds against the grid's), "no paired seed yet (k
    runs)" or "not run yet", and the change's seeds when fewer (the baseline lacks some)."""
    have, changed = (0 if pd.isna(n) else int(n) for n in (row.gap_n, row.change_n))
    text = (("not run yet" if not row.runs else f"no paired seed yet ({row.runs} runs)")
            if have == 0 else "complete" if not have < row.seeds_expected
            else f"{have} of {int(row.seeds_expected)} seeds")
    return text if row.cause == BASELINE or changed >= have else \
        f"{text}; change on the {changed} seeds the baseline shares"


def epoch_curves(gaps: pd.DataFrame) -> pd.DataFrame:
    """The gap per cell and recorded epoch: mean, 95% interval, n pairs (long table)."""
    columns = stats.epoch_columns(gaps)
    if gaps.empty or not columns:
        return pd.DataFrame(columns=KEYS + ["epoch", "gap_mean", "n_pairs"])
    long = gaps.melt(id_vars=KEYS + ["seed"], value_vars=columns, var_name="column",
                     value_name="gap").dropna(subset=["gap"])
    long["epoch"] = long["column"].str.rsplit("_", n=1).str[1].astype(int)
    curves = stats.interval_table(long, KEYS + ["epoch"], "gap", "gap")
    return curves.rename(columns={"gap_n": "n_pairs"})


def stat(row, prefix: str, name: str):
    """``row.<prefix>_<name>``: one statistic of one family of a causes-table row."""
    return getattr(row, f"{prefix}_{name}")


def clear(row, prefix: str) -> bool:
    """Whether the 95% interval of ``prefix`` excludes zero."""
    return bool(stat(row, prefix, "ci_low") > 0 or stat(row, prefix, "ci_high") < 0)


def points(row, prefix: str) -> str:
    """``+1.2 ± 3.4`` in points (bold when the interval excludes zero), or ``-``."""
    mean, half = stat(row, prefix, "mean"), stat(row, prefix, "ci_half")
    if pd.isna(mean) or pd.isna(half):
        return "-" if pd.isna(mean) else f"{100 * mean:+.1f} (1 seed)"
    text = f"{100 * mean:+.1f} ± {100 * half:.1f}"
    return f"**{text}**" if clear(row, prefix) else text


def n_df_p(row, prefix: str) -> list[str]:
    """``[n / df, Holm's p]`` of one family, ``-`` where there is none."""
    n, df, p = (stat(row, prefix, name) for name in ("n", "df", "p_holm"))
    return ["-" if pd.isna(n) else f"{int(n)} / {'-' if pd.isna(df) else int(df)}", p_text(p)]


def p_text(value) -> str:
    """A p-value to two significant digits, ``-`` where there is none."""
    return "-" if pd.isna(value) else f"{value:.2g}"


def setting(row) -> str:
    """``, 1 block`` / ``, 3ep natural``: what sets a cell apart besides target and N."""
    blocks = f", {row.unfrozen_blocks} block{'s' * (row.unfrozen_blocks != 1)}"
    natural = f", {row.natural.removeprefix(NATURAL + '-')} natural"
    return blocks * (row.unfrozen_blocks != 3) + natural * (row.natural != NATURAL)


def cell_label(row) -> str:
    """``MNIST N=100`` and its ``setting``."""
    return f"{TARGETS.get(row.target, row.target)} N={row.train_images}{setting(row)}"


def markdown_table(table: pd.DataFrame, families: tuple, extra=()) -> str:
    """One row per measured cell; per family: mean ± half-width, n / df and Holm's p;
    ``extra``: (header, row -> text) columns."""
    table = table[table.gap_n > 0]
    header = ["cause", "cell"] + [h for f in families for h in (
        f"{FAMILIES[f]} (pts)", "n / df", "Holm p")] + [h for h, _ in extra]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for row in table.itertuples():
        cells = [row.cause, cell_label(row)] + [text for f in families
                                                for text in [points(row, f)] + n_df_p(row, f)]
        lines.append("| " + " | ".join(cells + [text(row) for _, text in extra]) + " |")
    return "\n".join(lines) if len(table) else "No paired runs yet."


def counts(table: pd.DataFrame, prefix: str) -> str:
    """"k of m cells clear of zero (m x 0.05 expected by chance); h after Holm's"."""
    tested = table[table[f"{prefix}_ci_half"].notna()]
    k = sum(clear(row, prefix) for row in tested.itertuples())
    return (f"{FAMILIES[prefix]}: {k} of {len(tested)} cells clear of zero at 95% "
            f"({LEVEL * len(tested):.1f} expected by chance if no cell had an effect); "
            f"{int((tested[f'{prefix}_p_holm'] < LEVEL).sum())} after Holm's correction.")


def effect_sentence(table: pd.DataFrame, prefix: str, what: str) -> str:
    """Which causes move ``what`` clear of zero, and by how much; "none of them" otherwise."""
    causes = table[(table.cause != BASELINE) & table[f"{prefix}_ci_half"].notna()]
    if causes.empty:
        return f"No cause has paired runs against the baseline yet, so none can move {what}."
    moved = [row for row in causes.itertuples() if clear(row, prefix)]
    if not moved:
        return (f"None of them moves {what} by more than its 95% interval "
                f"({len(causes)} cells of {', '.join(causes.cause.unique())}).")
    parts = [f"{r.cause} at {cell_label(r)} ({points(r, prefix).strip('*')} points, Holm p "
             f"{p_text(stat(r, prefix, 'p_holm'))})" for r in moved]
    holm_k = sum(stat(r, prefix, "p_holm") < LEVEL for r in moved)
    still = sorted(set(causes.cause) - {r.cause for r in moved})
    return (f"{len(moved)} of {len(causes)} cells move {what} by more than its interval: "
            + "; ".join(parts) + f"; {holm_k} of them survive Holm's correction"
            + (f"; {', '.join(still)} move(s) no cell" if still else "") + ".")


def baseline_sentence(table: pd.DataFrame) -> str:
    """Where the baseline's robust source stands: ahead / behind / not distinguishable."""
    base = table[(table.cause == BASELINE) & table.gap_ci_half.notna()]
    if base.empty:
        return "The baseline has no cell with an interval yet, so no cause can be judged. "
    ahead = sum(clear(r, "gap") and r.gap_mean > 0 for r in base.itertuples())
    behind = sum(clear(r, "gap") and r.gap_mean < 0 for r in base.itertuples())
    faster = sum(clear(r, "area") and r.area_mean > 0 for r in base.itertuples())
    return (f"In the baseline the robust source ends ahead in {ahead}, behind in {behind} and "
            f"not distinguishable from the natural one in {len(base) - ahead - behind} of "
            f"{len(base)} cells with an interval (mean gaps {100 * base.gap_mean.min():+.1f} to "
            f"{100 * base.gap_mean.max():+.1f} points; the paper's "
            f"{100 * base.paper_gap.min():+.1f} to {100 * base.paper_gap.max():+.1f}); its "
            f"gap averaged over the epochs is above zero in {faster} of them. ")


def conclusion(table: pd.DataFrame) -> str:
    """The plain-language conclusion, every clause computed from ``table``."""
    text = baseline_sentence(table) + effect_sentence(table, "change", "the final gap") + " "
    text += effect_sentence(table, "area_change", "the gap averaged over the epochs") + " "
    measured = table[table.gap_ci_high.notna()]
    reach = [f"{cell_label(r)} ({r.cause})" for r in measured.itertuples()
             if r.gap_ci_high >= r.paper_gap]
    text += (f"The paper's gap is inside or below the 95% interval in {len(reach)} of "
             f"{len(measured)} cells with an interval" + (f": {', '.join(reach)}." * bool(reach)
                                                           or "."))
    incomplete = int((table.status != "complete").sum())
    return text + (f" {incomplete} of {len(table)} cells are incomplete, so this is "
                   "provisional." if incomplete else "")


def figure(curves: pd.DataFrame, sizes):
    """One panel per target x N (``sizes``), one line with its 95% band per cause and setting."""
    from matplotlib.figure import Figure

    curves = curves.assign(label=[r.cause + setting(r) for r in curves.itertuples()])
    labels = sorted(set(curves.label), key=lambda label: (label != BASELINE, label))
    colors = {label: plot_parts.BASELINE_COLOR if label == BASELINE else
              plot_parts.COLORS[i % len(plot_parts.COLORS)] for i, label in enumerate(labels)}
    fig = Figure(figsize=(5.5 * len(sizes), 4.2 * len(TARGETS)))
    for i, (target, n) in enumerate((t, n) for t in TARGETS for n in sizes):
        ax = fig.add_subplot(len(TARGETS), len(sizes), i + 1)
        rows = curves[(curves.target == target) & (curves.train_images == n)]
        for label, line in rows.sort_values("epoch").groupby("label"):
            band = plot_parts.interval_bounds(line, "gap", "n_pairs", plot_parts.DIFFERENCE_RANGE)
            plot_parts.line_with_band(ax, line.epoch, 100 * line.gap_mean, *band, label,
                                      colors[label], "-")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set(title=f"{TARGETS[target]}, N = {n}" + " (no paired runs yet)" * rows.empty,
               xlabel="epoch", ylabel="robust minus natural (points)")
        ax.grid(alpha=0.3)
        plot_parts.legend(ax, plot_parts.has_few_seeds(rows), loc="best")
    fig.tight_layout()
    return fig


def incomplete_lines(table: pd.DataFrame) -> list[str]:
    """Per cause, its cells without every seed (or with none)."""
    lines = []
    for cause, rows in table[table.status != "complete"].groupby("cause", sort=False):
        if (rows.status == "not run yet").all() and len(rows) == (table.cause == cause).sum():
            lines.append(f"- {cause}: not run yet ({len(rows)} cells)")
        else:
            lines += [f"- {cause}, {cell_label(r)}: {r.status}" for r in rows.itertuples()]
    return lines or ["None: every cell has the grid's seeds."]


def markdown(results_dir, command: str | None = None) -> str:
    """Writes ``causes.csv``, ``curves.csv`` and ``curves.png`` into ``results_dir`` and
    returns ``causes.md``'s text (``command``: the one quoted at its top)."""
    results_dir = Path(results_dir)
    command = command or (f"python main.py report --results "
                          f"{runs.checkout_relative(results_dir)} --analysis why-no-gain")
    table, curves = causes_table(results_dir)  # a DataWarning (duplicate rows) goes to stderr
    runs.write_text_atomic(results_dir / CAUSES_CSV, table.to_csv(index=False))
    runs.write_text_atomic(results_dir / CURVES_CSV, curves.to_csv(index=False))
    plot_parts.save_figure(figure(curves, sorted(set(table.train_images))), results_dir / FIGURE)
    stream = io.StringIO()
    emit = functools.partial(print, file=stream)
    emit(f"# Why no gain: the candidate causes, one at a time\n\nWritten by "
         f"`{command}` (do not edit by hand). What each cause changes:\n")
    emit("\n".join(f"- **{cause}**: {what}." for cause, what in CAUSES.items()) + "\n")
    emit("## Conclusion\n\n" + conclusion(table) + "\n")
    emit("## The final gap and its change against the baseline\n\nTest accuracy on all test "
         "images, points: robust minus natural paired by seed, and (gap of the cause - gap of "
         "the baseline) paired by seed (source-quality: the baseline's natural minus this one), "
         "± the 95% t half-width; **bold**: the interval excludes zero. Holm p: the two-sided "
         "t-test's, Holm-corrected across the column. Paper: L2 eps 3 minus natural, 3 blocks.\n")
    emit(markdown_table(table, ("gap", "change"), (
        ("paper", lambda r: f"{100 * r.paper_gap:+.1f}"), ("cell", lambda r: r.status))) + "\n")
    emit("## The speed claim: the area between the curves\n\nPer seed, the gap on the runs' test "
         "curves (on the curves' test images) averaged over the recorded epochs (trapezoid / "
         f"span), then mean ± 95% half-width; per epoch in [{CURVES_CSV}]({CURVES_CSV}).\n")
    emit(markdown_table(table, ("area", "area_change")) + f"\n\n![gap per epoch]({FIGURE})\n")
    emit("## Clear of zero\n\n" + "\n".join(f"- {counts(table, f)}" for f in FAMILIES) + "\n")
    emit("## Incomplete cells\n\n" + "\n".join(incomplete_lines(table)))
    emit(f"\nEvery number: [{CAUSES_CSV}]({CAUSES_CSV}) (fractions, not points).")
    return stream.getvalue()


def main(argv=None) -> None:
    """CLI: writes ``causes.md`` (and the CSVs and figure) into ``--results`` and prints it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/why-no-gain",
                        help="the folder holding one results folder per cause")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    text = markdown(args.results, "python -m tftransfer.report.analyses.why_no_gain "
                    + shlex.join(argv))
    runs.write_text_atomic(Path(args.results) / "causes.md", text)
    print(text)


if __name__ == "__main__":
    main()
