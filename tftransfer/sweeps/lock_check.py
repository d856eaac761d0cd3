"""``sweep --check-locks DIR``: does ``flock`` exclude between processes on DIR's file system?

A sweep's workers share a results folder: its lock (``fcntl.flock`` on ``runs/.lock``) must
exclude between every two of them, and a claim's age is read from file times. This check
starts one process that holds a lock on a file in DIR and a second that must find it taken,
then free once the first lets go; it reads DIR's mount from ``/proc/mounts`` (an NFS mount
with ``local_lock=flock`` or ``local_lock=all``, or NFSv3's ``nolock``, keeps locks on each
client: processes on one host exclude each other, processes on different hosts do not), and
it measures how far the file server's clock (a touched file's time) is from this host's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tftransfer.errors import UserError

LOCK_NAME = ".lock-check"
# Each helper is a bare Python process (no tftransfer import): only flock is on trial.
_HOLD = ("import fcntl, sys, time\n"
         "handle = open(sys.argv[1], 'a+')\n"
         "fcntl.flock(handle, fcntl.LOCK_EX)\n"
         "print('held', flush=True)\n"
         "time.sleep(float(sys.argv[2]))\n")
_PROBE = ("import fcntl, sys\n"
          "handle = open(sys.argv[1], 'a+')\n"
          "try:\n"
          "    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
          "    print('free')\n"
          "except BlockingIOError:\n"
          "    print('busy')\n")


def check_locks(directory, hold_seconds: float = 2.0) -> dict:
    """Proves (or disproves) that ``flock`` excludes between two processes on ``directory``.

    Returns:
      ``ok`` (the lock excluded while held and was free after), the mount point, file
      system and options, whether locks stay local to this client (``local_lock``), the
      file server's clock minus this host's in seconds, and one-line ``notes``.

    Raises:
      UserError: ``directory`` cannot be created or written.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = directory / LOCK_NAME
        lock.touch()
    except OSError as error:
        raise UserError(f"--check-locks {directory}: cannot write there "
                        f"({error.strerror}).") from None
    excluded, released = _two_processes(lock, hold_seconds)
    mount = mount_of(directory)
    local = locks_are_local(mount)
    skew = clock_skew(lock)
    result = {"dir": str(directory.resolve()), "ok": excluded and released,
              "excluded_while_held": excluded, "free_after_release": released,
              **mount, "locks_local_to_this_host": local, "file_clock_minus_local_s": skew}
    result["notes"] = notes(result)
    for note in result["notes"]:
        print(f"check-locks: {note}", file=sys.stderr)
    return result


def _two_processes(lock: Path, hold_seconds: float) -> tuple[bool, bool]:
    """(a second process found the lock taken while the first held it, it found it free
    once the first had exited)."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(lock), str(hold_seconds)],
                              stdout=subprocess.PIPE, text=True)
    try:
        if holder.stdout.readline().strip() != "held":
            raise UserError(f"--check-locks: the process that takes the lock on {lock} "
                            f"failed (exit code {holder.wait()}).")
        excluded = _probe(lock) == "busy"
    finally:
        holder.wait()
    return excluded, _probe(lock) == "free"


def _probe(lock: Path) -> str:
    return subprocess.run([sys.executable, "-c", _PROBE, str(lock)], capture_output=True,
                          text=True, timeout=60).stdout.strip()


def mount_of(directory) -> dict:
    """The mount point, file system type and options of ``directory`` (``/proc/mounts``;
    "unknown" where there is none, e.g. macOS)."""
    path = os.path.realpath(directory)
    best = {"mount_point": "unknown", "filesystem": "unknown", "mount_options": ""}
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best
    longest = -1
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        point = fields[1].encode().decode("unicode_escape")  # "\040" is a space
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= longest:  # the last of stacked mounts is the one seen
            longest = len(point)
            best = {"mount_point": point, "filesystem": fields[2], "mount_options": fields[3]}
    return best


def locks_are_local(mount: dict) -> bool:
    """Whether an NFS mount keeps ``flock`` locks on this client (``local_lock=flock`` or
    ``all``, or ``nolock``), so that they do not exclude processes on other hosts."""
    if not mount["filesystem"].startswith("nfs"):
        return False
    options = mount["mount_options"].split(",")
    return any(o in ("local_lock=flock", "local_lock=all", "nolock") for o in options)


def clock_skew(path) -> float:
    """The file server's clock minus this host's, in seconds: ``path`` touched now (its
    time is set by the server on NFS) against the local time around the touch."""
    before = time.time()
    os.utime(path)
    after = time.time()
    return round(Path(path).stat().st_mtime - (before + after) / 2, 3)


def notes(result: dict) -> list[str]:
    """What the check found, one sentence each."""
    found = [f"{result['dir']} is on {result['filesystem']} ({result['mount_point']})."]
    if result["ok"]:
        found.append("flock excluded a second process while the first held the lock, and "
                     "was free after.")
    else:
        found.append("flock did NOT exclude between two processes here: do not run several "
                     "sweep workers on this folder.")
    if result["locks_local_to_this_host"]:
        found.append("this NFS mount keeps locks local to each client (local_lock or nolock "
                     "in its options): workers on different hosts would not exclude each "
                     "other; remount without it before running workers on several hosts.")
    found.append(f"the file server's clock is {result['file_clock_minus_local_s']:+.3f} s "
                 f"from this host's; claims are aged by the file server's clock.")
    return found
