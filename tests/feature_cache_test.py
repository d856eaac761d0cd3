"""The feature cache's memory budget (issue 23, point 5): features beyond it go to disk and
stream back, and a run gives exactly the in-memory result."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tftransfer import config
from tftransfer.finetune import feature_store, scratch
from tftransfer.sources import saving
from tftransfer import finetune
from tests import helpers


def _run(tmp_path, name, budget, loop="auto", blocks=3):
    folder = tmp_path / "images"
    if not folder.exists():
        helpers.make_image_folder(folder, classes=("a", "b", "c"), per_class=10, split=True)
        helpers.make_source(tmp_path / "src", num_classes=5)
    cfg = config.TransferConfig(
        target=str(folder), source=str(tmp_path / "src"), out=str(tmp_path / name),
        epochs=6, eval_every=2, unfrozen_blocks=blocks, training_loop=loop,
        curve_test_images=6, data=config.DataConfig(augment=False, batch_size=8))
    cache = finetune.RunCache(memory_budget=budget)
    result = finetune.fine_tune(cfg, cache=cache, verbose=False)
    return result, saving.load_model(tmp_path / name), cache


@pytest.mark.parametrize("loop", ["compiled", "fit"])
def test_a_run_on_disk_features_matches_the_in_memory_run(tmp_path, loop):
    memory, memory_model, memory_cache = _run(tmp_path, "memory", None, loop)
    disk, disk_model, disk_cache = _run(tmp_path, "disk", 0, loop)  # nothing fits in memory
    assert memory_cache.disk.size() == 0 and memory_cache.memory_used > 0
    assert disk_cache.disk.size() > 0 and disk_cache.memory_used == 0
    for a, b in zip(memory_model.get_weights(), disk_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    for key in ("test_accuracy", "test_loss", "test_accuracy_epoch_2", "test_accuracy_epoch_6"):
        assert disk[key] == memory[key]


@pytest.mark.parametrize("loop", ["compiled", "fit"])
def test_disk_and_memory_sum_the_same_evaluation_batches(tmp_path, monkeypatch, loop):
    """With evaluation batches of one image (every path takes its batch size from
    feature_store.evaluation_batch_size), the run on disk still equals the in-memory run,
    test loss included: both sum the same batches."""
    monkeypatch.setattr(feature_store, "EVALUATION_BATCH_BYTES", 1)
    assert feature_store.evaluation_batch_size(4096) == 1
    memory, _, _ = _run(tmp_path, "memory", None, loop)
    disk, _, _ = _run(tmp_path, "disk", 0, loop)
    for key in ("test_accuracy", "test_loss", "test_accuracy_epoch_2", "test_accuracy_epoch_6"):
        assert disk[key] == memory[key]


def test_the_disk_folder_goes_with_its_cache(tmp_path):
    _, _, cache = _run(tmp_path, "disk", 0, blocks=0)
    folder = cache.disk.path
    assert folder.is_dir() and list(folder.glob("*.f32"))
    del cache
    import gc
    gc.collect()
    assert not folder.exists()


def test_a_killed_runs_feature_folder_is_removed_by_the_next_run(tmp_path, capsys):
    """kill -9 (or a SIGTERM without a handler) runs no clean-up: the next process that
    makes a feature folder removes those whose owner has ended, and no live one."""
    root = tmp_path / "scratch"
    # The module alone, without TensorFlow: a process that makes a folder, then is killed.
    script = ("import importlib.util, os, signal; "
              f"spec = importlib.util.spec_from_file_location('scratch', {scratch.__file__!r}); "
              "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
              f"folder = module.ScratchFolder('features-', {str(root)!r}).create(); "
              "(folder / 'features-00001.f32').write_bytes(bytes(1000)); "
              "print(folder, flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=helpers.REPO)
    assert done.returncode == -signal.SIGKILL, done.stderr
    killed = Path(done.stdout.strip())
    assert killed.is_dir() and killed.parent == root
    owner = type("Owner", (), {})()
    disk = feature_store.DiskFolder(owner, root)
    disk.new_file()
    assert not killed.exists() and disk.path.is_dir()
    assert "removed 1 feature folder(s) of ended runs" in capsys.readouterr().err
    another = scratch.ScratchFolder("features-", root)
    another.create()  # the disk folder's owner lives (its lock is held): it stays
    assert disk.path.is_dir() and another.removed == []
    disk.close()
    another.close()
    assert list(root.iterdir()) == []


def test_a_failing_run_removes_its_feature_folder_on_the_way_out(tmp_path, monkeypatch):
    """The run's own cache is closed when an exception (SIGTERM's too, once turned into
    one at the CLI's edge) leaves fine_tune, while its traceback still holds the cache."""
    import tempfile

    from tftransfer.finetune import run as run_module

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    folders = []

    def fail(*args, **kwargs):  # training starts after the features are on disk
        folders.extend(scratch.scratch_root().iterdir())
        raise RuntimeError("stopped")
    monkeypatch.setattr(run_module, "train", fail)
    helpers.make_image_folder(tmp_path / "images", classes=("a", "b"), per_class=6, split=True)
    helpers.make_source(tmp_path / "src", num_classes=5)
    cfg = config.TransferConfig(target=str(tmp_path / "images"), source=str(tmp_path / "src"),
                                out=str(tmp_path / "run"), epochs=1,
                                data=config.DataConfig(augment=False, batch_size=4))
    with pytest.raises(RuntimeError, match="stopped") as failure:
        finetune.fine_tune(cfg, verbose=False, feature_cache_memory=0)
    # `failure` keeps the traceback, and with it the cache, alive: no garbage collection
    # removes the folder here (nor would it for a handler that logs and carries on).
    assert failure.tb is not None and folders
    assert list((tmp_path / "tmp").glob("tftransfer-*/*")) == []


def test_a_view_reads_rows_across_memory_and_disk_chunks(tmp_path):
    memory = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    disk = feature_store.DiskChunk(tmp_path / "chunk.f32", memory.shape)
    disk.append(-memory[:2])
    disk.append(-memory[2:])
    disk.close()
    chunks = [memory, disk]
    where = {10: (0, 0), 11: (0, 1), 12: (0, 2), 20: (1, 0), 21: (1, 1), 22: (1, 2)}
    view = feature_store.view_of(chunks, where, [21, 10, 12, 20])
    assert not view.in_memory and len(view) == 4 and view.shape == (2, 2)
    np.testing.assert_array_equal(view.read([0, 1, 2, 3]),
                                  np.stack([-memory[1], memory[0], memory[2], -memory[0]]))
    assert view.subset([1, 2]).in_memory
    batches = list(view.batches(np.arange(4), batch_size=3))
    np.testing.assert_array_equal(batches[1][0].numpy(), -memory[:1])


def test_sizes_parse_with_units():
    assert config.parse_size("2GB") == 2 * 10 ** 9
    assert config.parse_size("1.5 GiB") == int(1.5 * 2 ** 30)
    assert config.parse_size("0") == 0
    with pytest.raises(Exception, match="not a size"):
        config.parse_size("lots")


def test_a_long_extraction_reports_images_per_second_and_eta(tmp_path, monkeypatch, capsys):
    import tensorflow as tf

    monkeypatch.setattr(feature_store, "PROGRESS_EVERY", 0.0)  # every batch counts as long
    images = tf.data.Dataset.from_tensor_slices((np.ones((6, 2), np.float32), np.arange(6)))
    owner = type("Owner", (), {})()  # the folder lives as long as its owner
    disk = feature_store.DiskFolder(owner)
    chunk = feature_store.extract(lambda x: x * 2, images.batch(2), 6, lambda n: False, disk,
                                  progress=True)
    assert isinstance(chunk, feature_store.DiskChunk) and chunk.shape == (6, 2) and chunk[0][0, 0] == 2
    lines = capsys.readouterr().err.splitlines()
    assert any("images/s, ETA" in line for line in lines)
    assert "6 images in" in lines[-1] and "on disk in" in lines[-1]
    feature_store.extract(lambda x: x, images.batch(2), 6, lambda n: False, disk,
                          progress=False)
    assert capsys.readouterr().err == ""


def test_a_training_set_is_held_as_tensors_only_if_its_copies_fit(tmp_path, monkeypatch):
    """The array read and its tensor both count: with room for one copy but not two, the
    training set streams from the stored features (the same batches: the same result)."""
    from tftransfer.finetune import compiled_loop
    from tftransfer.finetune import run_cache as feature_cache

    seen = []
    real = compiled_loop.fit_compiled
    monkeypatch.setattr(compiled_loop, "fit_compiled", lambda trainer, train_ds, *a, **k: (
        seen.append(train_ds), real(trainer, train_ds, *a, **k))[1])
    held, _, cache = _run(tmp_path, "held", None, "compiled")
    assert isinstance(seen[-1], compiled_loop.IndexedBatches)
    one_copy = int(np.prod(seen[-1].features.shape)) * 4
    # As much room left as one copy of the training features: it used to be held, now streams.
    budget = cache.memory_used + one_copy * (feature_cache.TRAINING_SET_COPIES - 1)
    monkeypatch.setattr(finetune.RunCache, "__init__", _with_budget(
        finetune.RunCache.__init__, budget))
    streamed, _, _ = _run(tmp_path, "streamed", None, "compiled")
    assert not isinstance(seen[-1], compiled_loop.IndexedBatches)
    for key in ("test_accuracy", "test_loss", "test_accuracy_epoch_6"):
        assert streamed[key] == held[key]


def _with_budget(init, budget):
    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.memory_budget = budget
    return patched
