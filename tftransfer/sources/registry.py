"""Source models: the one record type (``Source``), the local sources on disk, the default rule.

A *local* source is a model directory in a models folder; its name is the directory's name.
A ``source.json`` beside the model describes it (arch, threat model, eps, description, the
measured metrics and the command that produced it); a model directory without one is
described from its ``config.json``. So a newly trained model is a named source without any
code change. The published ImageNet models (``tftransfer.sources.published``) are records of the same
type; ``tftransfer.sources.hub`` lists both and turns a name into a model directory.

Models folders, searched in this order (the first that holds a name wins):

1. ``$TFTRANSFER_MODELS``: one or more folders, separated by ``os.pathsep``;
2. ``saved_models/`` in the current directory;
3. ``saved_models/`` of the repository checkout this package was imported from (a checkout
   or an editable install). A non-editable install (``pip install .``) has no checkout, so
   its users set ``TFTRANSFER_MODELS`` or run from the folder that holds ``saved_models/``.

A models folder that every user may write to is refused (anyone could plant a model under a
source's name there; a sticky bit does not stop that) unless ``$TFTRANSFER_ALLOW_WRITABLE_MODELS``
is ``1``. ``hub.model_dir`` says the path when a shipped name resolves outside the package's
own ``saved_models/`` and warns when several folders hold a name.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tftransfer.errors import UserError

SOURCE_FILE = "source.json"
MODELS_ENV = "TFTRANSFER_MODELS"
MODELS_FOLDER = "saved_models"
ALLOW_WRITABLE_ENV = "TFTRANSFER_ALLOW_WRITABLE_MODELS"
# The repository checkout beside the package, if the package is imported from one.
CHECKOUT_MODELS = Path(__file__).resolve().parents[2] / MODELS_FOLDER
# The default --source for small targets: the replication's robust source (L2 eps 0.5 at
# 32 px has about the per-pixel size of the paper's eps 3 at 224 px), shipped in saved_models/.
DEFAULT_SOURCE = "cifar10-resnet20-l2-eps0.5"
# The default for photo-sized targets: the paper's robust ImageNet ResNet-50 (L2 eps 3, 224 px).
PHOTO_SOURCE = "robust-resnet50-l2-eps3"
# Targets whose images are at most this many pixels on a side get the 32 px source: upscaling
# a 28-64 px image 3.5-8x to 224 px buys no detail and costs about 50x the compute.
SMALL_IMAGE_MAX = 64
# The input size for a source of at most SMALL_IMAGE_MAX px on photos larger than it (their
# shorter side resized and the centre square taken): at least the source's own size, at most
# the photos' median shorter side; --image-size overrides it. 64, measured on real flower
# photos (results/photo/flowers12/sizes.md, N = 720, 3 seeds): the last stage gains 4.6 ± 2.7
# (robust source) and 6.5 ± 7.9 points (natural) over 32 px, the head alone 1.5 and 2.9, for
# 2-4x the last stage's training time.
SMALL_SOURCE_PHOTO_SIZE = 64
_SOURCE_KEYS = ("arch", "attack", "eps", "eps_label", "dataset", "image_size", "description",
                "metrics", "command")
_ATTACKS = ("none", "l2", "linf")


@dataclass(frozen=True)
class Source:
    """A source model a user can name with ``--source``: local or published.

    Attributes:
      name: the name (a local source's directory name).
      arch: the architecture (``tftransfer.models.architectures`` name).
      attack: threat model it was trained against: none, l2 or linf.
      eps: training eps in [0, 1] pixel units, at ``image_size``.
      eps_label: eps as its authors write it (``3``, ``4/255``); empty: ``eps`` itself.
      dataset: what it was trained on (cifar10, imagenet, ...).
      image_size: its input size in pixels.
      description: one line about it.
      metrics: measured or published figures (``clean_accuracy`` a fraction on its dataset's
        test split, ``imagenet_top1`` in percent, ...).
      command: the exact command that produced it (local sources).
      directory: a local source's model directory; None for a published one (it lives in
        the cache: ``published.model_dir``).
      file_name, urls, sha256, sha256_source, origin, width: a published checkpoint's file,
        download addresses (tried in order), published sha256 (or its published prefix) and
        where that is published, the publication, and the channel multiplier.
      checksum_note: for a published checkpoint without a sha256, that none is public and
        where one was looked for.
    """

    name: str
    arch: str
    attack: str = "none"
    eps: float = 0.0
    eps_label: str = ""
    dataset: str = ""
    image_size: int | None = None
    description: str = ""
    metrics: dict = field(default_factory=dict)
    command: str = ""
    directory: str | None = None
    file_name: str = ""
    urls: tuple = ()
    sha256: str | None = None
    sha256_source: str | None = None
    origin: str = ""
    width: float = 1.0
    checksum_note: str = ""

    @property
    def published(self) -> bool:
        """Whether it is a published checkpoint (downloaded and converted on first use)."""
        return bool(self.urls)

    @property
    def clean_accuracy(self) -> float | None:
        """Clean test accuracy on its own dataset as a fraction, or None if unknown."""
        if "clean_accuracy" in self.metrics:
            return float(self.metrics["clean_accuracy"])
        top1 = self.metrics.get("imagenet_top1")
        return None if top1 is None else float(top1) / 100.0


# ----------------------------------------------------------------------------- models folders

def models_dirs() -> list[Path]:
    """The existing models folders, in search order (see the module docstring)."""
    candidates = [Path(p) for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    candidates += [Path.cwd() / MODELS_FOLDER, CHECKOUT_MODELS]
    found, seen = [], set()
    for candidate in candidates:
        resolved = candidate.expanduser().resolve()
        if resolved.is_dir() and resolved not in seen:
            _refuse_world_writable(resolved)
            seen.add(resolved)
            found.append(resolved)
    return found


def _refuse_world_writable(folder: Path) -> None:
    """Raise a ``UserError`` for a models folder any user may write to, unless allowed."""
    if folder.stat().st_mode & stat.S_IWOTH and os.environ.get(ALLOW_WRITABLE_ENV) != "1":
        raise UserError(f"The models folder {folder} is writable by every user, so anyone could "
                        f"plant a model under a source's name in it; remove that permission "
                        f"(chmod o-w {folder}) or set {ALLOW_WRITABLE_ENV}=1 to use it anyway.")


def holders(name: str) -> list[Path]:
    """The models folders that hold a model directory called ``name``, in search order (the
    first one wins)."""
    if not name or Path(name).name != name:
        return []
    return [folder for folder in models_dirs() if (folder / name).is_dir() and any(
        (folder / name / file).is_file() for file in (SOURCE_FILE, "config.json"))]


def is_shipped(directory) -> bool:
    """Whether a model directory is one of the package's own (in the checkout's
    ``saved_models/``)."""
    return Path(directory).resolve().parent == CHECKOUT_MODELS


def where_to_put(name: str) -> str:
    """The sentence's end that says where a local source's files go."""
    return (f"put its model directory at {MODELS_FOLDER}/{name}/ in the current directory, or "
            f"set {MODELS_ENV} to the folder that holds {name}/")


def local_sources() -> list[Source]:
    """Every local source in the models folders (the first of a name wins), by name; one
    whose ``source.json`` or ``config.json`` is unreadable or invalid is left out with a
    warning on stderr (``get`` of that name still raises its sentence)."""
    found: dict[str, Source | None] = {}
    for folder in models_dirs():
        for directory in sorted(p for p in folder.iterdir() if p.is_dir()):
            if directory.name not in found:
                try:
                    source = read_source(directory)
                except UserError as error:
                    print(f"warning: skipped source {directory.name!r}: {error}",
                          file=sys.stderr)
                    found[directory.name] = None  # it shadows later folders, as in get()
                    continue
                if source is not None:
                    found[directory.name] = source
    return [found[name] for name in sorted(found) if found[name] is not None]


def get(name: str) -> Source | None:
    """The local source called ``name`` (the first models folder holding it), or None;
    ``hub.get`` looks up published names too."""
    if not name or Path(name).name != name:
        return None  # a path, not a name: hub.model_dir takes paths as they are
    for folder in models_dirs():
        source = read_source(folder / name) if (folder / name).is_dir() else None
        if source is not None:
            return source
    return None


def read_source(directory) -> Source | None:
    """The ``Source`` a model directory describes: its ``source.json``, else its
    ``config.json``; None when it has neither (not a model directory)."""
    directory = Path(directory)
    if (directory / SOURCE_FILE).is_file():
        return _from_source_file(directory)
    if (directory / "config.json").is_file():
        return _from_model_config(directory)
    return None


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not readable JSON ({error}).") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} must hold a JSON object, not {type(value).__name__}.")
    return value


def _from_source_file(directory: Path) -> Source:
    path = directory / SOURCE_FILE
    fields = _read_json(path)
    unknown = sorted(set(fields) - set(_SOURCE_KEYS) - {"name"})
    if unknown or "arch" not in fields or fields.get("attack", "none") not in _ATTACKS:
        problem = (f"unknown key {unknown[0]!r}" if unknown else "no 'arch'"
                   if "arch" not in fields else f"attack {fields['attack']!r}")
        raise UserError(f"{path} has {problem}; it may hold {', '.join(_SOURCE_KEYS)} "
                        f"(attack one of {', '.join(_ATTACKS)}).")
    fields.pop("name", None)  # the directory's name is the source's name
    return Source(name=directory.name, directory=str(directory), **fields)


def _from_model_config(directory: Path) -> Source:
    """A source read off ``config.json`` (and ``metrics.json``) as ``pretrain``/``convert``
    write them."""
    config = _read_json(directory / "config.json")
    attack, eps = threat_model(config)
    metrics = {}
    if (directory / "metrics.json").is_file() and config.get("kind") == "pretrain":
        accuracy = _read_json(directory / "metrics.json").get("accuracy")
        metrics = {} if accuracy is None else {"clean_accuracy": accuracy}
    return Source(name=directory.name, arch=str(config.get("arch", "?")), attack=attack, eps=eps,
                  dataset=str(config.get("dataset") or ""), image_size=config.get("image_size"),
                  description=f"{config.get('kind', 'model')} output without a {SOURCE_FILE}",
                  metrics=metrics, directory=str(directory))


def threat_model(config: dict) -> tuple[str, float]:
    """``(attack, eps)`` recorded in a model's ``config.json``: ``pretrain`` writes
    ``{"attack": {"attack": "l2", "eps": 0.5, ...}}``, ``convert`` ``{"attack": "l2",
    "eps": 3.0}`` (or None when unknown); a model without either is taken as natural."""
    attack = config.get("attack")
    if isinstance(attack, dict):
        return str(attack.get("attack", "none")), float(attack.get("eps") or 0.0)
    if isinstance(attack, str):
        return attack, float(config.get("eps") or 0.0)
    return "none", 0.0


# ----------------------------------------------------------------------------- the default

def default_for(target: str, image_size) -> tuple[str, str]:
    """The default source for a target and why, as ``(name, reason)``.

    Args:
      target: the target's name (for the reason).
      image_size: the longer side of the target's images in pixels (or the ``--image-size``
        asked for); a ``data.image_sizes.SizeSample`` of an image folder's files, decided by
        its median longer side and described by its median and range; None when the sizes
        vary or are not known in advance (photo datasets).

    Returns:
      ``DEFAULT_SOURCE`` for images of at most ``SMALL_IMAGE_MAX`` px, else ``PHOTO_SOURCE``.
    """
    size = "of varying size" if image_size is None else f"{image_size} px"
    if hasattr(image_size, "describe"):  # a SizeSample (data imports TensorFlow; this not)
        size, image_size = image_size.describe(), image_size.longer_side
    if image_size is not None and image_size <= SMALL_IMAGE_MAX:
        return DEFAULT_SOURCE, (f"{target}'s images are {size} (<= {SMALL_IMAGE_MAX} px), so "
                                f"the shipped 32 px CIFAR-10 ResNet-20 (L2 eps 0.5)")
    return PHOTO_SOURCE, (f"{target}'s images are {size} (photo-sized, over {SMALL_IMAGE_MAX} "
                          f"px), so the paper's ImageNet ResNet-50 (L2 eps 3 at 224 px)")


def photo_input_size(source_size: int, photo_side: int) -> int:
    """The input size for a ``source_size`` px source on images whose median shorter side is
    ``photo_side`` px (without ``--image-size``): ``SMALL_SOURCE_PHOTO_SIZE`` for a small
    source (at most ``SMALL_IMAGE_MAX`` px) on larger images, never below the source's own
    size nor above the images' side; the source's own size otherwise."""
    if not is_small_on_photos(source_size, photo_side):
        return source_size
    return max(source_size, min(SMALL_SOURCE_PHOTO_SIZE, photo_side))


def is_small_on_photos(source_size: int, photo_side: int) -> bool:
    """Whether a ``source_size`` px source is small (at most ``SMALL_IMAGE_MAX`` px) and the
    images' median shorter side ``photo_side`` is larger than it: their detail is resized
    away, which a run says in its first line."""
    return source_size <= SMALL_IMAGE_MAX and photo_side > source_size
