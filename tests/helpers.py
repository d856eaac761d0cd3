"""Small fixtures shared by the test modules: tiny image folders and tiny models, a
class-wide temporary folder, a save/reload/compare check and a simulated kill."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import tensorflow as tf
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

    from tftransfer.models import resnet
    from tftransfer.sources import saving

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


class TempRootTestCase(tf.test.TestCase):
    """A ``tf.test.TestCase`` with one temporary folder for the whole class, ``cls.root``
    (named after ``ROOT_PREFIX``), removed after its last test: for fixtures (a source, an
    export, an image folder) that several tests only read."""

    ROOT_PREFIX = "tftransfer_test_"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = Path(tempfile.mkdtemp(prefix=cls.ROOT_PREFIX))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)
        super().tearDownClass()


def assert_save_and_reload(test, model, inputs, directory, config=None, atol=1e-6, rtol=1e-6):
    """keras-hub's ``run_model_saving_test`` for the toolkit's model files: saves ``model``
    as a model directory (``saving.save_model_dir``), loads it back with
    ``saving.load_model`` and checks that the reloaded model has the same class, Keras config
    and outputs on ``inputs``.

    Args:
      test: the running ``tf.test.TestCase``.
      model: the Keras model.
      inputs: a batch it takes.
      directory: where the model directory goes.
      config: its ``config.json`` (default: ``{}``).
      atol, rtol: tolerances of the output comparison.

    Returns:
      The reloaded model, for checks of its own.
    """
    from tftransfer.sources import saving

    saving.save_model_dir(model, directory, dict(config or {}))
    reloaded = saving.load_model(directory)
    test.assertIs(type(reloaded), type(model))
    # As JSON, the form the file stores: a reloaded config has lists where shapes were tuples.
    test.assertTrue(_as_json(reloaded.get_config()) == _as_json(model.get_config()),
                    "the reloaded model's get_config() differs from the saved model's")
    test.assertAllClose(reloaded(inputs, training=False), model(inputs, training=False),
                        atol=atol, rtol=rtol)
    return reloaded


def _as_json(config: dict):
    return json.loads(json.dumps(config, sort_keys=True))


@contextlib.contextmanager
def killed_after_epoch(epoch: int):
    """Inside the block, a fit() with a ``callbacks.HistoryCSV`` raises KeyboardInterrupt
    right after the history row of ``epoch`` (1-based) is written, as if the process were
    killed then (after that epoch's checkpoint: the backup callback runs before)."""
    from tftransfer.training.callbacks import HistoryCSV

    original = HistoryCSV.on_epoch_end

    def on_epoch_end(callback, index, logs=None):
        original(callback, index, logs)
        if index + 1 == epoch:
            raise KeyboardInterrupt
    with mock.patch.object(HistoryCSV, "on_epoch_end", on_epoch_end):
        yield


def run_cli(*argv) -> tuple[int, str, str]:
    """Runs the CLI in-process; returns (exit code, stdout, stderr)."""
    from tftransfer import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as exit_:  # --help, argparse errors
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def make_row(source, seed, accuracy, target="cifar10", n=100, blocks=0, epochs=3, curve=None):
    """One results row as the sweep writes it (plus an extra column the report must ignore)."""
    row = {"run_key": f"{target}-{source}-{n}-{blocks}-{epochs}-{seed}", "source": source,
           "source_attack": "none" if source.startswith("natural") else "l2",
           "source_eps": 0.0 if source.startswith("natural") else 3.0, "target": target,
           "train_images": n, "unfrozen_blocks": blocks, "epochs": epochs, "seed": seed,
           "test_accuracy": accuracy, "test_loss": 1.0 - accuracy, "train_seconds": 1.0,
           "git_commit": "abc", "learning_rate": 0.01}
    for epoch, value in enumerate(curve or [], start=1):
        row[f"test_accuracy_epoch_{epoch}"] = value
    return row


# A tiny torchvision-layout ResNet for checkpoint-conversion tests, and a normalisation that is
# not ImageNet's (so a normalizer that is not copied shows up).
TINY_ARCH, TINY_WIDTH, TINY_CLASSES, TINY_SIZE = "resnet18", 0.125, 5, 32
ROBUST_MEAN = (0.5, 0.4, 0.3)
ROBUST_STD = (0.2, 0.25, 0.3)


def save_checkpoint(model, fmt, directory, mean=ROBUST_MEAN, std=ROBUST_STD, entry="model"):
    """``torch_resnet.save_checkpoint`` with the tests' (non-ImageNet) normalisation."""
    from tftransfer.models.torch_resnet import save_checkpoint as save

    return save(model, fmt, directory, mean, std, entry)


def small_sweep(source_dirs, target, **kwargs):
    """A two-epoch grid over ``source_dirs`` on ``target`` (N = 6 and 9, seeds 0 and 1, head
    only, batch 4), ``kwargs`` replacing any of its fields."""
    from tftransfer.config import SweepConfig

    settings = dict(name="test", sources=tuple(str(s) for s in source_dirs), targets=(target,),
                    train_images=(6, 9), unfrozen_blocks=(0,), seeds=(0, 1), epochs=2,
                    recipe=("data.batch_size=4", "head_init=glorot"))
    settings.update(kwargs)
    return SweepConfig(**settings)
