"""The shared state of a sweep's results directory: its rows, its lock and its claims.

See ``sweeps`` for how processes use them: the lock is held around every read-modify-write
of the directory, a claim marker names the process running a cell and is kept fresh by a
``Heartbeat``, and a row is appended only once per cell.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from tftransfer import runs
from tftransfer.errors import UserError
from tftransfer.sweeps.result_files import find_result_files
from tftransfer.sweeps.cells import Cell

LOCK_FILE = Path("runs") / ".lock"        # relative to the results directory
CLAIMS_DIR = Path("runs") / ".claims"
CLOCK_FILE = Path("runs") / ".clock"     # touched to read the file server's clock
HEARTBEAT_SECONDS = 60
# Long enough that a busy machine's late heartbeat is not mistaken for a dead process.
CLAIM_STALE_SECONDS = 15 * 60


def results_file(results_dir, index: int, count: int) -> Path:
    """``results.csv``, or ``results.shard-i-of-n.csv`` for a shard."""
    name = "results.csv" if count == 1 else f"results.shard-{index}-of-{count}.csv"
    return Path(results_dir) / name


def read_rows(path) -> list[dict]:
    """The rows of a results CSV ([] when it does not exist).

    Raises:
      UserError: a byte that is not UTF-8, or a row with more fields than the header
        (rewritten, its extra fields would become a column without a name).
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise UserError(f"Line {line} of {path} is not UTF-8 text (byte "
                        f"0x{data[error.start]:02x}); fix or remove that line.") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    for row in reader:
        if None in row:
            columns = len(reader.fieldnames)
            raise UserError(f"Line {reader.line_num} of {path} has {columns + len(row[None])} "
                            f"fields, more than the {columns} columns of its header; fix or "
                            f"remove that line.")
        rows.append(row)
    return rows


def finished_keys(results_dir) -> set[str]:
    """The ``run_key`` of every row of every results file in ``results_dir`` (the files
    ``report`` merges, all shards included), so a cell finished under another shard
    layout counts as done."""
    try:
        files = find_result_files(results_dir)
    except UserError:  # no directory or no results file yet: nothing is finished
        return set()
    return {row["run_key"] for path in files for row in read_rows(path) if row.get("run_key")}


def locked(results_dir):
    """Holds the exclusive lock of ``results_dir`` (waiting for it) for the ``with`` body."""
    return runs.locked(Path(results_dir) / LOCK_FILE)


def append_row(path, row: dict) -> None:
    """Adds ``row`` to the results CSV ``path``, under its directory's lock, so rows that
    concurrent processes append are all kept."""
    with locked(Path(path).parent):
        _write_with_row(path, row)


def _write_with_row(path, row: dict) -> None:
    """Rewrites the CSV atomically with ``row`` added (the columns are the union); the
    caller holds the directory's lock."""
    runs.write_csv_atomic(path, read_rows(path) + [row])


@dataclasses.dataclass(frozen=True)
class Claim:
    """This process's claim of one cell: the cell, its results directory and the token
    written into the marker."""

    cell: Cell
    results_dir: Path
    token: str

    @property
    def path(self) -> Path:
        """The claim marker."""
        return claim_path(self.results_dir, self.cell)


def claim_path(results_dir, cell: Cell) -> Path:
    """The claim marker of ``cell`` in ``results_dir``."""
    return Path(results_dir) / CLAIMS_DIR / f"{cell.file_name}.json"


def claim_next(results_dir, candidates: list[Cell], skip=frozenset()) -> Claim | None:
    """Claims the first cell of ``candidates`` that no results file holds, that is not in
    ``skip`` (keys) and that no live process has claimed; None when there is none.

    The results files are read now, under the directory's lock, so that concurrent
    processes never claim the same cell.
    """
    claims = claim_cells(results_dir, candidates, skip, limit=1)
    return claims[0] if claims else None


def claim_cells(results_dir, candidates: list[Cell], skip=frozenset(),
                limit: int = 1) -> list[Claim]:
    """Claims the first ``limit`` cells of ``candidates`` that ``claim_next`` could claim,
    all under one hold of the directory's lock (the seeds of a cell trained together)."""
    results_dir = Path(results_dir)
    claims = []
    with locked(results_dir):
        finished = finished_keys(results_dir)
        now = file_clock(results_dir)
        for cell in candidates:
            if len(claims) >= limit:
                break
            if cell.key in finished or cell.key in skip:
                continue
            path = claim_path(results_dir, cell)
            if path.exists() and claim_is_live(path, now):
                continue
            if path.exists():
                print(f"\nrun {cell.key}: taking over the claim of a stopped process "
                      f"({_describe_claim(path)})", file=sys.stderr)
            token = uuid.uuid4().hex
            runs.write_json(path, {"run_key": cell.key, "pid": os.getpid(),
                                   "host": socket.gethostname(), "token": token,
                                   "claimed_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
            claims.append(Claim(cell, results_dir, token))
    return claims


def file_clock(results_dir) -> float:
    """The file server's time now: the time of a file touched in ``results_dir``.

    A claim's heartbeat time is set by the file server's clock (NFS sets a touched file's
    time on the server), so its age is measured against that clock, not this host's: hosts
    whose clocks disagree by minutes still agree on which claims are stale.
    """
    path = Path(results_dir) / CLOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()  # an existing file gets the time now (utime)
    return path.stat().st_mtime


def claim_is_live(path, now: float | None = None) -> bool:
    """Whether the claim marker ``path`` belongs to a process that may still be running:
    its heartbeat is recent by the file server's clock (``now``, from ``file_clock``; this
    host's clock when None) and, on this host, its pid is alive. An unreadable marker is
    not live (markers are written atomically, so it cannot be one being written)."""
    path = Path(path)
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
        claim = runs.read_json(path)
        pid, host = int(claim["pid"]), claim["host"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if age > CLAIM_STALE_SECONDS:
        return False
    return host != socket.gethostname() or process_alive(pid)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running (a zombie, killed but not yet
    reaped by its parent, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS): os.kill's answer is all there is
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def release_claim(claim: Claim) -> None:
    """Removes ``claim``'s marker unless another process has taken it over since."""
    with locked(claim.results_dir):
        with contextlib.suppress(OSError, ValueError, KeyError):
            if runs.read_json(claim.path)["token"] == claim.token:
                claim.path.unlink()


def record_row(results_dir, path, cell: Cell, row: dict) -> bool:
    """Appends ``row`` of ``cell`` to the results CSV ``path`` unless a results file of
    the directory already holds the cell (it ran elsewhere after a claim was taken over
    from this process); returns whether it was appended."""
    with locked(results_dir):
        if cell.key in finished_keys(results_dir):
            print(f"\nrun {cell.key}: another process recorded it meanwhile; this run's row "
                  f"is not added.", file=sys.stderr)
            return False
        _write_with_row(path, row)
        return True


def claimed_elsewhere(results_dir, candidates: list[Cell]) -> int:
    """How many unfinished cells of ``candidates`` a live process holds a claim on."""
    results_dir = Path(results_dir)
    finished = finished_keys(results_dir)
    now = file_clock(results_dir)
    return sum(1 for cell in candidates if cell.key not in finished
               and claim_is_live(claim_path(results_dir, cell), now))


def _describe_claim(path: Path) -> str:
    try:
        claim = runs.read_json(path)
        return f"pid {claim['pid']} on {claim['host']}, claimed at {claim['claimed_at']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable marker"


class Heartbeat:
    """Touches a claim marker every ``interval`` seconds while the ``with`` body runs, so
    that processes on other hosts can tell a live claim from a dead one."""

    def __init__(self, path, interval: float = HEARTBEAT_SECONDS):
        self.path, self.interval = Path(path), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()

    def _beat(self):
        while not self._stop.wait(self.interval):
            try:
                os.utime(self.path)
            except FileNotFoundError:  # released, or taken over and finished elsewhere
                return
