"""The configs of the interpretation commands, ``saliency`` and ``influence``.

Their fields are the commands' flags (``--images`` is ``images``), and the checks name the
flags: these configs are built from the command line or by a Python caller that reads
``docs/cli.md``. Nothing here imports TensorFlow, so an impossible setting stops before any
model or dataset is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from tftransfer.config.checks import (check, check_finite, check_seed, check_values,
                                      check_whole_number)

SALIENCY_RENDERINGS = ("abs", "image")
INFLUENCE_METHODS = ("auto", "exact", "cg")
INFLUENCE_RANKINGS = ("helpful", "absolute")


def _check_count(value, flag: str, least: int = 1) -> None:
    check_whole_number(value, flag)
    check(value >= least, f"{flag} must be at least {least}, got {value}.")


@dataclass(frozen=True)
class SaliencyConfig:
    """Input-gradient maps of several models on the same test images.

    Attributes:
      models: model directories, ``.keras`` files or registered names (the columns).
      dataset: the dataset whose test images are shown.
      out: the PNG to write (the raw gradients go next to it as ``.npz``).
      images: K, the first K of the seed-0 stratified order of the test split (the rows).
      smoothgrad, samples, noise: SmoothGrad (``samples`` noisy copies, noise std in
        [0, 1] pixel units) instead of the vanilla gradient.
      render: ``abs`` or ``image`` (see ``interpret.saliency.render``).
      labels: column titles, one per model (None: from each model's directory and config).
      seed: seed of the SmoothGrad noise.
      data_dir, download: where the dataset is.
    """

    models: tuple
    dataset: str
    out: str
    images: int = 8
    smoothgrad: bool = False
    samples: int = 25
    noise: float = 0.1
    render: str = "abs"
    labels: tuple | None = None
    seed: int = 0
    data_dir: str | None = None
    download: bool = True

    def __post_init__(self):
        check_values("saliency", "models", self.models)
        _check_count(self.images, "--images")
        _check_count(self.samples, "--samples")
        check_finite(self)
        check(self.noise >= 0, f"--noise must be >= 0, got {self.noise}.")
        check(self.render in SALIENCY_RENDERINGS,
              f"Unknown rendering {self.render!r}; use one of {', '.join(SALIENCY_RENDERINGS)}.")
        check(self.labels is None or len(self.labels) == len(self.models),
              f"--labels has {len(self.labels or ())} entries for {len(self.models)} models.")
        check_seed(self.seed)


@dataclass(frozen=True)
class InfluenceConfig:
    """Influence functions of the heads of several fine-tuned runs (Koh & Liang).

    Attributes:
      run_dirs: run directories written by ``transfer`` (one per model).
      out: the output directory.
      train_images: N, the first N of each run's training images (None: all).
      test_images: M, a fixed stratified subset (seed 0) of the test split.
      top_k: match rates for k = 1..top_k.
      damping: lambda added to the Hessian's diagonal.
      method: ``auto``, ``exact`` or ``cg`` (see ``interpret.influence.math``).
      rank: ``helpful`` (largest -I) or ``absolute`` (largest |I|).
      names: the runs' labels in files and figures (None: directory names).
      grid_rows: test images shown in ``most_influential.png``.
      save_matrices: write the ``influence_<model>.npy`` matrices.
      data_dir, download: where the dataset is (None: the one each run used).
    """

    run_dirs: tuple
    out: str
    train_images: int | None = None
    test_images: int = 100
    top_k: int = 100
    damping: float = 0.01
    method: str = "auto"
    rank: str = "helpful"
    names: tuple | None = None
    grid_rows: int = 4
    save_matrices: bool = True
    data_dir: str | None = None
    download: bool = True

    def __post_init__(self):
        check_values("influence", "run_dirs", self.run_dirs)
        if self.train_images is not None:
            _check_count(self.train_images, "--train-images")
        _check_count(self.test_images, "--test-images")
        _check_count(self.top_k, "--top-k")
        check_whole_number(self.grid_rows, "--grid-rows")  # the figure shows at least one
        check_finite(self)
        check(self.damping >= 0, f"--damping must be >= 0, got {self.damping}.")
        check(self.method in INFLUENCE_METHODS, f"Unknown --method {self.method!r}; use one "
                                                f"of {', '.join(INFLUENCE_METHODS)}.")
        check(self.rank in INFLUENCE_RANKINGS, f"Unknown ranking {self.rank!r}; use one of "
                                               f"{', '.join(INFLUENCE_RANKINGS)}.")
        check(self.names is None or len(self.names) == len(self.run_dirs),
              f"--names has {len(self.names or ())} entries for {len(self.run_dirs)} --model "
              f"runs.")
