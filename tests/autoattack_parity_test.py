"""Parity of the toolkit's AutoAttack with the reference (github.com/fra31/auto-attack, PyTorch)
on tiny models: the Keras -> PyTorch copy of ``tftransfer.convert.to_torch`` computes the same
logits, and our APGD-CE and the reference's reach the same losses and fool the same points.

Skipped, with the reason, where the reference package ``autoattack`` (or torch) is not
importable: it is not a dependency of the project (see results/autoattack/README.md)."""

import unittest

import keras
import numpy as np
import tensorflow as tf

from tftransfer.convert import to_torch
from tftransfer.models import architectures

try:
    import torch
    from autoattack.autopgd_base import APGDAttack
except ImportError as error:  # the reference (or torch) is not installed
    REFERENCE_MISSING = (f"the reference AutoAttack is not importable ({error}); install it "
                         f"with pip install --no-deps <a copy of github.com/fra31/auto-attack> "
                         f"and torch")
else:
    REFERENCE_MISSING = None

def _images(seed, count, side=8):
    """Images with a random colour each plus noise (so that their features differ)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.random((count, 1, 1, 3)) + 0.25 * rng.standard_normal(
        (count, side, side, 3)), 0.0, 1.0).astype("float32")


def _tiny_resnet20(seed=0, image_size=8, width=0.25):
    """A random resnet20 (4/8/16 channels) with non-trivial BatchNorm statistics and
    epsilons, CIFAR normalisation, and a head set so that on ``_images`` each class's logit
    has mean 0 and standard deviation 1 (so the predicted classes vary)."""
    keras.utils.set_random_seed(seed)
    model = architectures.build("resnet20", 10, image_size, width=width,
                                mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, size).astype("float32"))
            layer.beta.assign(rng.normal(0.0, 0.1, size).astype("float32"))
            layer.moving_mean.assign(rng.normal(0.0, 0.3, size).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size).astype("float32"))
            layer.epsilon = 1e-3  # not torch's default: the copy must take it over
    fc = model.get_layer("fc")
    features = keras.Model(model.input, fc.input)(_images(seed + 100, 256, image_size))
    logits = np.asarray(features) @ np.asarray(fc.kernel)
    scale = logits.std(0) + 1e-6
    fc.kernel.assign(np.asarray(fc.kernel) / scale)
    fc.bias.assign(-logits.mean(0) / scale)
    return model


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


@unittest.skipIf(REFERENCE_MISSING is not None, REFERENCE_MISSING or "")
class AutoAttackParityTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.parity = to_torch
        cls.model = _tiny_resnet20()
        cls.twin = cls.parity.torch_twin(cls.model)
        cls.x = _images(1, 32)
        # one thread: on a loaded 2-core machine torch with two ran ~20x slower
        cls.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    @classmethod
    def tearDownClass(cls):
        torch.set_num_threads(cls.threads)
        super().tearDownClass()

    def test_torch_copy_has_the_keras_logits(self):
        gap = self.parity.logit_gap(self.model, self.twin, self.x)
        self.assertLess(gap, 1e-4)
        logits = np.asarray(self.model(self.x, training=False))
        self.assertGreater(logits.std(0).min(), 0.3)  # the logits depend on the input
        self.assertGreater(len(set(np.argmax(logits, 1))), 3)
        bn = dict(self.twin.named_modules())["layer2.0.bn1"]
        self.assertEqual(bn.eps, 1e-3)

    def test_apgd_ce_agrees_with_the_reference(self):
        from tftransfer.adversarial.autoattack import apgd

        x = self.x[:8]
        y = np.argmax(np.asarray(self.model(x, training=False)), 1).astype("int32")
        for norm, eps in (("linf", 4 / 255), ("l2", 0.15)):
            with self.subTest(norm=norm):
                run = tf.function(lambda xb, yb, n=norm, e=eps: apgd.apgd_run(
                    self.model, xb, yb, n, e, steps=30, loss="ce", seed=0))
                ours = run(tf.constant(x), tf.constant(y))
                reference = APGDAttack(self.twin, n_iter=30, norm={"l2": "L2",
                                                                   "linf": "Linf"}[norm],
                                       eps=eps, seed=0, loss="ce", device="cpu")
                reference.init_hyperparam(_nchw(x))
                torch.manual_seed(0)
                _, robust_ref, loss_ref, _ = reference.attack_single_run(
                    _nchw(x), torch.from_numpy(y.astype("int64")))
                loss_ours = ours.loss_best.numpy()
                loss_ref = loss_ref.numpy()
                clean = tf.nn.sparse_softmax_cross_entropy_with_logits(
                    y, self.model(x, training=False)).numpy()
                # the attack does something, and both reach the same highest loss per point
                self.assertGreater(np.mean(loss_ref - clean), 0.05)
                np.testing.assert_allclose(loss_ours, loss_ref, rtol=0.05, atol=0.02)
                fooled_ours = ours.fooled.numpy()
                fooled_ref = ~robust_ref.numpy().astype(bool)
                self.assertLessEqual(int(np.sum(fooled_ours != fooled_ref)), 1)


if __name__ == "__main__":
    tf.test.main()
