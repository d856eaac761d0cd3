"""Folder hygiene (issue 36 point 7): image files that decode but do not look like photos of
the task are named in one warning line, and ``--strict-images`` refuses them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from tftransfer import data
from tftransfer.data import hygiene
from tftransfer.errors import UserError
from tests import helpers


def _photo_folder(root):
    """A JPEG folder (train/ and test/, classes cat and dog) with a GIF placeholder among
    the cats, a JPEG named like a placeholder, and a test dog that is a training dog."""
    root = helpers.make_image_folder(root, per_class=6, split=True, fmt="jpg")
    pixels = np.full((20, 24, 3), 200, np.uint8)
    Image.fromarray(pixels).save(root / "train" / "cat" / "Image Not Found.gif")
    Image.fromarray(pixels).save(root / "train" / "dog" / "no_image-available.jpg")
    shutil.copy(root / "train" / "dog" / "2.jpg", root / "test" / "dog" / "copy.jpg")
    return root


@pytest.fixture
def folder(tmp_path):
    return _photo_folder(tmp_path / "photos")


def test_each_kind_of_suspect_is_found_and_nothing_else(folder):
    files = [f for split in ("train", "test") for f in sorted((folder / split).rglob("*.*"))]
    suspects = {s.path: s.reason for s in hygiene.find_suspects(files, folder)}
    assert suspects == {"train/cat/Image Not Found.gif": "placeholder name; gif among 20 jpeg",
                        "train/dog/no_image-available.jpg": "placeholder name",
                        "test/dog/copy.jpg": "same bytes as train/dog/2.jpg"}


def test_loading_names_them_in_one_warning_line_and_uses_them(folder, capsys):
    target = data.load(str(folder))
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("warning: 3 image file(s)")
    for name in ("Image Not Found.gif", "no_image-available.jpg", "copy.jpg"):
        assert name in lines[0]
    assert "--strict-images refuses them" in lines[0]
    assert len(target.train.labels) == 14 and len(target.test.labels) == 7


def test_strict_images_refuses_them_in_one_sentence_and_dropping_it_loads(folder):
    with pytest.raises(UserError, match=r"^--strict-images: 3 file\(s\) in .* drop "
                                        r"--strict-images\.$"):
        data.load(str(folder), strict_images=True)
    assert len(data.load(str(folder)).train.labels) == 14  # the advice: drop the flag


def test_the_transfer_flag_exits_2_before_any_training(folder, tmp_path):
    code, _, err = helpers.run_cli("transfer", "--target", folder, "--source",
                                   helpers.make_source(tmp_path / "src"), "--strict-images",
                                   "--out", tmp_path / "run")
    assert code == 2 and err.startswith("error: --strict-images: 3 file(s)")
    assert err.count("\n") == 1 and not (tmp_path / "run" / "history.csv").exists()


def test_a_long_list_is_shortened(tmp_path):
    root = helpers.make_image_folder(tmp_path / "copies", per_class=8)
    for index in range(1, 8):  # seven copies of cat/0.png
        shutil.copy(root / "cat" / "0.png", root / "cat" / f"{index}.png")
    suspects = hygiene.find_suspects(sorted(root.rglob("*.png")), root)
    assert len(suspects) == 7
    with pytest.raises(UserError, match=r": 7 file\(s\) .*, cat/5.png \(same bytes as "
                                        r"cat/0.png\) and 2 more; remove"):
        hygiene.check_images(sorted(root.rglob("*.png")), root, strict=True)


def test_a_clean_folder_and_a_two_format_folder_say_nothing(tmp_path, capsys):
    root = helpers.make_image_folder(tmp_path / "clean", per_class=6, fmt="png")
    helpers.make_image_folder(tmp_path / "clean", classes=("cow",), per_class=6, fmt="jpg",
                              seed=1)
    assert hygiene.check_images(sorted(root.rglob("*.*")), root) == []
    assert capsys.readouterr().err == ""
