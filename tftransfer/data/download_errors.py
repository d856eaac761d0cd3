"""A failed TFDS ``download_and_prepare`` -> one sentence that names its real cause.

TFDS wraps the exception that stopped it (often twice: a thread pool, then its own reraise),
so the cause is found by walking the whole ``__cause__`` / ``__context__`` chain; the first
cause recognised there wins, in the order of ``_CAUSES``.
"""

from __future__ import annotations

import errno
import os
import socket

_DNS_WORDS = ("name or service not known", "temporary failure in name resolution",
              "nodename nor servname", "nameresolutionerror", "failed to resolve",
              "getaddrinfo failed", "no address associated with hostname")
_NETWORK_WORDS = ("connection refused", "network is unreachable", "max retries exceeded",
                  "connection reset", "timed out", "no route to host", "connectionerror",
                  "sslerror", "proxyerror")
# How to get a dataset without a network here: the end of every network sentence.
_ELSEWHERE = ("prepare it on a machine with internet access and point --data-dir (or "
              "TFDS_DATA_DIR) at a copy of that folder")


def chain(error: BaseException) -> list[BaseException]:
    """``error`` and every exception it was raised from or during, outermost first."""
    seen, todo = [], [error]
    while todo:
        current = todo.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [current.__cause__, current.__context__]
    return seen


def _missing_module(error, name, where):
    if isinstance(error, ModuleNotFoundError) and error.name:
        module = error.name.split(".")[0]
        return (f"Could not prepare {name!r}: TensorFlow Datasets needs the Python module "
                f"{module!r}, which is not installed; run `pip install {module}` (or reinstall "
                f"tftransfer with `pip install -e .`) and try again.")
    return None


def _manual_download(error, name, where):
    text = str(error)
    if "Manual directory" in text or "manual_dir" in text:
        manual = os.path.join(where, "downloads", "manual")
        return (f"Dataset {name!r} cannot be downloaded automatically: download its files by "
                f"hand as its TFDS page says, put them in {manual}, and run again.")
    return None


def _dns(error, name, where):
    text = f"{type(error).__name__} {error}".lower()
    if isinstance(error, socket.gaierror) or any(word in text for word in _DNS_WORDS):
        return (f"Could not download {name!r}: the download server's host name could not be "
                f"resolved (no network or no DNS here); {_ELSEWHERE}.")
    return None


def _network(error, name, where):
    text = f"{type(error).__name__} {error}".lower()
    if isinstance(error, (ConnectionError, TimeoutError)) or any(w in text for w in _NETWORK_WORDS):
        return (f"Could not download {name!r}: the network connection failed "
                f"({_first_line(error)}); check the connection or proxy, or {_ELSEWHERE}.")
    return None


def _checksum(error, name, where):
    if type(error).__name__ == "NonMatchingChecksumError":
        return (f"Could not prepare {name!r}: a downloaded file does not match the checksum "
                f"TFDS records for it (a truncated or changed file: {_first_line(error)}); "
                f"delete {os.path.join(where, 'downloads')} and try again.")
    return None


def _http(error, name, where):
    if type(error).__name__ in ("DownloadError", "HTTPError"):
        return (f"Could not download {name!r}: the server refused the file "
                f"({_first_line(error)}); the dataset's source may have moved, see its TFDS "
                f"page for another way to get it.")
    return None


def _disk(error, name, where):
    if isinstance(error, PermissionError):
        return f"Could not prepare {name!r}: no permission to write in {where}; pass a --data-dir you can write."
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return f"Could not prepare {name!r}: no space left on the disk of {where}; free space or pass another --data-dir."
    return None


_CAUSES = (_missing_module, _manual_download, _dns, _network, _checksum, _http, _disk)


def _first_line(error) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def explain(error: BaseException, name: str, where: str) -> str:
    """One sentence for a ``download_and_prepare`` of dataset ``name`` into ``where`` that
    raised ``error``: a missing module, a manual-download dataset, DNS, the network, a
    checksum, an HTTP error or the disk, else the error itself."""
    errors = chain(error)
    for cause in _CAUSES:
        for candidate in errors:
            sentence = cause(candidate, name, where)
            if sentence:
                return sentence
    return f"Could not download and prepare {name!r} into {where} ({_first_line(errors[-1])})."


def unreachable_sentence(name: str, host: str, reason: str, seconds: float) -> str:
    """One sentence for a dataset whose download host failed the probe before any download:
    nothing was written, so the data directory is as it was."""
    return (f"Could not download {name!r}: its download server {host} cannot be reached from "
            f"here ({reason}, probed for {seconds:g} s; nothing was downloaded or written); "
            f"{_ELSEWHERE}.")
