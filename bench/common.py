"""Shared helpers of the benchmarks: timing, and a note on what else the machine was doing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def best_rate(fn, items_per_call: int, repeats: int = 3, warmup: int = 1) -> float:
    """Items per second of ``fn()``: the best of ``repeats`` timed calls after ``warmup``.

    The best (not the mean) is the least disturbed by other work on a shared machine.
    """
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return items_per_call / best


def machine_note() -> str:
    """Cores and the processes busy right now (top's second sample: ps would report
    lifetime averages, and a paused process as busy), to print beside the figures."""
    script = ("top -b -n 2 -d 1 -w 200 -c | awk '/^top -/{n++} n == 2 && $1 ~ /^[0-9]+$/ "
              "&& $9 + 0 > 20 {printf \"%s \", $9; for (i = 12; i <= NF; i++) "
              "printf \"%s \", $i; print \"\"}' | head -5")
    busy = subprocess.run(["bash", "-c", script], capture_output=True, text=True).stdout.strip()
    return f"cores: {os.cpu_count()}; processes using >20% CPU at the start (%CPU, command):\n{busy or '(none)'}"


def last_network(cache):
    """The network of ``cache``'s last run (its most recently used one). Reads the
    RunCache's private table: benchmarks only, to time the parts of a real run."""
    return next(reversed(cache._networks.values()))


def recorded_calls(cache, run, names):
    """Runs ``run()`` (a fine-tune through ``cache`` on the network an earlier run traced)
    and records the arguments of the last call of each of that network's traced
    compiled-loop functions ``names`` ("schedule", "evaluate").

    Returns:
      (the network, its steps per epoch, {name: the recorded arguments}).
    """
    network = last_network(cache)
    (steps, functions), = network.compiled_functions.items()
    originals, recorded = {name: functions[name] for name in names}, {}

    def recording(name):
        def call(*args):
            recorded[name] = args
            return originals[name](*args)
        return call
    functions.update({name: recording(name) for name in names})
    try:
        run()
    finally:
        functions.update(originals)
    return network, steps, recorded


def random_source(directory, arch="resnet20", num_classes=10, image_size=32):
    """A random-weight source model directory: speed does not depend on the weights."""
    import keras

    from tftransfer.models import resnet
    from tftransfer.sources import saving

    keras.utils.set_random_seed(0)
    model = resnet.build(arch, num_classes, image_size)
    saving.save_model_dir(model, directory, {"arch": arch, "image_size": image_size,
                                             "attack": {"attack": "none"}})
    return str(directory)
