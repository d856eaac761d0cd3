"""Registry of named source models: name -> a model directory (committed or cached).

``transfer --source NAME`` and ``load_model(NAME)`` resolve names here. Entries
are added by the replication (CIFAR-10 sources under ``saved_models/``); the
published ImageNet ResNets of ``tftransfer.published`` are looked up after them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


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
    return REPO_ROOT / source.path


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
