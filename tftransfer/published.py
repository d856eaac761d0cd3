"""Registry of the published ImageNet ResNet checkpoints, downloaded and converted on first use.

Sources (figures copied from the authors' READMEs, None where none is published):

* MadryLab robustness library, https://github.com/MadryLab/robustness (README,
  "ImageNet L2-norm / Linf-norm (ResNet50)"): the eps 0 model there is PyTorch's
  own pre-trained ResNet-50 (76.13% top-1), i.e. torchvision's IMAGENET1K_V1
  weights. The library's ``.pt`` files were saved with torch 1.1 and dill, so they
  may need ``--trust-pickle``.
* Salman et al., "Do Adversarially Robust ImageNet Models Transfer Better?",
  https://github.com/microsoft/robust-models-transfer (README, "Standard Accuracy of
  L2-/Linf-Robust ImageNet Models"); files mirrored by the authors' lab at
  https://huggingface.co/madrylab/robust-imagenet-models .

Linf eps are stored in [0, 1] pixel units (4/255 = 0.0157); L2 eps at 224x224 px.
Only torchvision publishes a checksum (the first 8 hex digits of the sha256 in its
file names); the others are recorded in ``config.json`` after the first download.

``resolve(name)`` returns the cached model directory
(``$TFTRANSFER_CACHE/<name>/`` or ``~/.cache/tftransfer/<name>/``), downloading
and converting the checkpoint once.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tftransfer.errors import UserError

IMAGE_SIZE = 224
_ROBUSTNESS_README = "https://github.com/MadryLab/robustness"
_SALMAN_README = "https://github.com/microsoft/robust-models-transfer"
_HF_MIRROR = "https://huggingface.co/madrylab/robust-imagenet-models/resolve/main/"
_AZURE = "https://robustnessws4285631339.blob.core.windows.net/public-models/robust_imagenet/"
# The shared-access query the robust-models-transfer README publishes with each link.
_AZURE_QUERY = ("?sv=2020-08-04&ss=bfqt&srt=sco&sp=rwdlacupitfx&se=2051-10-06T07:09:59Z"
                "&st=2021-10-05T23:09:59Z&spr=https,http"
                "&sig=U69sEOSMlliobiw8OgiZpLTaYyOA5yt5pHHH5%2FKUYgI%3D")
_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class PublishedModel:
    """A published checkpoint and what its authors report about it.

    Attributes:
      name: registry name (``--source NAME``).
      file_name: the checkpoint's file name.
      urls: download addresses, tried in order (mirrors after the first).
      arch: ``tftransfer.resnet`` architecture.
      attack: threat model it was trained against: none, l2 or linf.
      eps: training eps in [0, 1] pixel space (L2 at 224 px).
      eps_label: eps as the authors write it (``3``, ``4/255``).
      imagenet_top1: published clean ImageNet top-1 accuracy in percent, or None.
      sha256: published sha256 (or its published prefix), or None.
      origin: which publication the file comes from.
      width: channel multiplier (1.0 for every published model).
    """

    name: str
    file_name: str
    urls: tuple
    arch: str
    attack: str
    eps: float
    eps_label: str
    imagenet_top1: float | None
    sha256: str | None
    origin: str
    width: float = 1.0


def _salman(arch: str, attack: str, eps_label: str, file_eps: str, top1: float) -> PublishedModel:
    """An entry of Salman et al.'s table (robust-models-transfer README)."""
    file_name = f"{arch}_{attack}_eps{file_eps}.ckpt"
    eps = float(eps_label) if attack == "l2" else float(eps_label) / 255.0
    return PublishedModel(
        name=f"salman-{arch}-{attack}-eps{eps_label}", file_name=file_name,
        urls=(_HF_MIRROR + file_name, _AZURE + file_name + _AZURE_QUERY), arch=arch,
        attack="none" if eps == 0 else attack, eps=eps,
        eps_label=eps_label if attack == "l2" else f"{eps_label}/255",
        imagenet_top1=top1, sha256=None, origin=_SALMAN_README)


# (eps as written, eps in the file name, ResNet-18 top-1, ResNet-50 top-1)
_SALMAN_L2 = (
    ("0", "0", 69.79, 75.80), ("0.01", "0.01", 69.90, 75.68), ("0.03", "0.03", 69.24, 75.76),
    ("0.05", "0.05", 69.15, 75.59), ("0.1", "0.1", 68.77, 74.78), ("0.25", "0.25", 67.43, 74.14),
    ("0.5", "0.5", 65.49, 73.16), ("1", "1", 62.32, 70.43), ("3", "3", 53.12, 62.83),
    ("5", "5", 45.59, 56.13),
)
_SALMAN_LINF = (
    ("0.5", "0.5", 66.13, 73.73), ("1", "1.0", 63.46, 72.05), ("2", "2.0", 59.63, 69.10),
    ("4", "4.0", 52.49, 63.86), ("8", "8.0", 42.11, 54.53),
)

_ENTRIES = [
    PublishedModel(
        name="resnet50-natural", file_name="resnet50-0676ba61.pth",
        urls=("https://download.pytorch.org/models/resnet50-0676ba61.pth",), arch="resnet50",
        attack="none", eps=0.0, eps_label="0", imagenet_top1=76.13, sha256="0676ba61",
        origin=f"torchvision IMAGENET1K_V1 (the eps=0 model of {_ROBUSTNESS_README})"),
    # The README links Dropbox pages (?dl=0); ?dl=1 is the same file as a direct download.
    PublishedModel(
        name="robust-resnet50-l2-eps3", file_name="imagenet_l2_3_0.pt",
        urls=("https://www.dropbox.com/s/knf4uimlqsi1yz8/imagenet_l2_3_0.pt?dl=1",),
        arch="resnet50", attack="l2", eps=3.0, eps_label="3", imagenet_top1=57.90,
        sha256=None, origin=_ROBUSTNESS_README),
    PublishedModel(
        name="robust-resnet50-linf-eps4", file_name="imagenet_linf_4.pt",
        urls=("https://www.dropbox.com/s/axfuary2w1cnyrg/imagenet_linf_4.pt?dl=1",),
        arch="resnet50", attack="linf", eps=4 / 255, eps_label="4/255", imagenet_top1=62.42,
        sha256=None, origin=_ROBUSTNESS_README),
    PublishedModel(
        name="robust-resnet50-linf-eps8", file_name="imagenet_linf_8.pt",
        urls=("https://www.dropbox.com/s/yxn15a9zklz3s8q/imagenet_linf_8.pt?dl=1",),
        arch="resnet50", attack="linf", eps=8 / 255, eps_label="8/255", imagenet_top1=47.91,
        sha256=None, origin=_ROBUSTNESS_README),
]
for _arch, _column in (("resnet50", 3), ("resnet18", 2)):
    _ENTRIES += [_salman(_arch, "l2", row[0], row[1], row[_column]) for row in _SALMAN_L2]
    _ENTRIES += [_salman(_arch, "linf", row[0], row[1], row[_column]) for row in _SALMAN_LINF]

REGISTRY: dict[str, PublishedModel] = {entry.name: entry for entry in _ENTRIES}


def names() -> list[str]:
    """Names of the published models, in registry order."""
    return list(REGISTRY)


def get(name: str) -> PublishedModel | None:
    """The published model called ``name``, or None."""
    return REGISTRY.get(name)


def cache_root() -> Path:
    """``$TFTRANSFER_CACHE`` if set, else ``~/.cache/tftransfer``."""
    return Path(os.environ.get("TFTRANSFER_CACHE") or Path.home() / ".cache" / "tftransfer")


def model_dir(entry: PublishedModel) -> Path:
    """Where the converted model (and its downloaded checkpoint) is cached."""
    return cache_root() / entry.name


def checkpoint_path(entry: PublishedModel) -> Path:
    """Where the downloaded checkpoint is kept (and where to put it by hand offline)."""
    return model_dir(entry) / entry.file_name


def table() -> str:
    """The registry as a plain-text table (``convert --list``)."""
    rows = [("name", "arch", "attack", "eps", "top1%", "cached", "file")]
    for entry in REGISTRY.values():
        cached = "yes" if _is_converted(model_dir(entry)) else "no"
        top1 = "?" if entry.imagenet_top1 is None else f"{entry.imagenet_top1:.2f}"
        rows.append((entry.name, entry.arch, entry.attack, entry.eps_label, top1, cached,
                     entry.file_name))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in rows)


def _is_converted(directory: Path) -> bool:
    from tftransfer import saving  # lazy: keeps `import tftransfer.published` free of Keras

    return (directory / saving.MODEL_FILE).is_file() and (directory / saving.CONFIG_FILE).is_file()


def _check_sha256(digest: str, entry: PublishedModel, source: str) -> None:
    if entry.sha256 and not digest.startswith(entry.sha256.lower()):
        raise UserError(f"The file from {source} for {entry.name!r} has sha256 {digest}, but "
                        f"{entry.sha256} is published; delete it and retry.")


def _download_one(url: str, target: Path) -> str:
    """Streams ``url`` into ``target`` (via a .part file), returning the sha256."""
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=_TIMEOUT_SECONDS) as response:
        total = int(response.headers.get("Content-Length") or 0)
        done, reported = 0, -10
        with open(partial, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if total and 100 * done // total >= reported + 10:  # progress every 10%
                    reported = 100 * done // total
                    print(f"  {target.name}: {reported}% of {total / 1e6:.0f} MB",
                          file=sys.stderr)
    partial.replace(target)
    return digest.hexdigest()


def download(entry: PublishedModel) -> Path:
    """Downloads the checkpoint once into the cache, checking the published sha256.

    Returns:
      The checkpoint path. Offline, stops with the URL to fetch and where to put it.
    """
    target = checkpoint_path(entry)
    if target.is_file():  # downloaded before, or put there by hand: check it all the same
        if entry.sha256:
            from tftransfer.convert import file_sha256

            _check_sha256(file_sha256(target), entry, str(target))
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in entry.urls:
        print(f"downloading {entry.name} from {url.split('?')[0]}", file=sys.stderr)
        try:
            digest = _download_one(url, target)
        except (urllib.error.URLError, OSError, ValueError) as error:
            # URLError/HTTPError/timeouts are OSErrors; ValueError: a malformed URL
            failures.append(f"{url.split('?')[0]}: {error}")
            continue
        try:
            _check_sha256(digest, entry, url.split("?")[0])
        except UserError:
            target.unlink()
            raise
        return target
    raise UserError(
        f"Could not download {entry.name!r} ({'; '.join(failures)}). Download {entry.urls[0]} "
        f"yourself and put it at {target} (or set TFTRANSFER_CACHE to a directory that holds "
        f"{entry.name}/{entry.file_name}).")


def ensure_converted(entry: PublishedModel, image_size: int = IMAGE_SIZE,
                     trust_pickle: bool = False, out_dir=None) -> Path:
    """The converted model directory of ``entry``, downloading and converting once.

    Args:
      entry: a registry entry.
      image_size: input size of the converted model (224 for the published models).
      trust_pickle: allow an unsafe full unpickling (dill-pickled robustness files).
      out_dir: where to write the model; default the cache directory.

    Returns:
      The model directory.
    """
    from tftransfer import convert

    directory = Path(out_dir) if out_dir else model_dir(entry)
    if _is_converted(directory):
        return directory
    checkpoint = download(entry)
    print(f"converting {checkpoint} -> {directory}", file=sys.stderr)
    try:
        convert.convert(checkpoint, directory, arch=entry.arch, width=entry.width,
                        image_size=image_size, trust_pickle=trust_pickle,
                        extra_config=published_config(entry))
    except UserError as error:
        if "--trust-pickle" in str(error):
            raise UserError(f"{error} For this model run once: python main.py convert "
                            f"--published {entry.name} --trust-pickle") from error
        raise
    return directory


def published_config(entry: PublishedModel) -> dict:
    """The facts about ``entry`` that go into the converted model's ``config.json``."""
    return {
        "dataset": "imagenet",
        "attack": entry.attack,
        "eps": entry.eps,
        "eps_label": entry.eps_label,
        "published": {
            "name": entry.name,
            "origin": entry.origin,
            "url": entry.urls[0].split("?")[0],
            "imagenet_top1": entry.imagenet_top1,
        },
    }


def resolve(name: str) -> Path | None:
    """The converted model directory for a published name (None if not published)."""
    entry = REGISTRY.get(name)
    if entry is None:
        return None
    return ensure_converted(entry)
