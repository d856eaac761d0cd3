"""Errors that recommend a flag give advice that works: each test triggers the error, then
follows the advice and checks that the run or load then goes through (issue 36 point 4:
``--recipe utrera2021`` on a photo folder recommended ``--normalization subset``, which the
recipe then overrode).

Advice followed here: ``--normalization subset`` / ``source`` (no recorded statistics; a
source without a ``normalize`` layer), ``--unfrozen-blocks`` for an unregistered network,
``use 0..N`` for too many blocks or stages, ``--epochs`` or ``--steps``, ``--data-dir`` for
a dataset that is not prepared, and with ``--resume``: ``run without --resume`` (no
checkpoint yet) and ``give --epochs N or more``. Elsewhere: ``drop --strict-images``
(``hygiene_test``), ``drop --seed`` with ``--resume`` (``transfer_resume_test``).
"""

from __future__ import annotations

import dataclasses
import json

import keras
import pytest

from tftransfer import config, data, finetune
from tftransfer.errors import UserError
from tftransfer.finetune.networks import unfrozen_block_names
from tftransfer.models import architectures, resnet
from tftransfer.sources import saving
from tests import helpers


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("advice")
    helpers.make_image_folder(root / "photos", per_class=6, split=True, fmt="jpg")
    helpers.make_source(root / "src")
    return root


def _transfer(root, out, *flags):
    return helpers.run_cli("transfer", "--target", root / "photos", "--source", root / "src",
                           "--batch-size", "4", "--out", root / out, "--quiet", *flags)


def test_normalization_subset_works_with_the_recipe_on_a_photo_folder(photos):
    code, _, err = _transfer(photos, "recipe", "--recipe", "utrera2021", "--epochs", "1")
    assert code == 2 and "use --normalization subset (computed from the training images) " \
                          "or source." in err
    code, _, err = _transfer(photos, "subset", "--recipe", "utrera2021", "--epochs", "1",
                             "--normalization", "subset")
    assert code == 0, err
    resolved = json.loads((photos / "subset" / "config.json").read_text())["resolved_config"]
    assert (resolved["normalization"], resolved["recipe"]) == ("subset", "utrera2021")
    assert resolved["frozen_bn"] == "train"  # the rest of the recipe still applies
    # The other advice, source, reaches the config the same way (and is every run's default).
    assert helpers.config_from_command(
        f"python main.py transfer --target {photos / 'photos'} --recipe utrera2021 "
        f"--normalization source").normalization == "source"


@pytest.fixture(scope="module")
def plain_source(tmp_path_factory):
    """A network no architecture record describes, without a ``normalize`` layer."""
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(5, name="fc")(features), name="plain")
    directory = tmp_path_factory.mktemp("plain") / "src"
    saving.save_model_dir(model, directory, {"arch": "plain", "image_size": 32,
                                             "attack": {"attack": "none"}})
    return directory


def test_use_normalization_source_and_use_unfrozen_blocks_on_an_unregistered_source(
        photos, plain_source):
    def run(name, **fields):
        return finetune.fine_tune(config.TransferConfig(
            target=str(photos / "photos"), source=str(plain_source), epochs=1,
            out=str(photos / name), **fields), verbose=False)
    with pytest.raises(UserError, match="use --normalization source"):
        run("plain-subset", normalization="subset")
    assert run("plain-source", normalization="source")["test_images"] == 6
    with pytest.raises(UserError, match=r"\(use --unfrozen-blocks\)"):
        run("plain-stages", unfrozen_stages=1)
    assert run("plain-blocks", unfrozen_blocks=0)["unfrozen_blocks"] == 0


def test_use_0_to_n_blocks_or_stages():
    model = resnet.build("resnet20", 10, 32, width=0.25)
    with pytest.raises(UserError, match=r"use 0\.\.9, or -1 for all"):
        unfrozen_block_names(model, 10)
    assert len(unfrozen_block_names(model, 9)) == len(unfrozen_block_names(model, -1)) == 9
    with pytest.raises(UserError, match=r"use 0\.\.3\.$"):
        architectures.blocks_of_last_stages(model, 4)
    assert architectures.blocks_of_last_stages(model, 3) == 9


def test_give_epochs_or_steps():
    command = "python main.py transfer --target x "
    with pytest.raises(UserError, match="Give --epochs or --steps, not both"):
        helpers.config_from_command(command + "--epochs 5 --steps 100")
    assert helpers.config_from_command(command + "--epochs 5").epochs == 5
    assert helpers.config_from_command(command + "--steps 100").steps == 100


@pytest.mark.skipif(not (helpers.SHARED_TFDS / "mnist").is_dir(), reason="no shared TFDS")
def test_point_data_dir_at_a_folder_that_has_the_dataset(tmp_path):
    with pytest.raises(UserError, match="point --data-dir"):
        data.load("mnist", data_dir=str(tmp_path), download=False)
    target = data.load("mnist", data_dir=str(helpers.SHARED_TFDS), download=False)
    assert target.num_classes == 10


def test_run_without_resume_then_give_enough_epochs(photos):
    cfg = config.TransferConfig(target=str(photos / "photos"), source=str(photos / "src"),
                                epochs=2, out=str(photos / "resumed"))
    with pytest.raises(UserError, match="run without --resume to start the run"):
        finetune.fine_tune(cfg, resume=True, verbose=False)
    first = finetune.fine_tune(cfg, checkpoint=True, verbose=False)  # the advice
    fewer = dataclasses.replace(cfg, epochs=1)
    with pytest.raises(UserError, match="give --epochs 2 or more"):
        finetune.fine_tune(fewer, resume=True, verbose=False)
    again = finetune.fine_tune(cfg, resume=True, verbose=False)  # the advice: 2 epochs
    assert again["test_accuracy"] == first["test_accuracy"]
