"""Serving: the exported SavedModel's signatures vs calling the Keras model directly.

Measures, in one run, latency percentiles (p50/p90/p99 per call) and images per second
at batch 1 and batch 32 of:

* ``keras model(x)``: the Keras model called eagerly on preprocessed float32 images;
* ``keras predict_on_batch``: Keras' compiled predict step;
* ``keras + decode``: eager PNG decode + ``data.to_model_input`` + ``model(x)`` (what a
  Python service without the SavedModel would do);
* ``SavedModel predict_images``: the exported float32 signature;
* ``SavedModel serving_default``: the exported bytes signature (PNG decode and resize
  in the graph).

Prints a markdown table and writes it, with the command, under "## Serving" in
bench/README.md (replacing only that section).

    python bench/serving.py [--model RUN_DIR] [--calls 200] [--calls-32 40]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine_note

import numpy as np
import tensorflow as tf
from PIL import Image

from tftransfer import data
from tftransfer.serving import export
from tftransfer.models import resnet
from tftransfer.sources import saving

README = Path(__file__).resolve().parent / "README.md"
HEADING = "## Serving"


def percentiles(latencies) -> tuple[float, float, float]:
    """p50, p90 and p99 of ``latencies`` (seconds) in milliseconds."""
    return tuple(float(np.percentile(latencies, q)) * 1e3 for q in (50, 90, 99))


def time_interleaved(fns: dict, calls: int, warmup: int = 5) -> dict:
    """Per-call wall times of each ``fn()``, called in turn (round-robin) after ``warmup``
    untimed rounds: on a shared machine every path then sees the same background load."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: np.empty(calls) for name in fns}
    for i in range(calls):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name][i] = time.perf_counter() - start
    return times


def png_batch(batch: int, size: int, seed: int) -> list[bytes]:
    """``batch`` random RGB images of ``size`` x ``size`` pixels as PNG bytes."""
    rng = np.random.default_rng(seed)
    encoded = []
    for _ in range(batch):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    return encoded


def candidates(model, loaded, image_size: int, batch: int) -> dict:
    """name -> zero-argument callable classifying one batch (outputs fetched to numpy)."""
    encoded = png_batch(batch, image_size, seed=batch)
    pixels = tf.stack([data.to_model_input(tf.io.decode_png(e, channels=3), image_size)
                       for e in encoded])
    strings = tf.constant(encoded)
    serve_bytes = loaded.signatures[export.SERVING_SIGNATURE]
    serve_pixels = loaded.signatures[export.IMAGES_SIGNATURE]

    def keras_with_decode():
        x = tf.stack([data.to_model_input(tf.io.decode_image(e, channels=3,
                                                             expand_animations=False),
                                          image_size) for e in encoded])
        return model(x, training=False).numpy()

    return {
        "keras model(x)": lambda: model(pixels, training=False).numpy(),
        "keras predict_on_batch": lambda: model.predict_on_batch(pixels),
        "keras + eager PNG decode": keras_with_decode,
        "SavedModel predict_images": lambda: serve_pixels(images=pixels)["probabilities"].numpy(),
        "SavedModel serving_default (PNG)":
            lambda: serve_bytes(image_bytes=strings)["probabilities"].numpy(),
    }


def measure(model, loaded, image_size: int, calls_by_batch: dict) -> list[dict]:
    """One row per (batch size, candidate): latency percentiles and images per second."""
    rows = []
    for batch, calls in calls_by_batch.items():
        timed = time_interleaved(candidates(model, loaded, image_size, batch), calls)
        for name, times in timed.items():
            p50, p90, p99 = percentiles(times)
            rows.append({"path": name, "batch": batch, "calls": calls, "p50": p50, "p90": p90,
                         "p99": p99, "images_per_s": batch * calls / times.sum()})
            print(f"  batch {batch:>2} {name:<34} p50 {p50:7.2f} ms  "
                  f"{rows[-1]['images_per_s']:8.0f} img/s", file=sys.stderr, flush=True)
    return rows


def table(rows) -> str:
    """The rows as a markdown table."""
    lines = ["| path | batch | calls | p50 ms | p90 ms | p99 ms | images/s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['path']} | {r['batch']} | {r['calls']} | {r['p50']:.2f} | {r['p90']:.2f} "
              f"| {r['p99']:.2f} | {r['images_per_s']:.0f} |" for r in rows]
    return "\n".join(lines)


def write_section(section: str, readme: Path = README, heading: str = HEADING) -> None:
    """Puts ``section`` (starting with ``heading``) into ``readme``: replaces the existing
    section of that heading only, or appends one; other sections stay as they are."""
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    start = text.find(f"\n{heading}\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        end = text.find("\n## ", start + 1)
        rest = text[end:] if end >= 0 else "\n"
        text = text[:start] + "\n" + section.rstrip("\n") + "\n" + rest
    readme.write_text(text)


def load_or_build(model_ref: str | None, workdir: Path):
    """The model directory to benchmark: ``model_ref``, or a fresh ResNet-20 (width 1,
    32 px, 10 classes, random weights: speed does not depend on the weights)."""
    if model_ref:
        return model_ref, "model " + model_ref
    tf.keras.utils.set_random_seed(0)
    model = resnet.build("resnet20", 10, 32)
    directory = workdir / "model"
    saving.save_model_dir(model, directory, {"class_names": [f"c{i}" for i in range(10)],
                                             "image_size": 32, "kind": "benchmark"})
    return directory, "ResNet-20 (width 1.0, 32 px, 10 classes, random weights)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="run or model directory (default: a fresh ResNet-20 at 32 px)")
    parser.add_argument("--calls", type=int, default=200, help="timed calls at batch 1")
    parser.add_argument("--calls-32", type=int, default=40, help="timed calls at batch 32")
    parser.add_argument("--no-readme", action="store_true", help="do not update bench/README.md")
    args = parser.parse_args()
    note, jobs = machine_note(), background_jobs()  # before measuring: jobs may end meanwhile
    print(note, file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        model_ref, description = load_or_build(args.model, Path(tmp))
        with contextlib.redirect_stderr(io.StringIO()):
            exported = export.export_model(model_ref, "bench", base=Path(tmp) / "base")
        loaded = tf.saved_model.load(exported["export_dir"])
        model = saving.load_model(model_ref)
        rows = measure(model, loaded, exported["image_size"], {1: args.calls, 32: args.calls_32})
    result = table(rows)
    print(result)
    if not args.no_readme:
        command = "python bench/serving.py " + shlex.join(sys.argv[1:])
        write_section(readme_section(result, command.strip(), description, note, jobs))


def background_jobs() -> list[str]:
    """Command lines of other tftransfer training jobs running now (they share the cores)."""
    listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    jobs = []
    for line in listing.splitlines():
        pid, _, args = line.strip().partition(" ")
        if int(pid) != os.getpid() and re.search(r"main\.py (pretrain|transfer|sweep|tune)", args):
            jobs.append(args.strip())
    return jobs


def readme_section(result: str, command: str, description: str, note: str,
                   jobs: list[str]) -> str:
    """The README's Serving section: command, setting, table and how to read it."""
    busy = ("**A background training job was running on the same cores during this "
            "measurement** (" + "; ".join(f"`{j[:120]}`" for j in jobs) + "), so absolute "
            "figures are lower than on an idle machine; the ratios between rows are the "
            "useful part.\n" if jobs else "No other training job was running.\n")
    return f"""{HEADING}

`{command}` — {description}; TensorFlow {tf.__version__}, measured on {time.strftime('%Y-%m-%d')}.
Latency is wall time per call (the whole batch); images/s = batch x calls / total time. The
paths are called in turn (round-robin), so they share the same background load.
In-process only: no network or TF Serving overhead (no `tensorflow_model_server` here).
`model(x)` runs the Keras model eagerly, op by op; `predict_on_batch` and both SavedModel
signatures run traced graphs, and `serving_default` adds the PNG decode and resize to its graph.
{busy}
{result}

Machine while measuring (the figures are lower and noisier when another job shares the cores):

```
{note}
```
"""


if __name__ == "__main__":
    main()
