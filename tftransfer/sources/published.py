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
# The table of checkpoints (data) is published_table; REGISTRY and IMAGE_SIZE are its objects.
from tftransfer.sources.published_table import IMAGE_SIZE, REGISTRY
from tftransfer.sources.registry import Source

_TIMEOUT_SECONDS = 60


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
