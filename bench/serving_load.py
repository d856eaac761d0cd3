"""Serving under load: a bounded load against a running model server's REST predict API.

For each concurrency (default 1, 8, 32) and batch size (default 1, 16) it sends up to
``--requests`` predict requests (PNG bytes as ``{"b64": ...}``, the ``serving_default``
signature), from that many client threads, each on its own keep-alive connection, and stops
early at ``--max-seconds``. It prints requests/s, images/s, latency percentiles, errors
(any answer but 200 with one prediction per image) and the server's resident memory
(``VmRSS`` of its pid) before and after each setting.

Without ``--server`` it exports a fresh ResNet-20 (width 1.0, 32 px, 10 classes, random
weights, as bench/serving.py) and starts KServe's model server on it (``serve --backend
kserve``; needs a Python with the [serve] extra), then stops it. Writes the table, with the
command and the machine's load, under its heading in bench/README.md.

    python bench/serving_load.py [--server http://127.0.0.1:8501 --model NAME --pid PID]
        [--requests 2000] [--max-seconds 60] [--concurrency 1 8 32] [--batch 1 16]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import io
import json
import shlex
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from common import machine_note
from serving import background_jobs, load_or_build, percentiles, png_batch, write_section

HEADING = "## Serving under load: KServe's model server (issue 35)"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resident_mb(pid: int | None) -> float | None:
    """The resident memory of process ``pid`` in MB (``/proc/PID/status``), or None."""
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def request_body(batch: int, image_size: int) -> bytes:
    """One predict request of ``batch`` random PNG images, as JSON bytes."""
    images = png_batch(batch, image_size, seed=batch)
    return json.dumps({"signature_name": "serving_default",
                       "instances": [{"b64": base64.b64encode(i).decode()} for i in images]
                       }).encode()


def run_setting(url: str, body: bytes, batch: int, concurrency: int, requests: int,
                max_seconds: float) -> dict:
    """Sends up to ``requests`` requests from ``concurrency`` threads (stopping at
    ``max_seconds``); latencies, errors, the count sent and the wall time."""
    parts = urllib.parse.urlsplit(url)
    left = [requests]
    lock = threading.Lock()
    latencies, errors = [], []
    deadline = time.monotonic() + max_seconds

    def take() -> bool:
        with lock:
            if left[0] <= 0 or time.monotonic() > deadline:
                return False
            left[0] -= 1
            return True

    def client():
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        while take():
            began = time.perf_counter()
            ok = _predict(connection, parts.path, body, batch)
            with lock:
                latencies.append(time.perf_counter() - began)
                if not ok:
                    errors.append(1)
            if not ok:  # a fresh connection after an error
                connection.close()
                connection = http.client.HTTPConnection(parts.hostname, parts.port,
                                                        timeout=120)
        connection.close()

    began = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"sent": len(latencies), "errors": len(errors), "seconds": time.monotonic() - began,
            "latencies": latencies}


def _predict(connection, path: str, body: bytes, batch: int) -> bool:
    """One request on ``connection``: whether it got 200 and ``batch`` predictions."""
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = response.read()
        return response.status == 200 and len(json.loads(answer)["predictions"]) == batch
    except (OSError, http.client.HTTPException, ValueError, KeyError):
        return False


def measure(url: str, pid, image_size: int, args) -> list[dict]:
    """One row per (batch, concurrency)."""
    rows = []
    for batch in args.batch:
        body = request_body(batch, image_size)
        run_setting(url, body, batch, 1, 5, 60)  # warm-up: the graph's first calls trace
        for concurrency in args.concurrency:
            before = resident_mb(pid)
            result = run_setting(url, body, batch, concurrency, args.requests,
                                 args.max_seconds)
            p50, p90, p99 = percentiles(result["latencies"])
            rows.append({"batch": batch, "concurrency": concurrency, "sent": result["sent"],
                         "seconds": result["seconds"],
                         "rps": result["sent"] / result["seconds"], "p50": p50, "p90": p90,
                         "p99": p99, "errors": result["errors"], "rss_before": before,
                         "rss_after": resident_mb(pid)})
            print(f"  batch {batch:>2} concurrency {concurrency:>2}: {rows[-1]['rps']:.1f} "
                  f"req/s, p50 {p50:.1f} ms, {result['errors']} errors", file=sys.stderr,
                  flush=True)
    return rows


def table(rows) -> str:
    """The rows as a markdown table."""
    lines = ["| batch | concurrency | requests | seconds | requests/s | images/s | p50 ms "
             "| p90 ms | p99 ms | errors | server RSS before -> after MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rss = (f"{r['rss_before']:.0f} -> {r['rss_after']:.0f}" if r["rss_before"] is not None
               else "n/a")
        lines.append(f"| {r['batch']} | {r['concurrency']} | {r['sent']} | {r['seconds']:.1f} "
                     f"| {r['rps']:.1f} | {r['rps'] * r['batch']:.0f} | {r['p50']:.1f} "
                     f"| {r['p90']:.1f} | {r['p99']:.1f} | {r['errors']} | {rss} |")
    return "\n".join(lines)


@contextlib.contextmanager
def started_server(args, workdir: Path):
    """(url, model name, pid, image size, description) of the server to load: the one
    given, or KServe's started here on a fresh export (stopped afterwards)."""
    if args.server:
        yield args.server, args.model, args.pid, args.image_size, f"the server at {args.server}"
        return
    from tftransfer.serving import export, kserve_server
    from tftransfer.serving.server import stop_process

    model_ref, description = load_or_build(None, workdir)
    with contextlib.redirect_stderr(io.StringIO()):
        exported = export.export_model(model_ref, "bench", base=workdir / "base")
    port = free_port()
    server = kserve_server.start_kserve_server(workdir / "base" / "bench", "bench", port,
                                               timeout=300)
    try:
        yield (f"http://127.0.0.1:{port}", "bench", server.process.pid, exported["image_size"],
               f"KServe's model server (kserve 0.21, one process) on {description}")
    finally:
        stop_process(server.process)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=None, help="REST URL of a running server")
    parser.add_argument("--model", default="bench", help="its model name")
    parser.add_argument("--pid", type=int, default=None, help="its pid (for its memory)")
    parser.add_argument("--image-size", type=int, default=32, help="image size sent")
    parser.add_argument("--requests", type=int, default=2000, help="requests per setting")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="time cap per setting (seconds)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--no-readme", action="store_true", help="do not update bench/README.md")
    args = parser.parse_args()
    note, jobs = machine_note(), background_jobs()
    print(note, file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp, started_server(args, Path(tmp)) as started:
        url, name, pid, image_size, description = started
        rows = measure(f"{url.rstrip('/')}/v1/models/{name}:predict", pid, image_size, args)
    result = table(rows)
    print(result)
    if not args.no_readme:
        command = ("python bench/serving_load.py " + shlex.join(sys.argv[1:])).strip()
        write_section(readme_section(result, summary(rows), command, description, args, note,
                                     jobs), heading=HEADING)


def summary(rows) -> str:
    """Errors and the server's memory over the whole run, in one sentence."""
    sent, errors = sum(r["sent"] for r in rows), sum(r["errors"] for r in rows)
    first, last = rows[0]["rss_before"], rows[-1]["rss_after"]
    memory = (f"; the server's resident memory went from {first:.0f} MB to {last:.0f} MB"
              if first is not None else "")
    return f"{errors} errors in {sent} requests{memory}."


def readme_section(result: str, summary_line: str, command: str, description: str, args,
                   note: str, jobs: list[str]) -> str:
    """The README section: command, setting, table and how to read it."""
    import tensorflow as tf

    busy = ("**Other jobs shared the 2 cores during this measurement** (" +
            "; ".join(f"`{j[:100]}`" for j in jobs) + "), and the load generator's threads "
            "run on the same cores as the server, so absolute figures are low and noisy.\n"
            if jobs else "The load generator's threads run on the same cores as the server.\n")
    return f"""{HEADING}

`{command}` — {description}; TensorFlow {tf.__version__}, measured on {time.strftime('%Y-%m-%d')}.
Each setting sends up to {args.requests} requests of `batch` random {args.image_size} px PNGs
(`serving_default`, `{{"b64": ...}}`) over HTTP on 127.0.0.1 from `concurrency` threads, each
on its own keep-alive connection, and stops at {args.max_seconds:g} s; latency is per request
(the whole batch). An error is any answer but 200 with one prediction per image. Server RSS
is the server process's resident memory before and after the setting.
{busy}Compare with the in-process rows of the Serving section (the same model called without
HTTP, on another day's load).

{result}

{summary_line}

Machine while measuring:

```
{note}
```
"""


if __name__ == "__main__":
    main()
