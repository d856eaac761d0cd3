"""Fast robust sources (FGSM-RS, free) against the PGD-3 ones, and how they transfer.

``python main.py report --results results/fast-adversarial --analysis fast-adversarial``
(the last stage of ``results/fast-adversarial/run.sh``) writes, into that directory:

- ``methods.csv`` and the methods table of ``fast_adversarial.md``: per source model, the
  training method, its epoch budget, the training wall time (the sum of ``history.csv``'s
  per-epoch ``seconds``: training, the per-epoch test evaluation and the early-stop check;
  one row per epoch, so an interrupted and resumed run is counted once), clean and PGD-20
  accuracy with the number of test images (``evaluations/<source>.json``, written by
  ``evaluate --json-out``) and the epoch early stopping stopped at, if any;
- ``robust_vs_time.png``: PGD-20 accuracy against training wall time, every method on one
  plot, the PGD-3 sources as reference points and the goal of a fast method (within 2
  points of the 30-epoch PGD-3 source in at most half its time) as a shaded region;
- the transfer comparison of ``fast_adversarial.md`` (and ``transfer_differences.csv``):
  for each target, N and number of fine-tuned blocks, fast-minus-natural and
  PGD-minus-natural (and fast-minus-PGD), each paired by seed with
  ``stats.paired_differences``, on the same seeds (per fast source, its own: the CSV's
  ``fast_source`` column says which, so PGD-minus-natural appears once per fast source):
  the fast sources' runs from
  ``transfer/`` (the ``fast-adversarial-transfer`` grid) and the natural and PGD-3 runs of the
  committed ``../replication`` results (the same protocol).

The transfer comparison lives in ``fast_adversarial_transfer`` (its names are importable from
here too). Whatever is missing (a source not trained or evaluated yet, the transfer not run) is
said so in the report; nothing here needs TensorFlow.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tftransfer import runs
from tftransfer.report import plot_parts
# Re-exported: the transfer comparison's names are this analysis' too.
from tftransfer.report.analyses.fast_adversarial_transfer import (  # noqa: F401
    BLOCKS, FAST, FAST_SOURCES, GRID, NATURAL, PGD, TARGETS, percent, transfer_differences,
    transfer_markdown, transfer_table)

GOAL_POINTS, GOAL_TIME_FRACTION = 2.0, 0.5   # a fast method's goal against the PGD source
METHODS_CSV, FIGURE = "methods.csv", "robust_vs_time.png"
TRANSFER_CSV = "transfer_differences.csv"
METHOD_LABELS = {"pgd": "PGD", "fgsm_rs": "FGSM-RS", "free": "free", "none": "natural"}


@dataclass(frozen=True)
class Expected:
    """A source model run.sh trains or evaluates: its name, method and epoch budget (used
    while the model directory does not say yet)."""

    name: str
    method: str
    epochs: int
    free_replays: int | None = None


EXPECTED = (
    Expected(PGD, "pgd", 30),
    Expected("cifar10-resnet20-l2-eps0.5-10ep", "pgd", 10),
    Expected(FAST, "fgsm_rs", 10),
    Expected("cifar10-resnet20-l2-eps0.5-fgsm-rs-15ep", "fgsm_rs", 15),
    Expected("cifar10-resnet20-l2-eps0.5-fgsm-rs-25ep", "fgsm_rs", 25),
    Expected("cifar10-resnet20-l2-eps0.5-free-8ep", "free", 8, free_replays=4),
    Expected(NATURAL, "none", 30),
)
METHODS_COLUMNS = ("source", "method", "epochs", "epochs_run", "status", "train_seconds",
                   "seconds_per_epoch", "clean_accuracy", "pgd20_accuracy", "test_images",
                   "early_stop", "early_stopped_at_epoch", "best_epoch", "attack_steps",
                   "free_replays")
INTEGER_COLUMNS = ("epochs", "epochs_run", "test_images", "early_stopped_at_epoch", "best_epoch",
                   "attack_steps", "free_replays")


# ----------------------------------------------------------------------------- reading


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def history_seconds(path) -> tuple[float, int] | None:
    """(sum of the per-epoch ``seconds``, number of epochs) of a ``history.csv``; one row
    per epoch (the last one of a repeated epoch wins); None without a readable file."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return None
    per_epoch = {}
    for row in rows:
        try:
            per_epoch[int(row["epoch"])] = float(row["seconds"])
        except (KeyError, TypeError, ValueError):
            continue
    if not per_epoch:
        return None
    return sum(per_epoch.values()), len(per_epoch)


def _training_config(model_dir: Path) -> dict:
    """The resolved pretrain config: config.json's (a finished model), else run_config.json
    (written when training starts)."""
    config = _read_json(model_dir / "config.json") or {}
    return config.get("resolved_config") or _read_json(model_dir / "run_config.json") or {}


def method_row(name: str, model_dir: Path, evaluation: dict | None,
               expected: Expected | None = None) -> dict:
    """One row of the methods table for the source ``name`` (see ``METHODS_COLUMNS``)."""
    cfg = _training_config(model_dir)
    metrics = _read_json(model_dir / "metrics.json") or {}
    attack = cfg.get("attack") or {}
    norm = attack.get("norm", metrics.get("attack"))
    if norm == "none":
        method = "none"
    elif norm:
        method = attack.get("method") or metrics.get("attack_method") or "pgd"
    else:  # nothing written yet
        method = expected.method if expected else None
    epochs = cfg.get("epochs", metrics.get("epochs", expected.epochs if expected else None))
    replays = (cfg.get("free_replays") or metrics.get("free_replays")
               or (expected.free_replays if expected else None)) if method == "free" else None
    timing = history_seconds(model_dir / "history.csv")
    seconds, rows = timing if timing else (None, None)
    # A free pass replays every minibatch ``replays`` times: that many epoch-equivalents.
    epochs_run = rows * (replays or 1) if rows else None
    finished = (model_dir / "metrics.json").exists()
    if not model_dir.exists():
        status = "not trained yet"
    elif not finished:
        status = (f"training ({epochs_run} of {epochs} epochs so far)" if epochs_run
                  else "training")
    elif evaluation is None:
        status = "trained, not evaluated yet"
    else:
        status = "done"
    evaluation = evaluation or {}
    return {
        "source": name, "method": method, "epochs": epochs, "epochs_run": epochs_run,
        "status": status, "train_seconds": seconds,
        "seconds_per_epoch": seconds / epochs_run if seconds is not None else None,
        "clean_accuracy": evaluation.get("accuracy"),
        "pgd20_accuracy": evaluation.get("adversarial_accuracy"),
        "test_images": evaluation.get("examples"),
        "early_stop": bool(cfg.get("early_stop", False)),
        "early_stopped_at_epoch": metrics.get("early_stopped_at_epoch"),
        "best_epoch": metrics.get("best_epoch"),
        "attack_steps": attack.get("steps") if method == "pgd" else None,
        "free_replays": replays,
    }


def methods_table(results_dir, models_root) -> pd.DataFrame:
    """Every expected source, then any other one with an evaluation in
    ``results_dir/evaluations``, as rows of ``METHODS_COLUMNS``."""
    evaluations = Path(results_dir) / "evaluations"
    found = {path.stem: path for path in sorted(evaluations.glob("*.json"))}
    names = [e.name for e in EXPECTED] + sorted(set(found) - {e.name for e in EXPECTED})
    expected = {e.name: e for e in EXPECTED}
    rows = []
    for name in names:
        evaluation = _read_json(found[name]) if name in found else None
        model = Path(models_root) / name
        if evaluation and evaluation.get("model") and not model.exists():
            model = Path(evaluation["model"])  # evaluated from somewhere else
        rows.append(method_row(name, model, evaluation, expected.get(name)))
    table = pd.DataFrame(rows, columns=list(METHODS_COLUMNS))
    for column in INTEGER_COLUMNS:
        table[column] = pd.array(table[column], dtype="Int64")
    return table


# ----------------------------------------------------------------------------- the methods


def method_label(row) -> str:
    label = METHOD_LABELS.get(row["method"], str(row["method"]))
    if row["method"] == "pgd" and pd.notna(row["attack_steps"]):
        label += f"-{int(row['attack_steps'])}"
    if row["method"] == "free" and pd.notna(row["free_replays"]):
        label += f" (m={int(row['free_replays'])})"
    return label


def _minutes(seconds) -> str:
    return "-" if seconds is None or pd.isna(seconds) else f"{seconds / 60:.1f}"


def _early_stop_text(row) -> str:
    if not row["early_stop"]:
        return "-"
    if pd.isna(row["early_stopped_at_epoch"]):
        return "did not stop" if "training" not in row["status"] else "on"
    unit = "pass" if row["method"] == "free" else "epoch"  # free's history counts passes
    kept = "" if pd.isna(row["best_epoch"]) else f", kept {unit} {int(row['best_epoch'])}"
    return f"{unit} {int(row['early_stopped_at_epoch'])}{kept}"


def methods_markdown(table: pd.DataFrame) -> str:
    lines = ["| source | method | epochs | training time (min) | min / epoch | clean % | "
             "PGD-20 % | test images | early stop | status |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for _, row in table.iterrows():
        epochs = "-" if pd.isna(row["epochs"]) else str(int(row["epochs"]))
        images = "-" if pd.isna(row["test_images"]) else str(int(row["test_images"]))
        lines.append(f"| {row['source']} | {method_label(row)} | {epochs} | "
                     f"{_minutes(row['train_seconds'])} | {_minutes(row['seconds_per_epoch'])} | "
                     f"{percent(row['clean_accuracy'])} | {percent(row['pgd20_accuracy'])} | "
                     f"{images} | {_early_stop_text(row)} | {row['status']} |")
    return "\n".join(lines)


def goal(table: pd.DataFrame) -> tuple[str, float | None, float | None]:
    """A fast method's goal as a sentence, and its bounds (PGD-20 accuracy at least, seconds at
    most; None without a measured PGD source)."""
    reference = table[(table.source == PGD) & table.pgd20_accuracy.notna()
                      & table.train_seconds.notna()]
    if reference.empty:
        return (f"The goal (within {GOAL_POINTS:g} points of {PGD}'s PGD-20 accuracy in at "
                f"most half its training time) cannot be checked yet: {PGD} has no evaluation "
                "or history."), None, None
    ref = reference.iloc[0]
    accuracy = ref.pgd20_accuracy - GOAL_POINTS / 100
    seconds = ref.train_seconds * GOAL_TIME_FRACTION
    fast = table[~table.method.isin(["pgd", "none"]) & table.pgd20_accuracy.notna()
                 & table.train_seconds.notna()]
    meets = fast[(fast.pgd20_accuracy >= accuracy - 1e-12) & (fast.train_seconds <= seconds)]
    text = (f"Goal: PGD-20 accuracy of at least {100 * accuracy:.1f}% ({PGD}'s "
            f"{100 * ref.pgd20_accuracy:.1f}% minus {GOAL_POINTS:g} points) in at most "
            f"{seconds / 60:.1f} min (half its {ref.train_seconds / 60:.1f} min). ")
    if fast.empty:
        text += "No fast or free source is evaluated yet."
    elif meets.empty:
        text += f"Not met by any of the {len(fast)} evaluated fast / free source(s)."
    else:
        text += "Met by " + ", ".join(meets.source) + "."
    return text, accuracy, seconds


def figure(table: pd.DataFrame, goal_accuracy=None, goal_seconds=None):
    """PGD-20 accuracy (%) against training wall time (min): one line per fast method over
    its budgets, the PGD-3 and natural sources as reference points."""
    from matplotlib.figure import Figure

    measured = table[table.pgd20_accuracy.notna() & table.train_seconds.notna()]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    if goal_accuracy is not None:
        ax.fill_between([0, goal_seconds / 60], 100 * goal_accuracy, 100, color="tab:green",
                        alpha=0.12, label="goal: within 2 points, half the time")
    colors = {"fgsm_rs": "tab:red", "free": "tab:blue"}
    for method, rows in measured.groupby("method", sort=True):
        rows = rows.sort_values("train_seconds")
        x, y = rows.train_seconds / 60, 100 * rows.pgd20_accuracy
        label = method_label(rows.iloc[0])
        if method in ("pgd", "none"):
            ax.scatter(x, y, marker="*" if method == "pgd" else "x", s=120, color="black"
                       if method == "pgd" else "0.5", zorder=3, label=f"{label} (reference)")
        else:
            ax.plot(x, y, marker="o", color=colors.get(method), label=label, zorder=3)
        for xi, yi, epochs, stopped in zip(x, y, rows.epochs, rows.early_stopped_at_epoch):
            if pd.notna(epochs):
                text = f"{int(epochs)} ep" + ("" if pd.isna(stopped) else f", stopped {stopped}")
                ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(5, 4),
                            fontsize=8)
    if measured.empty:
        ax.text(0.5, 0.5, "no source evaluated yet", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlim(left=0)
    ax.set_ylim(0, max([60.0] + list(100 * measured.pgd20_accuracy + 5)))
    ax.set_xlabel("training wall time (min, sum of history.csv seconds)")
    ax.set_ylabel("PGD-20 accuracy (%), L2 eps 0.5")
    ax.set_title("CIFAR-10 resnet20: robust accuracy against training time")
    ax.grid(alpha=0.3)
    if len(ax.get_legend_handles_labels()[0]):
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the report


def markdown(results_dir, models_root=None) -> str:
    """Writes ``methods.csv`` and the figure into ``results_dir`` and returns the markdown.
    ``models_root``: the folder of the source models (default: ``saved_models`` beside
    ``results_dir``'s parent, i.e. the repository's)."""
    results_dir = Path(results_dir)
    models_root = Path(models_root) if models_root else results_dir.parent.parent / "saved_models"
    stream = io.StringIO()
    emit = functools.partial(print, file=stream)
    emit("# Fast robust sources: cost, robustness and transfer\n")
    emit("Written by `python main.py report --results results/fast-adversarial --analysis "
         "fast-adversarial` (do not edit by hand); the commands are in `run.sh`.\n")

    table = methods_table(results_dir, models_root)
    runs.write_text_atomic(results_dir / METHODS_CSV, table.to_csv(index=False))
    emit("## Training methods\n")
    emit("CIFAR-10 resnet20, L2 eps 0.5. Training time: the sum of `history.csv`'s per-epoch "
         "seconds (training, the per-epoch test evaluation and, with early stopping, its PGD "
         "check); min / epoch: per epoch, for free per epoch-equivalent (a pass of m replays "
         "counts m). Measured on this shared 2-core machine under whatever load it had when "
         "each source trained, so sources trained at different times are not timed side by "
         "side. Accuracies on a fixed stratified subset of CIFAR-10's test split (`test "
         "images` of them, `evaluate --max-examples`); PGD-20: cleverhans' L2 PGD, 20 steps, "
         f"eps 0.5. Also in [{METHODS_CSV}]({METHODS_CSV}).\n")
    emit(methods_markdown(table) + "\n")
    sizes = sorted({int(n) for n in table.test_images.dropna()})
    if len(sizes) > 1:
        emit(f"Note: the evaluations use different numbers of test images ({sizes}); compare "
             "them with care.\n")
    goal_text, goal_accuracy, goal_seconds = goal(table)
    emit(goal_text + "\n")
    path = plot_parts.save_figure(figure(table, goal_accuracy, goal_seconds), results_dir / FIGURE)
    emit(f"![PGD-20 accuracy against training time]({path.name})\n")

    emit(f"## Transfer: the FGSM-RS sources beside {PGD}\n")
    emit("Sources: " + ", ".join(f"{label} = `{name}`" for name, label in FAST_SOURCES.items())
         + ".\n")
    emit(f"Fine-tuned like the replication (grid `{GRID}`: the epochs of "
         "`replication.toml` per N and blocks). Test accuracy (%) on all test images, means over "
         "the seeds the fast source has; differences in points, paired by seed "
         "(`stats.paired_differences`), ± the 95% t half-width; **bold**: the interval excludes "
         "zero. The natural and PGD-3 runs are the committed `results/replication` ones.\n")
    combined, notes = transfer_table(results_dir)
    if combined is not None:
        against_natural, against_pgd, warned = transfer_differences(combined)
        notes += warned
        runs.write_text_atomic(results_dir / TRANSFER_CSV, pd.concat(
            [against_natural, against_pgd], ignore_index=True).to_csv(index=False))
        emit(transfer_markdown(against_natural, against_pgd) + "\n")
        emit(f"Every paired difference, with its interval: [{TRANSFER_CSV}]({TRANSFER_CSV}).\n")
    if notes:
        emit("\n".join(f"- {note}" for note in notes) + "\n")
    return stream.getvalue()
