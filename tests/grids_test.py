"""Sweep grids as files (issue 21, item 5): the registered grids are TOML files in
pipelines/grids/, and a user's TOML or JSON file runs with ``sweep --grid``."""

from __future__ import annotations

import csv
import json

import pytest

import pipelines

from tftransfer.sweeps import registry as grid_registry
from tftransfer.sweeps import grid_files as grids
from tftransfer.sweeps import runner as sweeps
from tftransfer.errors import UserError
from tests import helpers

# Registered grid -> the committed results its cells produced.
COMMITTED = {
    "replication": "results/replication/results.csv",
    "replication-blocks": "results/replication-blocks/results.csv",
    "pilot-10ep": "results/pilot-10ep/results.csv",
    "tiny": "results/tiny/results.csv",
    "replication-paper-ablation-bn": "results/replication-paper-ablation/bn/results.csv",
}


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_registered_grid_files_have_the_committed_cells(name):
    """The TOML files reproduce the grids that produced the committed rows, key for key."""
    with open(helpers.REPO / COMMITTED[name]) as handle:
        committed = {row["run_key"] for row in csv.DictReader(handle)}
    cells = [cell.key for cell in sweeps.cells(grid_registry.get(name))]
    assert len(cells) == len(set(cells))
    assert set(cells) == committed


def test_every_grid_file_is_registered_under_its_name():
    files = sorted(pipelines.GRIDS_DIR.glob("*.toml"))
    assert len(files) >= 10
    assert sorted(grids.load_grid(f).name for f in files) == grid_registry.names()


def test_replication_paper_grid_keeps_its_preset_and_order():
    grid = grid_registry.get("replication-paper")
    assert (grid.preset, grid.order, grid.epochs) == ("utrera2021", "train_images", 150)
    assert grid.overrides[0].train_images == (1600,) and grid.overrides[0].seeds == (0, 1, 2)


GRID = """
name = "mine"
sources = ["a", "b"]
targets = ["mnist"]
train_images = [100, 400]
unfrozen_blocks = [0, 3]
seeds = [0, 1]
epochs = 5
recipe = ["optim.learning_rate=0.05"]

[[overrides]]
train_images = [100]
unfrozen_blocks = [0]
epochs = 50
"""


def test_a_user_toml_grid(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(GRID)
    grid = grids.load_grid(path)
    keys = [cell.key for cell in sweeps.cells(grid)]
    assert "mnist|a|n100|b0|s1|e50" in keys and "mnist|b|n400|b3|s0|e5" in keys
    assert len(keys) == 2 * 2 * 2 * 2
    cfg = sweeps.transfer_config(grid, sweeps.cells(grid)[0], tmp_path / "run")
    assert cfg.optim.learning_rate == 0.05


def test_a_json_grid_equals_the_toml_one(tmp_path):
    toml_path = tmp_path / "mine.toml"
    toml_path.write_text(GRID)
    json_path = tmp_path / "mine.json"
    import tomllib
    json_path.write_text(json.dumps(tomllib.loads(GRID)))
    assert grids.load_grid(json_path) == grids.load_grid(toml_path)


@pytest.mark.parametrize("text, message", [
    (GRID.replace("epochs = 5\n", "epochs = 5\nepoch = 3\n"), r"unknown field\(s\) epoch"),
    (GRID.replace("seeds = [0, 1]", "seeds = 0"), r"seeds must be a list"),
    (GRID.replace("epochs = 5\n", "epochs = 0\n"), r"epochs must be at least 1"),
    (GRID.replace("unfrozen_blocks = [0]\n", "unfrozen_blocks = [9]\n"), r"not in the grid"),
    (GRID.replace('name = "mine"\n', ""), r"name"),
    (GRID.replace("epochs = 50", "epochs = 50\nseed = 1"), r"unknown \[\[overrides\]\] field"),
    ("name = [", r"not valid TOML"),
    # Issue 33, item 11: a name is a folder under results/, and numbers are whole numbers.
    (GRID.replace('name = "mine"', 'name = "../../escape"'), r"sweep name '\.\./\.\./escape' must "
                                                             r"be a plain name"),
    (GRID.replace('name = "mine"', 'name = "a/b"'), r"must be a plain name"),
    (GRID.replace("train_images = [100, 400]", 'train_images = ["100", 400]'),
     r"each of train_images must be a whole number, got '100'"),
    (GRID.replace("train_images = [100, 400]\n", "train_images = [100.5, 400]\n"),
     r"each of train_images must be a whole number, got 100\.5"),
    (GRID.replace("epochs = 5\n", 'epochs = "5"\n'), r"epochs must be a whole number, got '5'"),
    (GRID.replace("epochs = 5\n", "epochs = 5\ntest_images = 200.5\n"),
     r"test_images must be a whole number"),
])
def test_bad_grid_files_stop_with_one_sentence_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as raised:
        grids.load_grid(path)
    assert "bad.toml" in str(raised.value)


def test_missing_grid_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        grids.load_grid(tmp_path / "nope.toml")


def test_sweep_grid_runs_a_user_file(tmp_path):
    from tftransfer import cli

    folder = helpers.make_image_folder(tmp_path / "images", classes=("a", "b"), per_class=6,
                                       split=True)
    source = helpers.make_source(tmp_path / "src", num_classes=3)
    path = tmp_path / "mine.toml"
    path.write_text(f'name = "mine"\nsources = ["{source}"]\ntargets = ["{folder}"]\n'
                    f'train_images = [4]\nunfrozen_blocks = [0]\nseeds = [0, 1]\nepochs = 2\n')
    results = tmp_path / "results"
    assert cli.main(["sweep", "--grid", str(path), "--results", str(results)]) == 0
    with open(results / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["seed"] for row in rows) == ["0", "1"]
    assert {row["sweep"] for row in rows} == {"mine"}
