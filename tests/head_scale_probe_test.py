"""Tests of tftransfer.report.analyses.head_scale_probe: one forward and backward pass per head
scale and seed on a tiny source."""

from tests.helpers import TempRootTestCase, make_image_folder, make_source
from tftransfer.config import DataConfig, TransferConfig
from tftransfer.report.analyses import head_scale_probe

STDS = (1.0, 5.657)
SEEDS = (0, 1)


class HeadScaleProbeTest(TempRootTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        source = make_source(cls.root / "source")
        folder = make_image_folder(cls.root / "images", classes=("a", "b", "c"), per_class=8,
                                   split=True)
        # The preset's choices that matter here (an image folder has no recorded target
        # statistics, so the source's normalisation): random subset, last stage, BN in train mode.
        cls.cfg = TransferConfig(
            target=str(folder), source=str(source), unfrozen_blocks=3, frozen_bn="train",
            head_init="normal",
            data=DataConfig(dataset=str(folder), train_images=12, batch_size=8, subset="random",
                            augment=False))
        cls.rows = head_scale_probe.measure(cls.cfg, STDS, SEEDS)

    def row(self, head_std, head_seed):
        return next(r for r in self.rows
                    if r["head_std"] == head_std and r["head_seed"] == head_seed)

    def test_one_row_per_scale_and_seed_on_the_first_batch(self):
        self.assertLen(self.rows, len(STDS) * len(SEEDS))
        self.assertEqual({r["batch_images"] for r in self.rows}, {8})
        self.assertEqual({r["train_images"] for r in self.rows}, {12})

    def test_logit_norm_scales_linearly_with_the_head_std(self):
        for seed in SEEDS:
            ratio = self.row(STDS[1], seed)["logit_norm"] / self.row(STDS[0], seed)["logit_norm"]
            self.assertNear(ratio, STDS[1], 1e-3)

    def test_feature_norm_does_not_depend_on_the_head(self):
        norms = [r["feature_norm"] for r in self.rows]
        self.assertGreater(norms[0], 0.0)
        self.assertAllClose(norms, [norms[0]] * len(norms), rtol=1e-5)

    def test_larger_head_sends_a_larger_gradient_into_the_unfrozen_blocks(self):
        for seed in SEEDS:
            small, large = self.row(STDS[0], seed), self.row(STDS[1], seed)
            self.assertGreater(small["grad_blocks"], 0.0)
            self.assertGreater(large["grad_blocks"], 1.5 * small["grad_blocks"])
            self.assertGreater(small["grad_head"], 0.0)

    def test_different_head_seeds_draw_different_heads(self):
        self.assertNotAlmostEqual(self.row(1.0, 0)["logit_norm"], self.row(1.0, 1)["logit_norm"],
                                  places=4)

    def test_markdown_starts_with_the_command_and_has_one_row_per_scale(self):
        text = head_scale_probe.markdown(self.rows, "python -m probe --x")
        self.assertTrue(text.startswith("`python -m probe --x`\n"))
        table = [line for line in text.splitlines() if line.startswith("| ")]
        # two header lines, 2 scales in the first table, 1 ratio row in the second
        self.assertLen(table, 2 + 2 + 1)

    def test_preset_config_is_the_utrera2021_recipe(self):
        cfg = head_scale_probe.preset_config("mnist", "cifar10-resnet20-natural", "/data")
        self.assertEqual((cfg.recipe, cfg.frozen_bn, cfg.normalization, cfg.head_init),
                         ("utrera2021", "train", "target", "normal"))
        self.assertEqual((cfg.data.subset, cfg.data.batch_size, cfg.data.train_images,
                          cfg.unfrozen_blocks, cfg.seed), ("random", 128, 100, 3, 0))
