"""Registry of the published ImageNet ResNet checkpoints, downloaded and converted on first use.

Sources (figures copied from the authors' READMEs, None where none is published):

* MadryLab robustness library, https://github.com/MadryLab/robustness (README,
  "ImageNet L2-norm / Linf-norm (ResNet50)"): the eps 0 model there is PyTorch's
  own pre-trained ResNet-50 (76.13% top-1), i.e. torchvision's IMAGENET1K_V1
  weights. The library's ``.pt`` files were saved with torch 1.1 and dill, so they
  may need ``--trust-pickle``, and no checksum is published for them.
* Salman et al., "Do Adversarially Robust ImageNet Models Transfer Better?",
  https://github.com/microsoft/robust-models-transfer (README, "Standard Accuracy of
  L2-/Linf-Robust ImageNet Models"); files mirrored by the authors' lab at
  https://huggingface.co/madrylab/robust-imagenet-models .

Linf eps are stored in [0, 1] pixel units (4/255 = 0.0157); L2 eps at 224x224 px.

Checksums: every download is checked against the sha256 recorded here before it is
read. torchvision publishes the first 8 hex digits of the sha256 in its file names
(``torch.hub``'s ``check_hash`` convention); the Hugging Face mirror of Salman et al.
shows the full sha256 of each file (its Git LFS details, cited below). The MadryLab
``robustness`` README publishes no checksum for its Dropbox files, and four mirror pages
could not be found; those entries record None and say so wherever ``--trust-pickle``
is mentioned. A file whose sha256 differs is moved aside (``*.rejected``), never loaded.
The sha256 of every converted file is recorded in its ``config.json``.

Behaviour: whatever its checksum, every converted ImageNet model must recognise three photos
shipped with scikit-image (``tftransfer.sources.behaviour``) before it is saved; one that does
not is refused unless converted with ``--skip-behaviour-check``, and is listed as
``unverified``.

Each entry is a ``tftransfer.sources.registry.Source`` (the record local sources use too).
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
from pathlib import Path

from tftransfer.errors import UserError
from tftransfer.sources import behaviour
from tftransfer.sources.registry import Source

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


# The sha256 of each file of https://huggingface.co/madrylab/robust-imagenet-models as its
# page shows it ("Git LFS Details - SHA256"), e.g. .../blob/3f04ac9/resnet50_l2_eps3.ckpt
# (commit 3f04ac96136001cfe402022100728124cbe3fac5; the files were uploaded in 19f056c and
# not changed since). Not found, so not recorded: resnet50_l2_eps0.25, resnet50_linf_eps1.0,
# resnet18_l2_eps0.03, resnet18_linf_eps8.0.
_HF_SHA256_SOURCE = ("https://huggingface.co/madrylab/robust-imagenet-models/blob/"
                     "3f04ac96136001cfe402022100728124cbe3fac5/")
_HF_SHA256 = {
    "resnet50_l2_eps0.ckpt": "72d4a99582db5d7fa86c3fd2a089f0bfd6a10f69d635bca51f6ad72ac6b458f0",
    "resnet50_l2_eps0.01.ckpt": "53d7a7c09d2733b113e255ac9fc578091f44adb8d00eee274c0e71dd1f4dc41e",
    "resnet50_l2_eps0.03.ckpt": "e375df3bf07bf1360c04b0aff5cc19bb215e850b1af713327c87cf0353a5598f",
    "resnet50_l2_eps0.05.ckpt": "e09d8763fcf825542f07389a1904adf15930451b8661a0de209c3bc39828c2ea",
    "resnet50_l2_eps0.1.ckpt": "3298f8cf689e514d096df883ab491a11ee32c3b8d456d674add29d7b50721a43",
    "resnet50_l2_eps0.5.ckpt": "a5fc6fcc54946b73af7bd74289b0003cc9d2744fa0ff55c1a3d9fb2bce8fbd30",
    "resnet50_l2_eps1.ckpt": "09f5273a568830ae23caf9162a06f4831a920293e0da1801aa182289052dcf90",
    "resnet50_l2_eps3.ckpt": "380b14e6f9750bffa1447cf7017f65da4dc5ce71a3dd112f107515dcf7b14d9d",
    "resnet50_l2_eps5.ckpt": "c50db4bbd9a61bc0e0a33290e1f07a79080e16489aa5ada869efc88306f497be",
    "resnet50_linf_eps0.5.ckpt": "9612d8096ef5378b4a32746072f72fedcb02c7ff4b747bc7163274f7ec2f0fd8",
    "resnet50_linf_eps2.0.ckpt": "59f28de783a049cb4d91ba1c0a09c314db2cc4bb1e859566e023f842b02772ac",
    "resnet50_linf_eps4.0.ckpt": "9e62216975c111b8081481533b6142dec34be69abe5d90b54d7f860015c263db",
    "resnet50_linf_eps8.0.ckpt": "b907957f8e3ce209816813d8811c682e965a1b0f48455def828d35a4cc2953dc",
    "resnet18_l2_eps0.ckpt": "d762c58693a2ecaf93160060bb2c32493598540a08852fb3068e95e88f032623",
    "resnet18_l2_eps0.01.ckpt": "629a82377947785e5481eeaf4e22e3ca59a2eedeb4e385730ee2392b2678407d",
    "resnet18_l2_eps0.05.ckpt": "00912b1aa6d60cf7536b52762ed702e0b9cae822187200f42fe4f6a678771bed",
    "resnet18_l2_eps0.1.ckpt": "2477188559680d096a4eccf5bc7610317cab4b46a97094072d38a29a11bfa8fc",
    "resnet18_l2_eps0.25.ckpt": "2bed566c554755a0f6f82ddbe83c707d259801308f966e787bcd287f969c7911",
    "resnet18_l2_eps0.5.ckpt": "69a10462280f266ab855547fde0649ac909f06174ed8df83b8bf2ea0f6fc8150",
    "resnet18_l2_eps1.ckpt": "92e6c37af550167c7c49c77ad31aad027de4e1f47fbef57546a48ef43626ebcf",
    "resnet18_l2_eps3.ckpt": "b4315784a1a10257b05906aee94d6884678f7b77412d10100d7c05daa959eab0",
    "resnet18_l2_eps5.ckpt": "d3ef126afdf9144a22020988dc46f552a0c39347e954c34359a3cb6bf83df186",
    "resnet18_linf_eps0.5.ckpt": "48d5e933d4ec99b390a0b7c628a4303343f9517a46245cbd7d2f2c034cbd93ee",
    "resnet18_linf_eps1.0.ckpt": "b49800111d38197deefb0c236055fbdd9d91a0607e55d6cc0bce15504adc9582",
    "resnet18_linf_eps2.0.ckpt": "bf2611291cc5f792c7f8f17ff6f841f9a0ede32dbe575cbd5bc57233139ae8bd",
    "resnet18_linf_eps4.0.ckpt": "6f8ccef1ae4958c381617081e9e0fb5f50e7cccd4965192d1caa452fd6c5cd1e",
}
# torch.hub's naming convention: "filename-<sha256>.ext, where <sha256> is the first eight or
# more digits of the SHA256 hash of the contents of the file" (torch.hub.load_state_dict_from_url).
_TORCH_HUB_HASH = "https://pytorch.org/docs/stable/hub.html#torch.hub.load_state_dict_from_url"
# The four files above whose mirror page was not found: a sha256 is public, but not recorded here.
_HF_NOT_COPIED = ("not recorded: the Hugging Face mirror's page for this file, which shows its "
                  "sha256, could not be read when the others were copied")
# Looked for on 2026-12-07 and not found: a sha256 (or md5) of the robustness library's files.
_NO_PUBLIC_CHECKSUM = (
    "no public checksum: the robustness README links the files without one, and none is given "
    "in its GitHub issues or in the public code that downloads these Dropbox files")


def _published(name: str, file_name: str, urls: tuple, arch: str, attack: str, eps: float,
               eps_label: str, top1: float | None, sha256: str | None, origin: str,
               sha256_source: str | None = None, checksum_note: str = "") -> Source:
    """The record of one published ImageNet checkpoint (224 px, converted on first use)."""
    return Source(
        name=name, arch=arch, attack=attack, eps=eps, eps_label=eps_label, dataset="imagenet",
        image_size=IMAGE_SIZE, description=f"published ImageNet {arch}, {attack} eps {eps_label}",
        metrics={} if top1 is None else {"imagenet_top1": top1}, file_name=file_name,
        urls=urls, sha256=sha256, sha256_source=sha256_source, origin=origin,
        checksum_note=checksum_note)


def _salman(arch: str, attack: str, eps_label: str, file_eps: str, top1: float) -> Source:
    """An entry of Salman et al.'s table (robust-models-transfer README)."""
    file_name = f"{arch}_{attack}_eps{file_eps}.ckpt"
    eps = float(eps_label) if attack == "l2" else float(eps_label) / 255.0
    sha256 = _HF_SHA256.get(file_name)
    return _published(
        f"salman-{arch}-{attack}-eps{eps_label}", file_name,
        (_HF_MIRROR + file_name, _AZURE + file_name + _AZURE_QUERY), arch,
        "none" if eps == 0 else attack, eps,
        eps_label if attack == "l2" else f"{eps_label}/255", top1, sha256, _SALMAN_README,
        sha256_source=_HF_SHA256_SOURCE + file_name if sha256 else None,
        checksum_note="" if sha256 else _HF_NOT_COPIED)


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
    _published("resnet50-natural", "resnet50-0676ba61.pth",
               ("https://download.pytorch.org/models/resnet50-0676ba61.pth",), "resnet50",
               "none", 0.0, "0", 76.13, "0676ba61",
               f"torchvision IMAGENET1K_V1 (the eps=0 model of {_ROBUSTNESS_README})",
               sha256_source=_TORCH_HUB_HASH),
    # The robustness README's Dropbox files: no checksum is published for them.
    # The README links Dropbox pages (?dl=0); ?dl=1 is the same file as a direct download.
    _published("robust-resnet50-l2-eps3", "imagenet_l2_3_0.pt",
               ("https://www.dropbox.com/s/knf4uimlqsi1yz8/imagenet_l2_3_0.pt?dl=1",),
               "resnet50", "l2", 3.0, "3", 57.90, None, _ROBUSTNESS_README,
               checksum_note=_NO_PUBLIC_CHECKSUM),
    _published("robust-resnet50-linf-eps4", "imagenet_linf_4.pt",
               ("https://www.dropbox.com/s/axfuary2w1cnyrg/imagenet_linf_4.pt?dl=1",),
               "resnet50", "linf", 4 / 255, "4/255", 62.42, None, _ROBUSTNESS_README,
               checksum_note=_NO_PUBLIC_CHECKSUM),
    _published("robust-resnet50-linf-eps8", "imagenet_linf_8.pt",
               ("https://www.dropbox.com/s/yxn15a9zklz3s8q/imagenet_linf_8.pt?dl=1",),
               "resnet50", "linf", 8 / 255, "8/255", 47.91, None, _ROBUSTNESS_README,
               checksum_note=_NO_PUBLIC_CHECKSUM),
]
for _arch, _column in (("resnet50", 3), ("resnet18", 2)):
    _ENTRIES += [_salman(_arch, "l2", row[0], row[1], row[_column]) for row in _SALMAN_L2]
    _ENTRIES += [_salman(_arch, "linf", row[0], row[1], row[_column]) for row in _SALMAN_LINF]

REGISTRY: dict[str, Source] = {entry.name: entry for entry in _ENTRIES}


def names() -> list[str]:
    """Names of the published models, in registry order."""
    return list(REGISTRY)


def get(name: str) -> Source | None:
    """The published model called ``name``, or None."""
    return REGISTRY.get(name)


def cache_root() -> Path:
    """``$TFTRANSFER_CACHE`` if set, else ``~/.cache/tftransfer``."""
    return Path(os.environ.get("TFTRANSFER_CACHE") or Path.home() / ".cache" / "tftransfer")


def model_dir(entry: Source) -> Path:
    """Where the converted model (and its downloaded checkpoint) is cached."""
    return cache_root() / entry.name


def checkpoint_path(entry: Source) -> Path:
    """Where the downloaded checkpoint is kept (and where to put it by hand offline)."""
    return model_dir(entry) / entry.file_name


def table() -> str:
    """The registry as a plain-text table (``convert --list``); the sha256 column says what
    a download is checked against: a ``full`` published sha256, a ``prefix``, or ``none``;
    the behaviour column whether the cached model passed the behavioural check."""
    rows = [("name", "arch", "attack", "eps", "top1%", "cached", "sha256", "file", "behaviour")]
    for entry in REGISTRY.values():
        cached = "yes" if _is_converted(model_dir(entry)) else "no"
        top1 = entry.metrics.get("imagenet_top1")
        top1 = "?" if top1 is None else f"{top1:.2f}"
        rows.append((entry.name, entry.arch, entry.attack, entry.eps_label, top1, cached,
                     _verification(entry), entry.file_name, behaviour_status(entry)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in rows)


def _is_converted(directory: Path) -> bool:
    from tftransfer.sources import saving

    return (directory / saving.MODEL_FILE).is_file() and (directory / saving.CONFIG_FILE).is_file()


def behaviour_status(entry: Source) -> str:
    """``checked`` when the cached model passed the behavioural check, else ``unverified``
    (not converted yet, converted with ``--skip-behaviour-check``, or before the check)."""
    directory = model_dir(entry)
    if not _is_converted(directory):
        return behaviour.UNVERIFIED
    from tftransfer.sources import saving

    return behaviour.status(saving.read_config(directory))


def checksum_status(entry: Source) -> str:
    """How far a download of ``entry`` is verified, as a clause for messages."""
    if not entry.sha256:
        return ("tftransfer records no published sha256 for it, so nothing has verified that "
                "this file is the one its authors released")
    if len(entry.sha256) < 64:
        return (f"it matches only the {len(entry.sha256)}-hex-digit sha256 prefix "
                f"{entry.sha256} published in its file name (a prefix, not a full checksum)")
    return f"its sha256 matches the one published at {entry.sha256_source}"


def _verification(entry: Source) -> str:
    """``full``, ``prefix`` or ``none``: what ``download`` checked (recorded in config.json)."""
    if not entry.sha256:
        return "none"
    return "prefix" if len(entry.sha256) < 64 else "full"


def _check_sha256(digest: str, path: Path, entry: Source, source: str) -> None:
    """Moves ``path`` aside and raises unless its ``digest`` matches the published sha256."""
    if entry.sha256 and not digest.startswith(entry.sha256.lower()):
        rejected = path.with_name(path.name + ".rejected")
        path.replace(rejected)  # kept for inspection, out of the way of the next download
        where = f" ({entry.sha256_source})" if entry.sha256_source else ""
        raise UserError(f"The file from {source} for {entry.name!r} has sha256 {digest}, but "
                        f"{entry.sha256} is published{where}; it was moved to {rejected} and "
                        f"not loaded, so download it again.")


def _download_one(url: str, target: Path, progress: bool = True) -> str:
    """Streams ``url`` into ``target`` (via a .part file), returning the sha256; with
    ``progress``, the bytes received so far go to stderr every tenth (or 50 MB if the size
    is not announced)."""
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=_TIMEOUT_SECONDS) as response:
        total = int(response.headers.get("Content-Length") or 0)
        done, reported = 0, 0
        step = total // 10 if total else 50 << 20
        with open(partial, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress and (done - reported >= step or done == total):
                    reported = done
                    print(f"  {target.name}: {_bytes_done(done, total)}", file=sys.stderr)
    partial.replace(target)
    return digest.hexdigest()


def _bytes_done(done: int, total: int) -> str:
    """``12.3 of 102.5 MB (12%)``, or ``12.3 MB`` when the size is unknown."""
    if not total:
        return f"{done / 1e6:.1f} MB"
    return f"{done / 1e6:.1f} of {total / 1e6:.1f} MB ({100 * done // total}%)"


def download(entry: Source, progress: bool = True) -> Path:
    """Downloads the checkpoint once into the cache, checking the published sha256.

    A file already in the cache (downloaded before, or put there by hand) is checked too.
    A file whose sha256 differs is moved to ``*.rejected``; the next mirror is tried.

    Args:
      entry: a published record.
      progress: report the download (address, bytes received) on stderr.

    Returns:
      The checkpoint path. Offline, stops with the URL to fetch and where to put it.
    """
    from tftransfer.convert import file_sha256

    target = checkpoint_path(entry)
    if target.is_file():
        if entry.sha256:  # reading a 200 MB file for nothing to compare with is wasted
            _check_sha256(file_sha256(target), target, entry, str(target))
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    failures, mismatch = [], None
    for url in entry.urls:
        source = url.split("?")[0]
        if progress:
            print(f"downloading {entry.name} from {source}", file=sys.stderr)
        try:
            digest = _download_one(url, target, progress)
        except (urllib.error.URLError, OSError, ValueError) as error:
            # URLError/HTTPError/timeouts are OSErrors; ValueError: a malformed URL
            failures.append(f"{source}: {str(error).rstrip('.')}")
            continue
        try:
            _check_sha256(digest, target, entry, source)
        except UserError as error:
            print(f"warning: {error}", file=sys.stderr)
            mismatch = mismatch or error
            continue
        return target
    if mismatch is not None:
        raise mismatch
    raise offline_error(entry, failures[0])


def offline_error(entry: Source, reason: str) -> UserError:
    """The one sentence for a checkpoint that cannot be downloaded: which file goes where."""
    return UserError(
        f"Could not download source {entry.name!r} ({reason}); put the checkpoint file "
        f"{entry.file_name} (from {entry.urls[0]}) into the cache directory "
        f"{model_dir(entry)}/, so that {checkpoint_path(entry)} exists (or set TFTRANSFER_CACHE "
        f"to a folder that holds {entry.name}/{entry.file_name}), and run the command again.")


def ensure_converted(entry: Source, image_size: int = IMAGE_SIZE,
                     trust_pickle: bool = False, out_dir=None, progress: bool = True,
                     skip_behaviour_check: bool = False) -> Path:
    """The converted model directory of ``entry``, downloading and converting once.

    Args:
      entry: a registry entry.
      image_size: input size of the converted model (224 for the published models).
      trust_pickle: allow an unsafe full unpickling (dill-pickled robustness files).
      out_dir: where to write the model; default the cache directory.
      progress: report the download and the conversion on stderr.
      skip_behaviour_check: save an ImageNet model that fails the behavioural check
        (``behaviour``) instead of refusing it; the result is recorded all the same.

    Returns:
      The model directory.
    """
    from tftransfer import convert
    from tftransfer.sources import saving

    directory = Path(out_dir) if out_dir else model_dir(entry)
    if _is_converted(directory):
        if progress:
            _warn_if_unverified(entry, directory)
        return directory
    checkpoint = download(entry, progress)
    if progress:
        print(f"converting {checkpoint} -> {directory}", file=sys.stderr)
    try:
        converted = convert.convert(checkpoint, arch=entry.arch, width=entry.width,
                                    image_size=image_size, trust_pickle=trust_pickle,
                                    extra_config=published_config(entry))
    except convert.UnsafePickleError as error:
        raise UserError(f"{str(checkpoint)!r} holds pickled Python objects that the safe "
                        f"loader refuses ({error.reason}), and {checksum_status(entry)}; only "
                        f"if you trust it ({entry.origin}) run once: python main.py convert "
                        f"--published {entry.name} --trust-pickle (unpickling can run "
                        f"arbitrary code).") from error
    checked = _check_behaviour(entry, converted.model, checkpoint, skip_behaviour_check)
    saving.save_model_dir(converted.model, directory, {**converted.config, **checked})
    return directory


def _check_behaviour(entry: Source, model, checkpoint: Path, skip: bool) -> dict:
    """The converted model's ``behaviour_check`` record (an ImageNet model's only); refuses a
    model that fails it unless ``skip``: a wrong file converts as cleanly as the right one."""
    if entry.dataset != "imagenet":
        return {}
    from tftransfer.convert import report_phase

    record = behaviour.run(model)
    report_phase(f"behaviour check on {len(behaviour.PHOTOS)} scikit-image photos: "
                 f"{record['status']}")
    if record["status"] != "passed" and not skip:
        raise UserError(
            f"The converted {entry.name!r} does not behave like an ImageNet classifier "
            f"({behaviour.failure_clause(record)}), so it was not saved: "
            f"{_suspect(entry, checkpoint)}, or, if you trust it, convert it anyway with: python "
            f"main.py convert --published {entry.name} {behaviour.SKIP_FLAG} (the result is "
            f"recorded and the model listed as unverified).")
    return {"behaviour_check": record}


def _suspect(entry: Source, checkpoint: Path) -> str:
    """What a failed behavioural check says about ``checkpoint``, given its checksum."""
    if _verification(entry) == "full":  # the authors' own file: the fault is on this side
        return (f"{checkpoint} has the published sha256, so the conversion or the check is at "
                f"fault; please report it")
    return (f"{checkpoint} may not be the file its authors released ({checksum_status(entry)}); "
            f"delete it and run again to download it anew")


def _warn_if_unverified(entry: Source, directory: Path) -> None:
    """One stderr line when a cached ImageNet model never passed the behavioural check."""
    from tftransfer.sources import saving

    if entry.dataset == "imagenet" and \
            behaviour.status(saving.read_config(directory)) != behaviour.CHECKED:
        print(f"warning: {entry.name} in {directory} is unverified: it did not pass the "
              f"behavioural check (converted before it existed, or with {behaviour.SKIP_FLAG}); "
              f"delete that folder to convert and check it again", file=sys.stderr)


def published_config(entry: Source) -> dict:
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
            "imagenet_top1": entry.metrics.get("imagenet_top1"),
            "sha256": entry.sha256,
            "sha256_source": entry.sha256_source,
            "sha256_verified": _verification(entry),
        },
    }


def is_cached(entry: Source) -> bool:
    """Whether ``entry`` is converted in the cache already (no download on first use)."""
    return _is_converted(model_dir(entry))


def resolve(name: str, progress: bool = True) -> Path | None:
    """The converted model directory for a published name (None if not published)."""
    entry = REGISTRY.get(name)
    if entry is None:
        return None
    return ensure_converted(entry, progress=progress)
