"""Guards around a TFDS ``download_and_prepare``: a one-second reachability probe first, and no
folders left behind when it fails.

Offline, TFDS retries every file for minutes (urllib3's retries, each logged as a warning) and
leaves empty folders in the data directory before it gives up. The hosts its files come from are
known beforehand (the URLs of the checksums TFDS records for the dataset), so one TCP connection
to each, with a one-second limit on the name lookup and the connection together, tells at once
whether the download can start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

PROBE_SECONDS = 1.0


def download_hosts(builder) -> list[tuple[str, int]]:
    """The (host, port) pairs a download of ``builder``'s files connects to: the hosts of the
    URLs TFDS records checksums for (or the proxy they go through); none for a dataset built
    from local files, whose builder records no URLs, or whose download TFDS's own test double
    (``tfds.testing.mock_data``) replaces with a no-op."""
    if _mocked(builder):
        return []
    try:
        urls = list(builder.url_infos or ())
    except (OSError, ValueError):  # an unreadable checksums file: nothing is known to probe
        return []
    hosts = []
    for url in urls:
        parts = urllib.parse.urlsplit(_proxy_for(url))
        if parts.hostname and parts.scheme in ("http", "https"):
            port = parts.port or (443 if parts.scheme == "https" else 80)
            if (parts.hostname, port) not in hosts:
                hosts.append((parts.hostname, port))
    return hosts


def _mocked(builder) -> bool:
    """Whether ``download_and_prepare`` is ``tfds.testing.mock_data``'s, which downloads nothing
    (offline test suites fake datasets with it)."""
    method = getattr(type(builder), "download_and_prepare", None)
    return (getattr(method, "__module__", None) or "").startswith("tensorflow_datasets.testing")


def _proxy_for(url: str) -> str:
    """The proxy that a download of ``url`` goes through (``HTTPS_PROXY`` and the like, which
    TFDS's downloader honours), else ``url`` itself: what must be reachable."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and parts.hostname and not urllib.request.proxy_bypass(parts.hostname):
        return proxy if "://" in proxy else f"http://{proxy}"
    return url


def _connect(host: str, port: int, timeout: float, outcome: dict) -> None:
    """One connection attempt; ``outcome[host]`` is None on success, else the reason."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        outcome[host] = None
    except socket.gaierror:
        outcome[host] = "its name does not resolve"
    except OSError as error:  # refused, unreachable, timed out
        outcome[host] = error.strerror or str(error) or type(error).__name__


def unreachable(hosts, timeout: float = PROBE_SECONDS) -> tuple[str, str] | None:
    """The first of ``hosts`` that cannot be connected to within ``timeout`` seconds, with
    the reason, or None when all can.

    The attempts run in parallel daemon threads, so the whole probe takes at most
    ``timeout`` seconds even where a name lookup would hang (its own timeout is the
    resolver's, often many seconds).
    """
    outcome: dict = {}
    threads = [threading.Thread(target=_connect, args=(host, port, timeout, outcome),
                                daemon=True) for host, port in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)  # all started together: the first join waits the longest
    for host, _ in hosts:
        if host not in outcome:
            return host, f"no answer within {timeout:g} s"
        if outcome[host] is not None:
            return host, outcome[host]
    return None


def _entries(folder: Path) -> set[str]:
    return set(os.listdir(folder)) if folder.is_dir() else set()


@contextlib.contextmanager
def removed_on_failure(data_dir, name: str):
    """Removes what a failed preparation of dataset ``name`` created in ``data_dir``: the data
    directory itself if it is new, else its new entries and the new entries of the folders
    TFDS writes into (the dataset's own, ``downloads/``). What was there before is kept."""
    root = Path(data_dir)
    existed = root.is_dir()
    watched = [root, root / name, root / "downloads"]
    before = {folder: _entries(folder) for folder in watched if folder.is_dir()}
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(root, ignore_errors=True)
        for folder, entries in before.items():
            for entry in _entries(folder) - entries:
                _remove(folder / entry)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
