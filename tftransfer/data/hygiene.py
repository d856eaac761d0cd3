"""Image files that decode but do not look like photos of the task: a placeholder ("image
not found"), a file in a format the rest of the folder does not use (a GIF among JPEGs:
scrapers save the site's stand-in image), or a byte-identical copy of another file (within
a class, across classes, or a test image that is also a training image).

Such a file trains or tests as a member of its class without a word, so
``check_images`` names them all in one warning line, or refuses them (``strict``).
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tftransfer.errors import UserError

# Words in a file name that mark a stand-in image rather than a photo (compared with the
# name's letters only, so "image_not_found.gif" and "NoImage.png" match).
PLACEHOLDER_WORDS = ("notfound", "placeholder", "missing", "noimage", "unavailable")
# A format (read from the file's first bytes, not its extension) held by less than this
# share of the folder's files is odd; a folder with two common formats is left alone.
ODD_FORMAT_SHARE = 0.1
# Files the one line names before it says how many more there are.
SHOWN = 5
# The first bytes of the formats the training pipeline decodes (sets.decode).
_SIGNATURES = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG", "png"), (b"GIF8", "gif"),
               (b"BM", "bmp"))


@dataclass(frozen=True)
class Suspect:
    """A file that does not look like a photo of the task, and why."""

    path: str
    reason: str


def check_images(paths, root, strict: bool = False) -> list[Suspect]:
    """Warns about (or, with ``strict``, refuses) the ``paths`` of the image folder ``root``
    that do not look like photos of the task; returns them.

    Args:
      paths: every readable image file of the folder, training and test.
      root: the folder; the paths are shown relative to it.
      strict: raise a ``UserError`` instead of printing the warning (``--strict-images``).
    """
    suspects = find_suspects(paths, root)
    if not suspects:
        return suspects
    listed = ", ".join(f"{s.path} ({s.reason})" for s in suspects[:SHOWN])
    if len(suspects) > SHOWN:
        listed += f" and {len(suspects) - SHOWN} more"
    if strict:
        raise UserError(f"--strict-images: {len(suspects)} file(s) in {root} do not look like "
                        f"photos of the task: {listed}; remove or replace them, or drop "
                        f"--strict-images.")
    print(f"warning: {len(suspects)} image file(s) in {root} do not look like photos of the "
          f"task and are used as they are: {listed} (--strict-images refuses them)",
          file=sys.stderr)
    return suspects


def find_suspects(paths, root) -> list[Suspect]:
    """The files of ``paths`` with a placeholder's name, an odd format or the same bytes as
    an earlier file, in the order of ``paths``, one entry per file with its reasons (paths
    relative to the folder ``root``)."""
    formats, digests = _read(paths, root)
    reasons: dict[str, list[str]] = {
        name: ["placeholder name"] if _placeholder_name(name) else [] for name in formats}
    for name, reason in _odd_formats(formats) + _duplicates(digests):
        reasons[name].append(reason)
    return [Suspect(name, "; ".join(why)) for name, why in reasons.items() if why]


def _read(paths, root) -> tuple[dict[str, str], dict[str, bytes]]:
    """The format and the SHA-256 digest of each file, by its path relative to ``root``
    (each file read once and not kept: a folder can be larger than memory)."""
    formats, digests = {}, {}
    for path in paths:
        data = Path(path).read_bytes()
        name = _relative(path, root)
        formats[name], digests[name] = image_format(data), hashlib.sha256(data).digest()
    return formats, digests


def _odd_formats(formats: dict[str, str]) -> list[tuple[str, str]]:
    """(file, reason) of each file in a format held by under ``ODD_FORMAT_SHARE`` of them."""
    counts = Counter(formats.values())
    common, held = counts.most_common(1)[0] if counts else (None, 0)
    return [(name, f"{kind} among {held} {common}") for name, kind in formats.items()
            if counts[kind] < ODD_FORMAT_SHARE * len(formats)]


def _duplicates(digests: dict[str, bytes]) -> list[tuple[str, str]]:
    """(file, reason) of each file with the same bytes as an earlier one."""
    first_with: dict[bytes, str] = {}
    found = []
    for name, digest in digests.items():
        if digest in first_with:
            found.append((name, f"same bytes as {first_with[digest]}"))
        else:
            first_with[digest] = name
    return found


def image_format(data: bytes) -> str:
    """The image format that ``data`` starts with (``unknown`` if none of the decoder's)."""
    return next((kind for magic, kind in _SIGNATURES if data.startswith(magic)), "unknown")


def _placeholder_name(path: str) -> bool:
    letters = re.sub(r"[^a-z]", "", Path(path).stem.lower())
    return any(word in letters for word in PLACEHOLDER_WORDS)


def _relative(path, root) -> str:
    path, root = Path(path), Path(root)
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
