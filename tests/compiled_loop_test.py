"""The compiled multi-epoch loop on cached features gives fit()'s result (issue 24)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tftransfer import config
from tftransfer.finetune import compiled_loop
from tftransfer.sources import saving
from tftransfer import finetune
from tests import helpers


def _run(tmp_path, name, loop, blocks, batch_size=8):
    folder = tmp_path / "images"
    if not folder.exists():
        helpers.make_image_folder(folder, classes=("a", "b", "c"), per_class=10, split=True)
        helpers.make_source(tmp_path / "src", num_classes=5)
    cfg = config.TransferConfig(
        target=str(folder), source=str(tmp_path / "src"), out=str(tmp_path / name),
        epochs=12, eval_every=4, unfrozen_blocks=blocks, training_loop=loop,
        data=config.DataConfig(augment=False, batch_size=batch_size))
    result = finetune.fine_tune(cfg, verbose=False)
    model = saving.load_model(tmp_path / name)
    with open(tmp_path / name / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    return result, model, history


# Batches of 8: at most _UNROLLED_STEPS steps per epoch, traced one after another; of 2: more,
# in a loop.
@pytest.mark.parametrize("blocks, batch_size", [(0, 8), (3, 8), (0, 2)])
def test_compiled_loop_matches_fit(tmp_path, blocks, batch_size):
    fitted, fit_model, fit_history = _run(tmp_path, "fit", "fit", blocks, batch_size)
    compiled, compiled_model, compiled_history = _run(tmp_path, "compiled", "compiled", blocks,
                                                      batch_size)
    steps = int(fitted["sgd_steps"]) // 12
    assert (steps <= compiled_loop._UNROLLED_STEPS) == (batch_size == 8)
    assert fitted["feature_cache"] and compiled["feature_cache"]
    for a, b in zip(fit_model.get_weights(), compiled_model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert compiled["test_accuracy"] == pytest.approx(fitted["test_accuracy"], abs=1e-6)
    assert compiled["test_loss"] == pytest.approx(fitted["test_loss"], rel=1e-4)
    curve = [k for k in fitted if k.startswith("test_accuracy_epoch_")]
    assert curve == ["test_accuracy_epoch_4", "test_accuracy_epoch_8", "test_accuracy_epoch_12"]
    for key in curve:
        assert compiled[key] == pytest.approx(fitted[key], abs=1e-6)
    assert list(fit_history[0]) == list(compiled_history[0])  # the same columns, in order
    assert len(compiled_history) == 12
    for a, b in zip(fit_history, compiled_history):
        assert int(a["epoch"]) == int(b["epoch"])
        assert float(b["loss"]) == pytest.approx(float(a["loss"]), rel=1e-4)
        assert float(b["learning_rate"]) == pytest.approx(float(a["learning_rate"]))
        assert (a["test_accuracy"] == "") == (b["test_accuracy"] == "")


def test_auto_uses_the_compiled_loop_only_with_the_cache(tmp_path):
    cached = config.TransferConfig(target="x", unfrozen_blocks=0)
    network = type("N", (), {"cached": True})()
    assert finetune.use_compiled_loop(cached, network)
    network.cached = False
    assert not finetune.use_compiled_loop(cached, network)
    with pytest.raises(Exception, match="feature cache"):
        finetune.use_compiled_loop(
            config.TransferConfig(target="x", training_loop="compiled"), network)


def test_curve_epochs_are_evaluate_everys():
    assert compiled_loop.curve_epochs(12, 5) == [5, 10, 12]
    assert compiled_loop.curve_epochs(10, 5) == [5, 10]
    assert compiled_loop.curve_epochs(7, 0) == [7]


@pytest.mark.parametrize("seed", [0, 3])
def test_epoch_batches_keep_the_per_epoch_shuffle_order(seed):
    """The one-pipeline epoch_batches gives the batches of one Dataset.shuffle(seed=seed *
    1000003 + epoch) per epoch (the construction it replaced), under a global seed; seed 0
    from epoch 0 covers shuffle's (0, 0) seed special case, seed 3 a resumed run."""
    import tensorflow as tf

    from tftransfer import data
    from tftransfer.training import runtime

    runtime.set_seed(seed)
    x = np.arange(10, dtype=np.float32)[:, None]
    examples = tf.data.Dataset.from_tensor_slices((x, np.arange(10)))
    got = [b[0].numpy()[:, 0] for b in data.epoch_batches(examples, 10, 4, seed, 4, first_epoch=seed % 2)]
    expected = [b[0].numpy()[:, 0] for epoch in range(seed % 2, 4) for b in examples.shuffle(
        10, seed=seed * 1_000_003 + epoch, reshuffle_each_iteration=False).batch(4)]
    assert len(got) == len(expected) == 3 * (4 - seed % 2)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(got[0], got[3])  # epochs differ


@pytest.mark.parametrize("seed,first_epoch", [(0, 0), (3, 2)])
def test_epoch_order_is_epoch_batches_over_the_positions(seed, first_epoch):
    """``data.epoch_order`` (what the compiled loop gathers batches by) lists the examples of
    ``epoch_batches``' stream in its order, epoch after epoch, under the run's global seed;
    a second call with the same seeds returns the kept order."""
    import tensorflow as tf

    from tftransfer import data
    from tftransfer.training import runtime

    runtime.set_seed(seed)
    x = np.arange(10, dtype=np.float32)[:, None] * 10
    batches = data.epoch_batches(tf.data.Dataset.from_tensor_slices((x, np.arange(10))),
                                 10, 4, seed, 5, first_epoch)
    streamed = np.concatenate([b[1].numpy() for b in batches])
    order = data.epoch_order(10, seed, 5, first_epoch)
    np.testing.assert_array_equal(order, streamed)
    assert len(order) == 10 * (5 - first_epoch)
    assert data.epoch_order(10, seed, 5, first_epoch) is order
    data.pipelines.forget_epoch_orders()
    again = data.epoch_order(10, seed, 5, first_epoch)
    assert again is not order
    np.testing.assert_array_equal(again, order)
    runtime.set_seed(seed + 1)  # another global seed shuffles differently: not the kept one
    assert not np.array_equal(data.epoch_order(10, seed, 5, first_epoch), order)


def test_the_compiled_loop_keeps_the_final_predictions_for_per_class_accuracy(tmp_path):
    """The per-class accuracy from the compiled loop's kept predictions is the one fit()'s
    run gets from predicting the test set again."""
    import json

    _run(tmp_path, "fit", "fit", 0)
    _run(tmp_path, "compiled", "compiled", 0)
    per_class = [json.loads((tmp_path / name / "metrics.json").read_text())["per_class_accuracy"]
                 for name in ("fit", "compiled")]
    assert per_class[0] == per_class[1] and set(per_class[0]) == {"a", "b", "c"}


def test_indexed_batches_are_the_epoch_batches_stream():
    """The compiled loop's gathered batches (``_indexed_batch`` over ``data.epoch_order``)
    are ``epoch_batches``' batches, for N not a multiple of the batch size and a run
    resumed at epoch 2 (the last batch of each epoch is the short one)."""
    import tensorflow as tf

    from tftransfer import data
    from tftransfer.training import runtime

    runtime.set_seed(5)
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10) % 3
    stream = [b for b in data.epoch_batches(tf.data.Dataset.from_tensor_slices((x, y)),
                                            10, 4, 5, 5, first_epoch=2)]
    order = tf.constant(data.epoch_order(10, 5, 5, first_epoch=2))
    batch_of = compiled_loop._indexed_batch((tf.constant(x), tf.constant(y), order),
                                            tf.constant(0, tf.int64), tf.constant(4, tf.int64))
    gathered = [batch_of(tf.constant(epoch), tf.constant(step))
                for epoch in range(3) for step in range(3)]
    assert [len(b[0]) for b in gathered] == [4, 4, 2] * 3
    for (x_stream, y_stream), (x_gathered, y_gathered) in zip(stream, gathered, strict=True):
        np.testing.assert_array_equal(x_stream.numpy(), x_gathered.numpy())
        np.testing.assert_array_equal(y_stream.numpy(), y_gathered.numpy())


def test_epoch_order_refuses_orders_too_long_to_build():
    from tftransfer import data

    with pytest.raises(ValueError, match="epoch_batches instead"):
        data.epoch_order(data.MAX_ORDER_POSITIONS + 1, 0, 1)


def test_a_network_the_cache_drops_is_freed_with_its_traced_functions(tmp_path):
    """The traced functions refer to their trainer; kept in a table keyed by it, no dropped
    network (a ResNet-50 copy, in a sweep over sources) would ever be freed."""
    import gc
    import weakref

    folder = tmp_path / "images"
    helpers.make_image_folder(folder, classes=("a", "b", "c"), per_class=10, split=True)
    helpers.make_source(tmp_path / "src", num_classes=5)
    cache = finetune.RunCache(max_networks=1)

    def run(blocks):
        cfg = config.TransferConfig(
            target=str(folder), source=str(tmp_path / "src"), out=str(tmp_path / f"b{blocks}"),
            epochs=3, eval_every=1, unfrozen_blocks=blocks, training_loop="compiled",
            data=config.DataConfig(augment=False, batch_size=8))
        finetune.fine_tune(cfg, cache=cache, save_model=False, verbose=False)
        return weakref.ref(next(iter(cache._networks.values())).trainer)

    first = run(0)
    assert first() is not None
    run(3)  # the cache holds one network: the first is dropped
    gc.collect()
    assert first() is None


def test_a_networks_traced_functions_live_on_it_and_serve_its_later_runs(tmp_path):
    folder = tmp_path / "images"
    helpers.make_image_folder(folder, classes=("a", "b", "c"), per_class=10, split=True)
    helpers.make_source(tmp_path / "src", num_classes=5)
    cache = finetune.RunCache()

    def run(seed):
        cfg = config.TransferConfig(
            target=str(folder), source=str(tmp_path / "src"), out=str(tmp_path / f"s{seed}"),
            epochs=3, eval_every=1, unfrozen_blocks=0, training_loop="compiled", seed=seed,
            data=config.DataConfig(augment=False, batch_size=8))
        finetune.fine_tune(cfg, cache=cache, save_model=False, verbose=False)
        (network,) = cache._networks.values()
        return {steps: dict(functions) for steps, functions in network.compiled_functions.items()}

    first, second = run(0), run(1)
    assert len(first) == 1 and first.keys() == second.keys()
    for steps in first:
        assert all(first[steps][name] is second[steps][name] for name in first[steps])
