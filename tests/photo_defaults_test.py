"""A newcomer's defaults on a folder of photos: a training length that is a step budget
(``--epochs auto``), the image sizes read from a sample spread over the classes, and a first
line that says how the photos meet a small source."""

from __future__ import annotations

import dataclasses
import json
import shutil
from unittest import mock

import pytest
from PIL import Image

from tftransfer import config, finetune
from tftransfer.config import length
from tftransfer.data import image_sizes
from tftransfer.finetune import input_plan
from tftransfer.sources import hub, registry
from tftransfer.sweeps import cells, fingerprint
from tests import helpers


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photo_defaults")
    # 100x80 photos (PIL's width x height; numpy's shape is height, width), 12 per class.
    helpers.make_image_folder(root / "photos", per_class=12, size=(80, 100))
    helpers.make_source(root / "src", num_classes=10)  # a 32 px source
    return root


@pytest.fixture
def small_budget():
    """The auto rule with a budget a test trains in seconds: >= 20 steps, >= 2 epochs."""
    with mock.patch.object(length, "AUTO_MIN_STEPS", 20), \
            mock.patch.object(length, "AUTO_MIN_STEPS_HEAD_ONLY", 20), \
            mock.patch.object(length, "AUTO_MIN_EPOCHS", 2):
        yield


# ----------------------------------------------------------------------------- the length

def test_auto_is_the_default_and_gives_at_least_the_step_budget_on_small_and_large_targets():
    assert config.TransferConfig(target="x").epochs == length.EPOCHS_AUTO
    budget = length.AUTO_MIN_STEPS
    for images, batch in ((10, 128), (100, 128), (503, 64), (50_000, 128), (1_000_000, 128)):
        resolved = length.training_length("auto", None, images, batch)
        per_epoch = -(-images // batch)
        assert resolved.epochs * per_epoch >= budget, images
        assert length.AUTO_MIN_EPOCHS <= resolved.epochs <= length.AUTO_MAX_EPOCHS
        assert resolved.rule.startswith("auto: ")
    photo = length.training_length("auto", None, 503, 64)  # 8 steps an epoch
    assert (photo.epochs, photo.rule) == (63, "auto: >= 500 steps of batch 64 over 503 images")
    assert photo.describe() == "auto = 63 epochs (>= 500 steps of batch 64 over 503 images)"
    large = length.training_length("auto", None, 50_000, 128)  # 391 steps an epoch
    assert large.epochs == length.AUTO_MIN_EPOCHS and "at least 10 epochs" in large.rule
    # The head alone: a larger budget (its steps are nearly free on cached features).
    head = length.training_length("auto", None, 100, 128, head_only=True)
    assert head.epochs == length.AUTO_MIN_STEPS_HEAD_ONLY > length.AUTO_MIN_STEPS
    assert head.rule == "auto: >= 8000 steps of batch 128 over 100 images"


def test_explicit_epochs_steps_recipes_and_sweep_cells_keep_their_meaning():
    command = "python main.py transfer --target x "
    assert helpers.config_from_command(command).epochs == "auto"
    assert helpers.config_from_command(command + "--epochs auto").epochs == "auto"
    assert helpers.config_from_command(command + "--epochs 7").epochs == 7
    steps = helpers.config_from_command(command + "--steps 300")
    assert (steps.steps, steps.epochs) == (300, "auto")
    assert helpers.config_from_command(command + "--recipe utrera2021").epochs == 150
    assert helpers.config_from_command(command + "--recipe utrera2021 --epochs 20").epochs == 20
    assert config.apply_overrides(config.TransferConfig(target="x"),
                                  ["epochs=20"]).epochs == 20
    assert config.apply_overrides(config.TransferConfig(target="x", epochs=3),
                                  ["epochs=auto"]).epochs == "auto"
    with pytest.raises(Exception, match="epochs must be at least 1"):
        config.apply_overrides(config.TransferConfig(target="x"), ["epochs=soon"])
    assert length.training_length(7, None, 100, 128).epochs == 7
    assert length.training_length("auto", 300, 100, 32).epochs == 75  # 4 steps an epoch
    sweep = helpers.small_sweep(["a"], "t", epochs=3)
    cell = cells.cells(sweep)[0]
    assert cells.transfer_config(sweep, cell, "runs").epochs == 3
    # A grid cell of 10 epochs (the old default) keeps the fingerprint its rows have.
    assert "epochs" not in fingerprint.fingerprint(config.TransferConfig(
        target="x", epochs=10)).fields


def test_a_default_run_trains_the_resolved_epochs_and_records_the_rule(photos, tmp_path,
                                                                       small_budget):
    cfg = config.TransferConfig(target=str(photos / "photos"), source=str(photos / "src"),
                                out=str(tmp_path / "run"), eval_every=0,
                                data=config.DataConfig(augment=False, batch_size=4))
    result = finetune.fine_tune(cfg, verbose=False)
    images = result["train_images"]
    per_epoch = -(-images // 4)
    assert result["epochs"] == -(-20 // per_epoch) and result["sgd_steps"] >= 20
    assert result["epochs_rule"] == f"auto: >= 20 steps of batch 4 over {images} images"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs_rule"] == result["epochs_rule"]
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["resolved_config"]
    assert resolved["epochs"] == result["epochs"]
    explicit = finetune.fine_tune(dataclasses.replace(cfg, epochs=1, out=str(tmp_path / "one")),
                                  verbose=False)
    assert explicit["epochs"] == 1 and "epochs_rule" not in explicit


def test_auto_epochs_thin_the_default_curve_and_keep_a_chosen_one():
    auto = length.training_length("auto", None, images=100, batch_size=128)  # 500 epochs
    assert length.auto_eval_every(1, auto) == 25  # at most 20 curve points
    assert length.auto_eval_every(0, auto) == 0
    assert length.auto_eval_every(7, auto) == 7
    given = length.training_length(500, None, images=100, batch_size=128)
    assert length.auto_eval_every(1, given) == 1  # numeric epochs: as asked


# ----------------------------------------------------------------------------- the first line

def test_the_first_stderr_line_states_source_size_crop_and_length(photos, tmp_path,
                                                                  small_budget):
    # A duplicate file: the folder's hygiene warning, printed while the target loads, comes
    # after the first line, and so does the precision auto chose.
    folder = tmp_path / "photos"
    shutil.copytree(photos / "photos", folder)
    shutil.copy(folder / "cat" / "0.png", folder / "cat" / "copy.png")
    code, out, err = helpers.run_cli("transfer", "--target", folder, "--source",
                                     photos / "src", "--batch-size", "4", "--eval-every", "0",
                                     "--out", tmp_path / "run")
    assert code == 0, err
    first, *rest = err.splitlines()
    assert any(line.startswith("warning: 1 image file(s)") for line in rest), err
    assert "precision: float32 (auto: no GPU)" in rest or "precision:" not in err
    assert first.startswith(f"source {photos / 'src'} (32 px); 100x80 photos are resized and "
                            f"centre-cropped to 64 px (the input size for a small source on "
                            f"photos; the source's own is 32 px); --image-size 32 "), first
    images = json.loads(out.splitlines()[-1])["train_images"]
    epochs = -(-20 // -(-images // 4))
    assert first.endswith(f"; training: auto = {epochs} epochs (>= 20 steps of batch 4 over "
                          f"{images} images)"), first
    assert json.loads(out.splitlines()[-1])["epochs_rule"].startswith("auto: >= 20 steps")


def test_a_photo_sized_input_rule_and_image_size_overriding_it(photos, tmp_path):
    cfg = config.TransferConfig(target=str(photos / "photos"))
    sizes = image_sizes.folder_sample(photos / "photos")
    assert registry.photo_input_size(32, sizes.shorter_side) == registry.SMALL_SOURCE_PHOTO_SIZE
    assert input_plan.photo_input_size(cfg, 32, lambda: sizes) == 64  # the measured rule
    with mock.patch.object(registry, "SMALL_SOURCE_PHOTO_SIZE", 32):
        assert input_plan.photo_input_size(cfg, 32, lambda: sizes) is None  # the source's own
    with mock.patch.object(registry, "SMALL_SOURCE_PHOTO_SIZE", 64):
        assert registry.photo_input_size(32, 375) == 64
        assert registry.photo_input_size(32, 48) == 48  # not above the photos' side
        assert registry.photo_input_size(224, 375) == 224  # not a small source
        assert input_plan.photo_input_size(cfg, 32, lambda: sizes) == 64
        given = config.TransferConfig(target=cfg.target, data=config.DataConfig(image_size=32))
        assert input_plan.photo_input_size(given, 32, lambda: sizes) is None  # --image-size
        run = config.TransferConfig(target=cfg.target, source=str(photos / "src"), epochs=1,
                                    out=str(tmp_path / "run"), eval_every=0,
                                    data=config.DataConfig(augment=False, batch_size=8))
        finetune.fine_tune(run, verbose=False)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["image_size"] == 64
    assert recorded["resolved_config"]["data"]["image_size"] == 64


# ----------------------------------------------------------------------------- the size sample

def _photo(path, width, height):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (120, 80, 40)).save(path)


def test_the_size_sample_spreads_over_classes_and_reports_median_and_range(tmp_path):
    folder = tmp_path / "mixed"
    _photo(folder / "a" / "0.png", 300, 200)  # the first file, far from the median
    for i in range(1, 40):
        _photo(folder / "a" / f"{i}.png", 40, 30)
    for i in range(40):
        _photo(folder / "b" / f"{i}.png", 40, 30)
        _photo(folder / "c" / f"{i}.png", 60, 60)  # sorted last: read only if spread
    sample = image_sizes.folder_sample(folder)
    assert len(sample.sizes) == image_sizes.SAMPLE_LIMIT and sample.total == 120
    assert (300, 200) in sample.sizes and (60, 60) in sample.sizes
    assert sample.median == (40, 30) and sample.side_range == (30, 300)
    assert sample.describe() == "40x30 px median, sides 30-300 px, 50 of 120 files read"
    name, reason = registry.default_for(str(folder), hub.native_image_size(str(folder)))
    # The median's longer side decides (40 px: the small source), not the first file's 300.
    assert name == registry.DEFAULT_SOURCE
    assert f"{folder}'s images are 40x30 px median, sides 30-300 px" in reason
