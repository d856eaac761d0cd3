"""Worker entry point of the distributed-tuning test: ``tune`` with a start barrier.

Usage: ``python tests/tuning_worker.py BARRIER_DIR PEERS -- TUNE_ARGS...`` with the
keras-tuner environment variables set. It runs ``tftransfer.tuning.search.tune`` exactly as
``python main.py tune TUNE_ARGS`` would, plus one callback: every worker's first trial
waits until all PEERS workers have started one, so that no worker can finish the whole
search before the others have connected (a real cluster needs no such barrier).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import keras

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tftransfer import cli
from tftransfer.tuning import search as tuning
from tftransfer.commands import tune as tune_command  # noqa: E402

BARRIER_TIMEOUT_SECONDS = 120


class StartBarrier(keras.callbacks.Callback):
    """Blocks the start of training until ``peers`` processes have reached it."""

    def __init__(self, directory: str, name: str, peers: int):
        super().__init__()
        self.directory, self.name, self.peers = directory, name, peers

    def on_train_begin(self, logs=None):
        folder = Path(self.directory)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / self.name).touch()
        deadline = time.time() + BARRIER_TIMEOUT_SECONDS
        while len(list(folder.iterdir())) < self.peers:
            if time.time() > deadline:
                raise TimeoutError(f"only {len(list(folder.iterdir()))} of {self.peers} "
                                   f"workers reached the barrier in {folder}")
            time.sleep(0.2)


def main(argv) -> int:
    split = argv.index("--")
    barrier_dir, peers = argv[0], int(argv[1])
    parser = argparse.ArgumentParser(prog="tuning_worker")
    tune_command.register(parser.add_subparsers())
    args = parser.parse_args(["tune", *argv[split + 1:]])
    barrier = StartBarrier(barrier_dir, os.environ["KERASTUNER_TUNER_ID"], peers)
    result = tuning.tune(tune_command.config_from_args(args), verbose=False,
                         callbacks=[barrier])
    cli.emit_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
