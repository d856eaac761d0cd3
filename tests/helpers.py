"""Small fixtures shared by the test modules: tiny image folders and tiny models."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SHARED_TFDS = REPO.parent / "shared" / "tfds"


def make_image_folder(root, classes=("cat", "dog"), per_class=6, size=(20, 24), split=False,
                      seed=0, fmt="png", mode="RGB"):
    """Writes a folder of random images, one sub-folder per class; with ``split`` it writes
    ``train/`` and ``test/`` sub-folders. Class k's images are brighter for larger k, so a
    model can learn them."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    parts = {"train": per_class, "test": max(2, per_class // 2)} if split else {"": per_class}
    for part, count in parts.items():
        for label, name in enumerate(classes):
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                base = 40 + 160 * label / max(1, len(classes) - 1)
                pixels = np.clip(rng.normal(base, 20, size + (3,)), 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels).convert(mode)
                image.save(folder / f"{i}.{fmt}")
    return root


def make_source(directory, num_classes=10, size=32, seed=0):
    """A small random resnet20 (a quarter of the width) saved as a model directory."""
    import keras

    from tftransfer import resnet, saving

    keras.utils.set_random_seed(seed)
    model = resnet.build("resnet20", num_classes, size, width=0.25)
    saving.save_model_dir(model, directory, {"arch": "resnet20", "image_size": size,
                                             "attack": {"attack": "none"}})
    return directory


def config_from_command(command: str):
    """The TransferConfig that a ``python main.py transfer ...`` command line trains (parsed
    by the real CLI parser): how tests check a printed command against its config."""
    from tftransfer.commands import transfer as transfer_command

    words = shlex.split(command)
    if words[:3] != ["python", "main.py", "transfer"]:
        raise ValueError(f"not a transfer command: {command!r}")
    parser = argparse.ArgumentParser(prog="main.py")
    transfer_command.register(parser.add_subparsers())
    return transfer_command.config_from_args(parser.parse_args(words[2:]))

