"""Registry of named source models: name -> a model directory (committed or cached).

``transfer --source NAME`` and ``load_model(NAME)`` resolve names here. Entries
are added by the replication (CIFAR-10 sources under ``saved_models/``); the
published ImageNet ResNets of ``tftransfer.published`` are looked up after them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The default --source of `transfer`: the replication's robust source (L2 eps 0.5 at 32 px has
# about the per-pixel size of the paper's eps 3 at 224 px), shipped in saved_models/.
DEFAULT_SOURCE = "cifar10-resnet20-l2-eps0.5"


@dataclass(frozen=True)
class Source:
    """A registered source model."""

    name: str
    path: str                      # model directory, relative to the repository root
    arch: str
    attack: str = "none"           # threat model it was trained with: none, l2, linf
    eps: float = 0.0
    description: str = ""
    metrics: dict = field(default_factory=dict)
    command: str = ""              # the exact command that produced it


_REGISTRY: dict[str, Source] = {}


def register(source: Source) -> None:
    """Adds a source to the registry (a name may be registered once)."""
    if source.name in _REGISTRY:
        raise ValueError(f"source {source.name!r} is already registered")
    _REGISTRY[source.name] = source


def names() -> list[str]:
    """Registered source names, then the published ImageNet models (``tftransfer.published``)."""
    from tftransfer import published  # lazy: published imports nothing from here either

    return sorted(_REGISTRY) + [name for name in published.names() if name not in _REGISTRY]


def get(name: str) -> Source | None:
    """The registered (or published) source called ``name``, or None."""
    source = _REGISTRY.get(name)
    if source is not None:
        return source
    return _published_source(name)


def resolve(name: str) -> Path | None:
    """The model directory of a source, or None if ``name`` is neither registered nor published.

    A published model is downloaded and converted into the cache on first use.
    """
    source = _REGISTRY.get(name)
    if source is None:
        from tftransfer import published

        return published.resolve(name)
    path = REPO_ROOT / source.path
    if not (path / "model.keras").exists():
        from tftransfer.errors import UserError

        raise UserError(f"Source {name!r} is registered but {source.path}/model.keras is not "
                        f"there yet; create it with: {source.command}")
    return path


def _published_source(name: str) -> Source | None:
    """A ``Source`` view of a published model (its path is the cache directory)."""
    from tftransfer import published

    entry = published.get(name)
    if entry is None:
        return None
    metrics = {} if entry.imagenet_top1 is None else {"imagenet_top1": entry.imagenet_top1}
    # An absolute path: REPO_ROOT / path then yields the cache directory unchanged.
    return Source(name=entry.name, path=str(published.model_dir(entry)), arch=entry.arch,
                  attack=entry.attack, eps=entry.eps,
                  description=f"published ImageNet model, eps {entry.eps_label} ({entry.origin})",
                  metrics=metrics)


def _register_replication_sources() -> None:
    """The CIFAR-10 resnet20 sources of the replication (pipelines/train_sources.sh)."""
    common = ("python main.py pretrain --dataset cifar10 --arch resnet20 --epochs 30 "
              "--batch-size 128 --lr 0.1 --schedule cosine --weight-decay 5e-4 --seed 0 "
              "--data-dir ../shared/tfds --no-download")
    register(Source(name="cifar10-resnet20-natural-3ep",
                    path="saved_models/cifar10-resnet20-natural-3ep", arch="resnet20",
                    description="CIFAR-10 resnet20, natural training, 3 epochs (the foundation "
                                "issue's check run; 69.0% test accuracy)",
                    command="python main.py pretrain --dataset cifar10 --arch resnet20 --epochs 3 "
                            "--data-dir ../shared/tfds --out saved_models/tmp"))
    short = common.replace("--epochs 30", "--epochs 10")
    register(Source(name="cifar10-resnet20-natural-10ep",
                    path="saved_models/cifar10-resnet20-natural-10ep", arch="resnet20",
                    description="CIFAR-10 resnet20, natural training, 10 epochs",
                    metrics={"clean_accuracy": 0.8255, "l2_pgd20_eps0.5_accuracy": 0.0253},
                    command=f"{short} --out saved_models/cifar10-resnet20-natural-10ep"))
    register(Source(name="cifar10-resnet20-l2-eps0.5-10ep",
                    path="saved_models/cifar10-resnet20-l2-eps0.5-10ep", arch="resnet20",
                    attack="l2", eps=0.5,
                    description="CIFAR-10 resnet20, L2 PGD-3 adversarial training (eps 0.5), "
                                "10 epochs",
                    metrics={"clean_accuracy": 0.7286, "l2_pgd20_eps0.5_accuracy": 0.5372},
                    command=f"{short} --attack l2 --eps 0.5 --attack-steps 3 "
                            f"--out saved_models/cifar10-resnet20-l2-eps0.5-10ep"))
    register(Source(name="cifar10-resnet20-natural", path="saved_models/cifar10-resnet20-natural",
                    arch="resnet20", description="CIFAR-10 resnet20, natural training, 30 epochs",
                    metrics={"clean_accuracy": 0.8711, "l2_pgd20_eps0.5_accuracy": 0.0153},
                    command=f"{common} --out saved_models/cifar10-resnet20-natural"))
    # CIFAR-10 test accuracy, clean and under L2 PGD-20 at eps 0.5, measured by `evaluate`
    # (results/adversarial/l2-eps<eps>.json); empty until a source is trained.
    measured = {"0.25": {"clean_accuracy": 0.8383, "l2_pgd20_eps0.5_accuracy": 0.5245},
                "0.5": {"clean_accuracy": 0.7939, "l2_pgd20_eps0.5_accuracy": 0.5876},
                "1.0": {"clean_accuracy": 0.7045, "l2_pgd20_eps0.5_accuracy": 0.5816}}
    for eps in ("0.25", "0.5", "1.0"):
        name = f"cifar10-resnet20-l2-eps{eps}"
        register(Source(
            name=name, path=f"saved_models/{name}", arch="resnet20", attack="l2", eps=float(eps),
            description=f"CIFAR-10 resnet20, L2 PGD-3 adversarial training (eps {eps}), 30 epochs",
            metrics=measured.get(eps, {}),
            command=f"{common} --attack l2 --eps {eps} --attack-steps 3 --out saved_models/{name}"))


_register_replication_sources()
