"""The paper's protocol options (issue 25), each checked against its definition.

- ``--frozen-bn train`` against PyTorch's ``model.train()`` with ``requires_grad=False``:
  one SGD step of a small conv-BN network in both frameworks.
- ``--normalization target`` / ``subset``: the model's normalize layer holds the paper's
  per-dataset constants / the training images' statistics.
- ``--subset random``: robustness' ``make_loaders`` draw, index for index.
- ``--recipe utrera2021``: every field it sets, recorded in the config.
- The paper's augmentation: in range, seeded, none for grayscale targets.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tftransfer import config, data
from tftransfer import finetune
from tftransfer.errors import UserError
from tests import helpers


# ----------------------------------------------------------------------------- BatchNorm

def _keras_bn_net(conv_kernel, fc_kernel):
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, name="fc")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("conv1").kernel.assign(conv_kernel)
    model.get_layer("fc").kernel.assign(fc_kernel)
    model.get_layer("bn1").moving_mean.assign(np.full(4, 0.3, np.float32))
    model.get_layer("bn1").moving_variance.assign(np.full(4, 2.0, np.float32))
    return model


def _torch_bn_step(torch, x, y, conv_kernel, fc_kernel, lr):
    """One SGD step as the paper's code takes it: model.train(), frozen parameters have
    requires_grad=False (tools/helpers.py re_init_and_freeze_blocks)."""
    nn = torch.nn
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    bn = nn.BatchNorm2d(4, eps=1e-5, momentum=0.1)
    fc = nn.Linear(4, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(conv_kernel.transpose(3, 2, 0, 1)))
        fc.weight.copy_(torch.tensor(fc_kernel.T))
        fc.bias.zero_()
        bn.running_mean.fill_(0.3)
        bn.running_var.fill_(2.0)
    for parameter in (*conv.parameters(), *bn.parameters()):
        parameter.requires_grad = False
    net = nn.Sequential(conv, bn, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)
    net.train()
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr)
    loss = nn.functional.cross_entropy(net(torch.tensor(x.transpose(0, 3, 1, 2))),
                                       torch.tensor(y, dtype=torch.long))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss), fc, bn


def test_frozen_bn_train_matches_pytorch_train_mode():
    torch = pytest.importorskip("torch")
    import keras

    from tftransfer.adversarial.train_step import AdversarialTrainer

    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 3, 16).astype(np.int32)
    conv_kernel = rng.normal(0, 0.5, (3, 3, 3, 4)).astype(np.float32)
    fc_kernel = rng.normal(0, 1, (4, 3)).astype(np.float32)
    model = _keras_bn_net(conv_kernel, fc_kernel)
    finetune.freeze(model, unfrozen_blocks=0, frozen_bn="train")
    bn = model.get_layer("bn1")
    gamma, beta = bn.gamma.numpy().copy(), bn.beta.numpy().copy()
    trainer = AdversarialTrainer(model)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1),
                    loss=finetune.classification_loss())
    history = trainer.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)

    torch_loss, torch_fc, torch_bn = _torch_bn_step(torch, x, y, conv_kernel, fc_kernel, 0.1)
    # The forward pass used batch statistics (the loss), the head took the same step.
    np.testing.assert_allclose(history.history["loss"][0], torch_loss, rtol=1e-5)
    np.testing.assert_allclose(model.get_layer("fc").kernel.numpy(),
                               torch_fc.weight.detach().numpy().T, atol=1e-5)
    np.testing.assert_allclose(model.get_layer("fc").bias.numpy(),
                               torch_fc.bias.detach().numpy(), atol=1e-6)
    # Running statistics moved with PyTorch's momentum 0.1 ...
    np.testing.assert_allclose(bn.moving_mean.numpy(), torch_bn.running_mean.numpy(), atol=1e-6)
    # ... the variance from the batch variance: Keras adds the biased one, PyTorch the unbiased
    # one (x n/(n-1), n = batch x height x width = 1024 here, 16,384+ in a real run).
    n = 16 * 8 * 8
    keras_update = bn.moving_variance.numpy() - 0.9 * 2.0
    torch_update = torch_bn.running_var.numpy() - 0.9 * 2.0
    np.testing.assert_allclose(keras_update * n / (n - 1), torch_update, rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), torch_bn.running_var.numpy(),
                               rtol=2e-3)
    # Scale and offset stay frozen, and so does the convolution.
    np.testing.assert_array_equal(bn.gamma.numpy(), gamma)
    np.testing.assert_array_equal(bn.beta.numpy(), beta)
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), conv_kernel)


def test_frozen_bn_inference_keeps_statistics():
    import keras

    from tftransfer.adversarial.train_step import AdversarialTrainer

    rng = np.random.default_rng(1)
    model = _keras_bn_net(rng.normal(0, 0.5, (3, 3, 3, 4)).astype(np.float32),
                          rng.normal(0, 1, (4, 3)).astype(np.float32))
    finetune.freeze(model, unfrozen_blocks=0, frozen_bn="inference")
    trainer = AdversarialTrainer(model)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1), loss=finetune.classification_loss())
    trainer.fit(rng.random((16, 8, 8, 3)).astype(np.float32), rng.integers(0, 3, 16),
                batch_size=16, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.get_layer("bn1").moving_mean.numpy(), np.float32(0.3))


# ----------------------------------------------------------------------------- normalization

def test_target_statistics_are_the_papers_constants():
    mean, std = data.target_statistics("mnist")
    assert mean == (0.1307,) * 3 and std == (0.3081,) * 3
    assert data.target_statistics("fashion_mnist:3.0.1") == ((0.1801,) * 3, (0.3421,) * 3)
    with pytest.raises(UserError, match="--normalization subset"):
        data.target_statistics("oxford_flowers102")


def test_set_normalization_changes_the_models_input_statistics(tmp_path):
    from tftransfer.sources import saving

    source = saving.load_model(helpers.make_source(tmp_path / "src"))
    finetune.set_normalization(source, (0.1, 0.2, 0.3), (0.5, 0.5, 0.5))
    layer = source.get_layer("normalize")
    np.testing.assert_allclose(layer.mean.numpy(), [0.1, 0.2, 0.3])
    x = np.full((1, 32, 32, 3), 0.6, np.float32)
    np.testing.assert_allclose(layer(x).numpy()[0, 0, 0], [1.0, 0.8, 0.6], rtol=1e-6)


def _fine_tune(tmp_path, **fields):
    folder = helpers.make_image_folder(tmp_path / "images", classes=("a", "b", "c"),
                                       per_class=8, split=True)
    source = helpers.make_source(tmp_path / "src", num_classes=5)
    cfg = config.TransferConfig(target=str(folder), source=str(source), out=str(tmp_path / "run"),
                                epochs=2, unfrozen_blocks=3, **fields)
    return cfg, finetune.fine_tune(cfg, save_model=False, verbose=False)


def test_subset_normalization_uses_the_training_images(tmp_path):
    cfg, result = _fine_tune(tmp_path, normalization="subset")
    assert result["normalization"] == "subset"
    cache = finetune.RunCache()
    target = cache.target(cfg)
    train_idx = data.select_subset(target.train.labels, None, cfg.seed)
    mean, std = finetune.normalization_statistics(cfg, target, train_idx, 32)
    images, _ = data.subset_arrays(target.train, train_idx, 32)
    np.testing.assert_allclose(mean, images.reshape(-1, 3).mean(0), atol=1e-4)
    np.testing.assert_allclose(std, images.reshape(-1, 3).std(0), atol=1e-4)


# ----------------------------------------------------------------------------- subsets

def test_random_subset_is_robustness_make_loaders_draw():
    labels = np.repeat(np.arange(10), 600)
    chosen = data.select_subset(labels, 100, seed=20000000, method="random")
    expected = np.random.RandomState(20000000).choice(list(range(6000)), size=100, replace=False)
    np.testing.assert_array_equal(chosen, expected)
    assert not np.array_equal(chosen, data.select_subset(labels, 100, 20000000))
    with pytest.raises(UserError, match="more than"):
        data.select_subset(labels, 7000, 0, method="random")


# ----------------------------------------------------------------------------- the recipe

def test_recipe_sets_the_papers_protocol_and_is_recorded():
    cfg = config.apply_recipe(config.TransferConfig(target="mnist"), "utrera2021")
    assert (cfg.recipe, cfg.frozen_bn, cfg.normalization, cfg.epochs) == (
        "utrera2021", "train", "target", 150)
    assert (cfg.optim.schedule, cfg.optim.step_every, cfg.optim.learning_rate) == ("step", 50, 0.1)
    assert (cfg.data.subset, cfg.data.augment, cfg.data.augment_policy) == (
        "random", True, "utrera2021")
    assert config.to_dict(cfg)["recipe"] == "utrera2021"
    # Fields set after it win (what a sweep's cells do with epochs).
    assert config.apply_overrides(cfg, ["epochs=30"]).epochs == 30
    with pytest.raises(UserError, match="Unknown recipe"):
        config.apply_recipe(cfg, "utrera2022")


def test_recipe_from_the_command_line():
    from tftransfer import cli

    parser = cli.build_parser()
    args = parser.parse_args(["transfer", "--target", "mnist", "--recipe", "utrera2021",
                              "--set", "optim.learning_rate=0.01"])
    from tftransfer.commands.transfer import config_from_args

    cfg = config_from_args(args)
    assert cfg.recipe == "utrera2021" and cfg.frozen_bn == "train"
    assert cfg.optim.learning_rate == 0.01


def test_sweep_preset_keeps_the_cells_own_values():
    from tftransfer.sweeps import runner as sweeps

    sweep = config.SweepConfig(name="p", sources=("s",), targets=("mnist",), train_images=(100,),
                               unfrozen_blocks=(3,), seeds=(2,), epochs=40, preset="utrera2021")
    cell = sweeps.cells(sweep)[0]
    cfg = sweeps.transfer_config(sweep, cell, "runs/x")
    assert (cfg.recipe, cfg.frozen_bn, cfg.data.subset) == ("utrera2021", "train", "random")
    assert (cfg.epochs, cfg.seed, cfg.data.train_images) == (40, 2, 100)


def test_sweep_order_by_train_images():
    from tftransfer.sweeps import runner as sweeps

    sweep = config.SweepConfig(name="o", sources=("a", "b"), targets=("mnist",),
                               train_images=(100, 400), unfrozen_blocks=(0,), seeds=(0,),
                               epochs=1, order="train_images")
    assert [(c.train_images, c.source) for c in sweeps.cells(sweep)] == [
        (100, "a"), (100, "b"), (400, "a"), (400, "b")]


# ----------------------------------------------------------------------------- augmentation

def test_paper_augment_is_seeded_and_in_range():
    rng = np.random.default_rng(0)
    image = tf.constant(rng.random((32, 32, 3)), tf.float32)
    seed = tf.constant([3, 4], tf.int64)
    first = data.paper_augment(image, seed).numpy()
    np.testing.assert_array_equal(first, data.paper_augment(image, seed).numpy())
    assert first.shape == (32, 32, 3) and first.min() >= 0.0 and first.max() <= 1.0
    assert not np.allclose(first, image.numpy())
    other = data.paper_augment(image, tf.constant([5, 6], tf.int64)).numpy()
    assert not np.allclose(first, other)


def test_rotate_turns_the_image_about_its_centre():
    image = np.zeros((9, 9, 1), np.float32)
    image[4, 8] = 1.0                      # right of the centre
    turned = data.rotate(tf.constant(image), np.pi / 2).numpy()
    assert turned[4, 4] == 0.0 and turned.sum() == 1.0
    assert turned[0, 4] == 1.0 or turned[8, 4] == 1.0   # a quarter turn puts it above/below
    np.testing.assert_array_equal(data.rotate(tf.constant(image), 0.0).numpy(), image)


def test_paper_policy_leaves_grayscale_targets_unaugmented(tmp_path):
    gray = helpers.make_image_folder(tmp_path / "g", classes=("a", "b"), per_class=4)
    target = data.load(str(gray))
    cfg = config.TransferConfig(target=str(gray), data=config.DataConfig(
        augment=True, augment_policy="utrera2021"))
    one_channel = dataclasses.replace(target.train, fixed_shape=(28, 28, 1))
    grayscale = data.TargetData("mnist", ("a", "b"), one_channel, target.test)
    assert finetune.augments(cfg, grayscale) is False
    assert finetune.augments(cfg, target) is True  # a colour folder keeps it


def test_fine_tune_restores_the_callers_precision_policy(tmp_path):
    import keras

    before = keras.mixed_precision.global_policy().name
    _, result = _fine_tune(tmp_path, precision="mixed_bfloat16")
    assert result["epochs"] == 2
    assert keras.mixed_precision.global_policy().name == before == "float32"
