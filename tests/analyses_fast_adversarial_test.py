"""Tests of tftransfer.report.analyses.fast_adversarial and the fast-adversarial-transfer grid, on
synthetic model directories, evaluations and results written here."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json

import pandas as pd
import pytest

import pipelines

from tftransfer.sweeps import registry as grid_registry
from tests.helpers import make_row
from tftransfer import cli
from tftransfer.sweeps import runner as sweeps
from tftransfer.report.analyses import ANALYSES
from tftransfer.report.analyses import fast_adversarial as fa

FREE = "cifar10-resnet20-l2-eps0.5-free-8ep"
FAST_10, FAST_25 = fa.FAST_SOURCES


# ----------------------------------------------------------------------------- the grid


def test_grid_fine_tunes_the_fast_source_exactly_like_the_replication():
    fast, replication = grid_registry.get(fa.GRID), grid_registry.get("replication")
    cells = sweeps.cells(fast)
    assert len(cells) == 48
    assert {(c.source, c.target, c.train_images, c.unfrozen_blocks, c.seed) for c in cells} == {
        (f, t, n, b, s) for f in fa.FAST_SOURCES for t in ("mnist", "fashion_mnist")
        for n in (100, 400) for b in (0, 3) for s in (0, 1, 2)}
    theirs = {(c.target, c.train_images, c.unfrozen_blocks, c.seed): c
              for c in sweeps.cells(replication) if c.source == fa.PGD}
    for cell in cells:
        twin = theirs[(cell.target, cell.train_images, cell.unfrozen_blocks, cell.seed)]
        assert cell.epochs == twin.epochs
        # The whole resolved fine-tuning config, but for the source, is the replication's.
        ours = sweeps.transfer_config(fast, cell, "run")
        expected = sweeps.transfer_config(replication, twin, "run")
        assert ours == dataclasses.replace(expected, source=cell.source)


def test_grid_cells_match_the_committed_replication_rows():
    """The pairing keys (target, N, blocks, epochs, seed) exist in results/replication."""
    committed = pd.read_csv(pipelines.GRIDS_DIR.parents[1] / "results" / "replication"
                            / "results.csv", usecols=["source", "target", "train_images",
                                                      "unfrozen_blocks", "epochs", "seed"])
    for source in (fa.NATURAL, fa.PGD):
        have = set(committed[committed.source == source].drop(columns="source")
                   .itertuples(index=False, name=None))
        for c in sweeps.cells(grid_registry.get(fa.GRID)):
            assert (c.target, c.train_images, c.unfrozen_blocks, c.epochs, c.seed) in have


# ----------------------------------------------------------------------------- fixtures


def write_history(path, seconds, extra_rows=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "seconds", "accuracy"])
        for epoch, value in enumerate(seconds, start=1):
            writer.writerow([epoch, value, 0.5])
        for row in extra_rows:
            writer.writerow(row)


def write_model(models, name, method, epochs, seconds, metrics=None, finished=True, **cfg):
    directory = models / name
    attack = ({"norm": "none", "eps": 0.0, "steps": 7, "method": "pgd"} if method == "none"
              else {"norm": "l2", "eps": 0.5, "steps": 3, "method": method})
    resolved = {"epochs": epochs, "attack": attack, "free_replays": 4, **cfg}
    write_history(directory / "history.csv", seconds)
    if finished:
        (directory / "config.json").write_text(json.dumps({"resolved_config": resolved}))
        (directory / "metrics.json").write_text(json.dumps(
            {"epochs": epochs, "train_seconds_this_session": 1.0, **(metrics or {})}))
    else:
        (directory / "run_config.json").write_text(json.dumps(resolved))


def write_evaluation(results, name, clean, robust, examples=2000):
    (results / "evaluations").mkdir(parents=True, exist_ok=True)
    (results / "evaluations" / f"{name}.json").write_text(json.dumps(
        {"dataset": "cifar10", "examples": examples, "accuracy": clean,
         "adversarial_accuracy": robust, "attack": "l2", "eps": 0.5, "attack_steps": 20,
         "model": f"saved_models/{name}"}))


@pytest.fixture
def layout(tmp_path):
    """results/fast-adversarial, results/replication and saved_models under tmp_path."""
    results = tmp_path / "results" / "fast-adversarial"
    results.mkdir(parents=True)
    return tmp_path, results, tmp_path / "saved_models"


def write_sources(models, results):
    # PGD-3, 30 epochs: 10 + 20 + ... (resumed: metrics' session time is not the total).
    write_model(models, fa.PGD, "pgd", 30, [100.0] * 29 + [200.0])      # 3,100 s
    write_evaluation(results, fa.PGD, 0.79, 0.58)
    write_model(models, "cifar10-resnet20-l2-eps0.5-10ep", "pgd", 10, [150.0] * 10)  # 1,500 s
    write_evaluation(results, "cifar10-resnet20-l2-eps0.5-10ep", 0.73, 0.53)
    # FGSM-RS: early stop at epoch 7 keeping epoch 5; 7 epochs of history = 420 s.
    write_model(models, fa.FAST, "fgsm_rs", 10, [60.0] * 7, early_stop=True,
                metrics={"early_stopped_at_epoch": 7, "best_epoch": 5})
    write_evaluation(results, fa.FAST, 0.80, 0.57)
    # Free, m = 4, 8 epochs = 2 passes of 300 s.
    write_model(models, FREE, "free", 8, [300.0, 300.0])
    write_evaluation(results, FREE, 0.75, 0.50)
    write_model(models, fa.NATURAL, "none", 30, [50.0] * 30)
    write_evaluation(results, fa.NATURAL, 0.87, 0.015)


# ----------------------------------------------------------------------------- the methods


def test_history_seconds_sums_every_epoch_once(tmp_path):
    path = tmp_path / "history.csv"
    write_history(path, [10.0, 20.0, 30.0], extra_rows=[[2, 25.0, 0.5]])  # epoch 2 again
    assert fa.history_seconds(path) == (65.0, 3)
    assert fa.history_seconds(tmp_path / "absent.csv") is None


def test_methods_table_times_accuracies_and_early_stop(layout):
    _, results, models = layout
    write_sources(models, results)
    table = fa.methods_table(results, models).set_index("source")
    assert table.loc[fa.PGD, "train_seconds"] == pytest.approx(3100.0)  # not metrics' 1.0
    assert table.loc[fa.PGD, "seconds_per_epoch"] == pytest.approx(3100.0 / 30)
    assert table.loc[fa.FAST, "train_seconds"] == pytest.approx(420.0)
    assert table.loc[fa.FAST, "epochs"] == 10 and table.loc[fa.FAST, "epochs_run"] == 7
    assert table.loc[FREE, "train_seconds"] == pytest.approx(600.0)
    assert table.loc[FREE, "epochs_run"] == 8  # 2 passes x 4 replays
    assert table.loc[FREE, "seconds_per_epoch"] == pytest.approx(75.0)
    assert table.loc[fa.FAST, "pgd20_accuracy"] == 0.57
    assert table.loc[fa.FAST, "clean_accuracy"] == 0.80
    assert table.loc[fa.FAST, "test_images"] == 2000
    assert table.loc[fa.FAST, "status"] == "done"
    assert table.loc["cifar10-resnet20-l2-eps0.5-fgsm-rs-15ep", "status"] == "not trained yet"
    text = fa.methods_markdown(table.reset_index())
    fast_line = next(line for line in text.splitlines() if f"| {fa.FAST} |" in line)
    cells = [c.strip() for c in fast_line.strip("|").split("|")]
    assert cells == [fa.FAST, "FGSM-RS", "10", "7.0", "1.0", "80.0", "57.0", "2000",
                     "epoch 7, kept epoch 5", "done"]
    assert f"| {fa.PGD} | PGD-3 | 30 | 51.7 |" in text
    assert f"| {FREE} | free (m=4) | 8 | 10.0 | 1.2 |" in text
    assert "| cifar10-resnet20-l2-eps0.5-fgsm-rs-15ep | FGSM-RS | 15 | - |" in text


def test_goal_half_the_time_within_two_points(layout):
    _, results, models = layout
    write_sources(models, results)
    text, accuracy, seconds = fa.goal(fa.methods_table(results, models))
    assert accuracy == pytest.approx(0.56) and seconds == pytest.approx(1550.0)
    assert text.endswith(f"Met by {fa.FAST}.")  # free: 50% < 56%; the PGD-3 10ep is no method


def test_source_still_training_or_not_evaluated(layout):
    _, results, models = layout
    write_model(models, fa.FAST, "fgsm_rs", 10, [60.0, 61.0], finished=False, early_stop=True)
    write_model(models, fa.PGD, "pgd", 30, [100.0] * 30)
    table = fa.methods_table(results, models).set_index("source")
    assert table.loc[fa.FAST, "status"] == "training (2 of 10 epochs so far)"
    assert table.loc[fa.FAST, "train_seconds"] == pytest.approx(121.0)
    assert table.loc[fa.PGD, "status"] == "trained, not evaluated yet"
    assert "cannot be checked yet" in fa.goal(table.reset_index())[0]


# ----------------------------------------------------------------------------- the transfer


def accuracy(source, target, n, blocks, seed):
    """Natural: a per-seed effect the sources share (it cancels only when paired by seed);
    PGD 3 points above it on seeds 0-2 and 20 on seeds 3-4 (which the fast sources lack);
    the fast sources 1 (10 epochs) and 2 (25 epochs) points above natural."""
    base = 0.25 + 0.04 * seed + 0.01 * n / 100 + 0.02 * blocks + (0.05 if target == "mnist" else 0)
    if source == fa.PGD:
        return base + (0.03 if seed < 3 else 0.20)
    return base + {FAST_10: 0.01, FAST_25: 0.02}.get(source, 0.0)


def write_transfer(root, results, fast_seeds=(0, 1, 2), skip=()):
    epochs = {(100, 0): 2000, (100, 3): 90, (400, 0): 600, (400, 3): 30}
    reference, fast = [], []
    for (n, blocks), e in epochs.items():
        for target in ("mnist", "fashion_mnist"):
            for seed in range(5):
                for source in (fa.NATURAL, fa.PGD):
                    row = make_row(source, seed, accuracy(source, target, n, blocks, seed),
                                   target=target, n=n, blocks=blocks, epochs=e)
                    row["source_attack"] = "none" if source == fa.NATURAL else "l2"
                    row["source_eps"] = 0.0 if source == fa.NATURAL else 0.5
                    reference.append(row)
                # An unrelated robust source in the replication must not enter the table.
                other = make_row("cifar10-resnet20-l2-eps1.0", seed, 0.99, target=target, n=n,
                                 blocks=blocks, epochs=e)
                other["source_eps"] = 1.0
                reference.append(other)
                for source in fa.FAST_SOURCES:
                    if seed in fast_seeds and (source, target, n, blocks, seed) not in skip:
                        row = make_row(source, seed, accuracy(source, target, n, blocks, seed),
                                       target=target, n=n, blocks=blocks, epochs=e)
                        row["source_eps"] = 0.5
                        fast.append(row)
    (root / "results" / "replication").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(reference).to_csv(root / "results" / "replication" / "results.csv", index=False)
    (results / "transfer").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(fast).to_csv(results / "transfer" / "results.csv", index=False)


def table_line(text, target, n, blocks, source=FAST_10):
    prefix = f"| {fa.TARGETS[target]} | {n} | {fa.BLOCKS[blocks]} | {fa.FAST_SOURCES[source]} |"
    line = next(line for line in text.splitlines() if line.startswith(prefix))
    return [c.strip() for c in line.strip("|").split("|")]


def test_transfer_pairs_by_seed_on_the_fast_sources_seeds(layout):
    root, results, _ = layout
    write_transfer(root, results)
    text = fa.markdown(results, root / "saved_models")
    # seeds, natural, PGD, fast accuracy (means over seeds 0-2), then the paired differences:
    # exact (the shared per-seed effect cancels) and from seeds 0-2 only (PGD +20 on 3-4).
    natural = 100 * (0.25 + 0.04 + 0.01 + 0.06 + 0.05)
    cells = table_line(text, "mnist", 100, 3)
    assert cells[4:8] == ["3", f"{natural:.1f}", f"{natural + 3:.1f}", f"{natural + 1:.1f}"]
    assert cells[8:] == ["**+3.0 ± 0.0**", "**+1.0 ± 0.0**", "**-2.0 ± 0.0**"]
    cells = table_line(text, "mnist", 100, 3, FAST_25)
    assert cells[4:8] == ["3", f"{natural:.1f}", f"{natural + 3:.1f}", f"{natural + 2:.1f}"]
    assert cells[8:] == ["**+3.0 ± 0.0**", "**+2.0 ± 0.0**", "**-1.0 ± 0.0**"]
    rows = [line for line in text.splitlines()
            if line.startswith("| MNIST |") or line.startswith("| Fashion-MNIST |")]
    assert len(rows) == 16
    # Each cell's two fast sources side by side, 10 epochs first.
    assert ["25 ep" in row for row in rows[:2]] == [False, True]
    assert "Partial" not in text


def test_partial_transfer_uses_the_same_seeds_and_says_so(layout):
    root, results, _ = layout
    write_transfer(root, results, skip={(FAST_25, "fashion_mnist", 400, 0, 2)})
    text = fa.markdown(results, root / "saved_models")
    cells = table_line(text, "fashion_mnist", 400, 0, FAST_25)
    assert cells[4] == "2" and cells[8:] == ["**+3.0 ± 0.0**", "**+2.0 ± 0.0**",
                                             "**-1.0 ± 0.0**"]
    natural = 100 * (0.25 + 0.02 + 0.04)  # seeds 0 and 1
    assert cells[5:8] == [f"{natural:.1f}", f"{natural + 3:.1f}", f"{natural + 2:.1f}"]
    # The other fast source keeps its three seeds in the same cell.
    assert table_line(text, "fashion_mnist", 400, 0)[4] == "3"
    assert "Partial: 47 of the grid's 48 fast-source runs are done" in text


def test_a_fast_run_without_its_replication_twin_is_reported(layout):
    root, results, _ = layout
    write_transfer(root, results)
    frame = pd.read_csv(results / "transfer" / "results.csv")
    frame.loc[0, "epochs"] = 31  # not the replication's schedule: nothing to pair with
    frame.loc[0, "run_key"] = "odd"
    frame.to_csv(results / "transfer" / "results.csv", index=False)
    text = fa.markdown(results, root / "saved_models")
    assert "1 fast-source run(s) lack a natural or PGD run" in text


# ----------------------------------------------------------------------------- the command


def run_report(results):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["report", "--results", str(results), "--analysis", "fast-adversarial"])
    return code, out.getvalue(), err.getvalue()


def test_report_command_with_nothing_there_yet(layout):
    _, results, _ = layout
    code, out, err = run_report(results)
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["analyses"]["fast-adversarial"].endswith(
        "fast_adversarial.md")
    text = (results / "fast_adversarial.md").read_text()
    assert "not trained yet" in text and "cannot be checked yet" in text
    assert "The transfer comparison is not there yet" in text
    assert (results / fa.FIGURE).stat().st_size > 0
    assert len(pd.read_csv(results / fa.METHODS_CSV)) == len(fa.EXPECTED)


def test_report_command_with_everything(layout):
    root, results, models = layout
    write_sources(models, results)
    write_transfer(root, results)
    code, out, err = run_report(results)
    assert code == 0, err
    text = (results / "fast_adversarial.md").read_text()
    assert f"Met by {fa.FAST}." in text and "**+1.0 ± 0.0**" in text
    assert (results / fa.FIGURE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    methods = pd.read_csv(results / fa.METHODS_CSV).set_index("source")
    pairs = pd.read_csv(results / fa.TRANSFER_CSV)
    # Per fast source (on its seeds): it and PGD against natural, it against PGD; 8 cells.
    assert len(pairs) == 6 * 8
    assert set(pairs.baseline) == {fa.NATURAL, fa.PGD} and (pairs.n_pairs == 3).all()
    assert methods.loc[fa.PGD, "train_seconds"] == pytest.approx(3100.0)


def test_registered():
    assert ANALYSES["fast-adversarial"].standalone
    assert ANALYSES["fast-adversarial"].output == "fast_adversarial.md"
