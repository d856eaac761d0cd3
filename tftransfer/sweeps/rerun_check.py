"""Results that can be traced to one commit: rerun a sample of the committed sweep
rows at the current checkout and compare their test accuracies bitwise.

The committed rows are those of the ``results*.csv`` files under ``results/`` at ``HEAD`` (read
with ``git show``, so rows a sweep is appending in the working tree do not count; outside git,
the working tree's files), one row per fine-tuning run, each naming its grid (``sweep``), its
cell (``run_key``), its ``test_accuracy`` and the ``git_commit`` it was recorded at. A sample of
them is rerun exactly as the sweep ran it: the registered grid's cell, its ``TransferConfig``
(``cells.transfer_config``) with its run directory under a temporary results directory, and
``fine_tune`` with one ``RunCache`` shared by all the runs. A rerun's accuracy is bitwise equal
to the committed one when the two read back as the same float64 (the committed string is the
repr of a float32 widened to float64, so that is the float32's bits).

The sample (``sample_rows``), fixed by ``--seed``:

1. The rows of each grid matching ``--grids`` (default ``DEFAULT_GRIDS``; a grid without a
   committed results file is skipped, and a row whose key is no longer a cell of its grid is
   left out), split into strata by (grid, source kind): natural when ``source_attack`` is
   ``none``, robust otherwise.
2. Within a stratum the cheap rows come first: those whose committed ``train_seconds`` is at most
   the stratum's median (in these grids the head-only cells and the small-N, few-epoch ones),
   each part in a seeded random order.
3. The strata are taken round-robin, one row each per round, in grid order, the source kinds
   alternating between neighbouring grids (so even two rows cover two grids and both kinds),
   until ``--rows`` rows are taken.

The reruns run grouped by source and target (shared trunk features), with a tqdm bar and its
ETA. Each finished row is appended to ``OUT/rerun.csv`` at once (rewritten atomically), and a
restart skips the rows already there, so the same command resumes an interrupted check. A run
that fails is reported and not recorded (the same command retries it). ``OUT/README.md`` holds
the command, the commit, the sampling rule, the rows per grid and the rows that differ.

Usage:
  python -m tftransfer.sweeps.rerun_check --rows 24 --seed 0 --out results/reproducibility \\
      --data-dir ../shared/tfds

Exit status: 0 when every sampled row was rerun (whether or not it matched: this is a
measurement), 1 when a run failed, 2 (one sentence) for bad arguments or uncommitted code.
"""

from __future__ import annotations

import argparse
import csv
import io
import shlex
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path

from tftransfer import runs
from tftransfer.errors import UserError
from tftransfer.sweeps import registry
from tftransfer.sweeps.cells import cells, transfer_config
from tftransfer.sweeps.rerun_sample import (DEFAULT_GRIDS, SAMPLING_RULE, candidate_rows,
                                            committed_rows, matching_grids,
                                            sample_counts, sample_rows, source_kind)
from tftransfer.sweeps.state import read_rows

RERUN_FILE = "rerun.csv"
README_FILE = "README.md"
COLUMNS = ("grid", "key", "source_kind", "committed_accuracy", "committed_commit",
           "rerun_accuracy", "rerun_commit", "bitwise_equal", "abs_difference", "seconds")
MODULE = "python -m tftransfer.sweeps.rerun_check"


# ----------------------------------------------------------------------------- committed rows


# ----------------------------------------------------------------------------- comparison

def bitwise_equal(committed: str, rerun: float) -> bool:
    """Whether the rerun accuracy has the same float64 bits as the committed string."""
    return struct.pack("<d", float(committed)) == struct.pack("<d", float(rerun))


def comparison_row(row: dict, rerun_accuracy: float, rerun_commit: str, seconds: float) -> dict:
    """One line of ``rerun.csv``."""
    committed = row["test_accuracy"]
    return {"grid": row["sweep"], "key": row["run_key"], "source_kind": source_kind(row),
            "committed_accuracy": committed, "committed_commit": row.get("git_commit", ""),
            "rerun_accuracy": repr(float(rerun_accuracy)), "rerun_commit": rerun_commit,
            "bitwise_equal": "yes" if bitwise_equal(committed, rerun_accuracy) else "no",
            "abs_difference": repr(abs(float(rerun_accuracy) - float(committed))),
            "seconds": f"{seconds:.1f}"}


def read_reruns(path) -> list[dict]:
    """The rows of ``rerun.csv`` ([] when there is none yet)."""
    return read_rows(path)


def append_rerun(path, row: dict) -> None:
    """Adds ``row`` to ``rerun.csv`` (the whole file rewritten atomically)."""
    rows = read_reruns(path) + [row]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    runs.write_text_atomic(path, buffer.getvalue())


def _real_fine_tune():
    from tftransfer import finetune
    return finetune.fine_tune


def _new_cache():
    from tftransfer.finetune.run_cache import RunCache
    return RunCache()


def rerun_rows(sample: list[dict], out, data_dir=None, download: bool = True,
               fine_tune=None, cache=None, progress: bool = True) -> dict:
    """Reruns the rows of ``sample`` not yet in ``OUT/rerun.csv``, appending each as it
    finishes.

    Args:
      sample: committed rows (``sample_rows``).
      out: the output folder.
      fine_tune: the training function (``finetune.run.fine_tune``; tests give a stub).
      cache: the RunCache shared by the runs (a new one when None).

    Returns:
      ``done_before``, ``ran``, ``failed`` (the keys) and ``rerun_commit``.
    """
    from tqdm import tqdm

    out = Path(out)
    path = out / RERUN_FILE
    commit = runs.git_commit()
    done = {(r["grid"], r["key"]) for r in read_reruns(path)}
    todo = [r for r in sample if (r["sweep"], r["run_key"]) not in done]
    fine_tune = fine_tune or _real_fine_tune()
    grids = {name: registry.get(name) for name in {r["sweep"] for r in todo}}
    by_key = {name: {cell.key: cell for cell in cells(sweep)} for name, sweep in grids.items()}
    jobs = [(row, by_key[row["sweep"]][row["run_key"]]) for row in todo]
    jobs.sort(key=lambda job: (job[1].source, job[1].target, job[0]["sweep"], job[1].key))
    print(f"rerun_check: {len(sample)} sampled rows, {len(sample) - len(todo)} in {path} "
          f"before, {len(todo)} to rerun at {commit}", file=sys.stderr)
    ran, failed = 0, []
    if not jobs:
        return {"done_before": len(sample) - len(todo), "ran": 0, "failed": [],
                "rerun_commit": commit}
    cache = cache or _new_cache()
    data = dict(data_dir=data_dir, download=download)
    with tempfile.TemporaryDirectory(prefix="rerun_check.") as tmp:
        # A data problem (not prepared, a wrong --data-dir) stops here in one sentence.
        loaded = set()
        for row, cell in jobs:
            if cell.target not in loaded:
                loaded.add(cell.target)
                cache.target(transfer_config(grids[row["sweep"]], cell,
                                             Path(tmp) / "preflight", **data))
        with tqdm(total=len(jobs), desc="rerun_check", unit="run", file=sys.stderr,
                  disable=not progress) as bar:
            for row, cell in jobs:
                run_dir = Path(tmp) / row["sweep"] / "runs" / cell.file_name
                cfg = transfer_config(grids[row["sweep"]], cell, run_dir, **data)
                start = time.time()
                try:
                    result = fine_tune(cfg, cache=cache, save_model=False, verbose=False)
                except Exception as error:  # one row's failure; the others still run
                    failed.append(f"{row['sweep']} {cell.key}")
                    detail = str(error) if isinstance(error, UserError) else \
                        traceback.format_exc()
                    tqdm.write(f"rerun {row['sweep']} {cell.key} failed: {detail}",
                               file=sys.stderr)
                    bar.update()
                    continue
                line = comparison_row(row, result["test_accuracy"], commit, time.time() - start)
                append_rerun(path, line)
                ran += 1
                tqdm.write(f"{line['grid']} {line['key']}: committed {line['committed_accuracy']}"
                           f" rerun {line['rerun_accuracy']} "
                           f"{'equal' if line['bitwise_equal'] == 'yes' else 'DIFFERS'} "
                           f"({line['seconds']} s)", file=sys.stderr)
                bar.update()
    return {"done_before": len(sample) - len(todo), "ran": ran, "failed": failed,
            "rerun_commit": commit}


# ----------------------------------------------------------------------------- report

def readme(command: str, sample: list[dict], reruns: list[dict], grids: list[str],
           candidates: dict) -> str:
    """``OUT/README.md``: the command, the commits, the rule, the rows per grid, the counts
    equal and differing, and every differing row with the commit it was recorded at."""
    sampled = {(r["sweep"], r["run_key"]) for r in sample}
    found = {(r["grid"], r["key"]): r for r in reruns if (r["grid"], r["key"]) in sampled}
    differing = [found[k] for k in ((r["sweep"], r["run_key"]) for r in sample)
                 if k in found and found[k]["bitwise_equal"] != "yes"]
    equal = sum(r["bitwise_equal"] == "yes" for r in found.values())
    commits = sorted({r["rerun_commit"] for r in found.values()})
    lines = ["# Committed rows rerun at one commit (issue 34)", "",
             "Written by:", "", "```", command, "```", "",
             f"Rerun at: {', '.join(f'`{c}`' for c in commits) or '(nothing rerun yet)'}"
             + (" (more than one commit: the check was resumed after the code changed)"
                if len(commits) > 1 else "") + ".", "",
             f"Sample: {len(sample)} of the {len(candidates['rows'])} committed rows of the "
             f"grids {', '.join(grids)}; the rule: {SAMPLING_RULE}.", ""]
    if candidates["missing"]:
        lines += [f"Skipped (no committed results file): {', '.join(candidates['missing'])}.",
                  ""]
    dirty = sum(r.get("git_commit", "").endswith("+dirty") for r in sample)
    if dirty:
        lines += [f"{dirty} of the sampled rows were recorded from uncommitted code (their "
                  f"git_commit ends in +dirty).", ""]
    if candidates["stale"]:
        lines += ["Left out (the key is no longer a cell of its grid): " + ", ".join(
            f"{g} {n}" for g, n in candidates["stale"].items()) + ".", ""]
    lines += [f"**{len(found)} of {len(sample)} rows rerun: {equal} bitwise equal, "
              f"{len(differing)} differ.**", ""]
    if len(found) < len(sample):
        lines += [f"{len(sample) - len(found)} sampled rows are not rerun yet (failed or "
                  f"interrupted); the same command reruns them.", ""]
    lines += ["| grid | rows | natural | robust | rerun | equal | differ |",
              "|---|---|---|---|---|---|---|"]
    for entry in sample_counts(sample, grids):
        mine = [r for k, r in found.items() if k[0] == entry["grid"]]
        same = sum(r["bitwise_equal"] == "yes" for r in mine)
        lines.append(f"| {entry['grid']} | {entry['rows']} | {entry['natural']} | "
                     f"{entry['robust']} | {len(mine)} | {same} | {len(mine) - same} |")
    lines += [""]
    if differing:
        lines += ["Rows whose rerun differs (committed and rerun test accuracy as written):", "",
                  "| grid | run_key | committed at | committed | rerun | abs difference |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['grid']} | `{r['key']}` | `{r['committed_commit']}` | "
                  f"{r['committed_accuracy']} | {r['rerun_accuracy']} | {r['abs_difference']} |"
                  for r in differing]
    elif found:
        lines += ["Every rerun row is bitwise equal to its committed row."]
    lines += ["", f"Every row: `{RERUN_FILE}` ({', '.join(COLUMNS)}; seconds: the rerun's wall "
              f"time)."]
    return "\n".join(lines) + "\n"


def write_readme(out: Path, command: str, sample: list[dict], grids: list[str],
                 candidates: dict) -> str:
    """Writes ``OUT/README.md`` from ``OUT/rerun.csv`` as it is now; returns its text."""
    text = readme(command, sample, read_reruns(out / RERUN_FILE), grids, candidates)
    runs.write_text_atomic(out / README_FILE, text)
    return text


# ----------------------------------------------------------------------------- command line

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one sentence, exit status 2
        print(f"rerun_check: error: {message}.", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=MODULE, description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=24, help="how many committed rows to rerun")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed")
    parser.add_argument("--out", default="results/reproducibility",
                        help=f"folder for {RERUN_FILE} and {README_FILE}")
    parser.add_argument("--grids", nargs="+", default=list(DEFAULT_GRIDS), metavar="PATTERN",
                        help="the grids to sample (names or fnmatch patterns)")
    parser.add_argument("--data-dir", default=None,
                        help="TFDS data directory (default: $TFDS_DATA_DIR or "
                             "~/tensorflow_datasets)")
    parser.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                        help="let TFDS download a dataset that is not prepared yet")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="rerun from code with uncommitted changes (rerun_commit then "
                             "ends in +dirty)")
    return parser


def prepare(args, root=None) -> tuple[list[str], dict, list[dict]]:
    """(grids, candidates, sample) for the parsed arguments.

    Raises:
      UserError: for bad arguments.
    """
    grids = matching_grids(args.grids, registry.names())
    grid_keys = {name: {cell.key for cell in cells(registry.get(name))} for name in grids}
    candidates = candidate_rows(committed_rows(root), grids, grid_keys)
    grids = [g for g in grids if g not in candidates["missing"]]
    if not grids:
        raise UserError(f"--grids {' '.join(args.grids)}: none of these grids has a committed "
                        f"results file.")
    return grids, candidates, sample_rows(candidates["rows"], args.rows, args.seed, grids)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from tftransfer import tflog
    tflog.quiet_tensorflow(verbose=False)
    args = build_parser().parse_args(argv)
    command = f"{MODULE} {shlex.join(argv)}".strip()
    try:
        grids, candidates, sample = prepare(args)
        runs.require_committed_code(args.allow_dirty)
        runs.git_commit()  # pinned now, before rerun.csv makes the checkout dirty
        for entry in sample_counts(sample, grids):
            print(f"  {entry['grid']}: {entry['rows']} rows ({entry['natural']} natural, "
                  f"{entry['robust']} robust)", file=sys.stderr)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        result = rerun_rows(sample, out, args.data_dir, args.download)
    except UserError as error:
        print(f"rerun_check: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        write_readme(out, command, sample, grids, candidates)
        print("interrupted; the rows in rerun.csv are kept and the same command resumes.",
              file=sys.stderr)
        return 130
    print(write_readme(out, command, sample, grids, candidates))
    if result["failed"]:
        print(f"rerun_check: {len(result['failed'])} runs failed (errors above); the same "
              f"command retries them.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
