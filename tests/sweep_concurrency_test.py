"""Tests of concurrent sweeps on one results directory: every cell once, every row kept."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from unittest import mock

import pytest
import tensorflow as tf

from tests.helpers import REPO
from tftransfer import runs
from tftransfer.sweeps import runner as sweeps
from tftransfer import finetune
from tftransfer.config import SweepConfig
from tftransfer.errors import UserError

PROCESS_TIMEOUT_SECONDS = 120

# Waits until PEERS processes have reached it (files in BARRIER), so that the processes
# really start together instead of one after the other as their imports finish.
BARRIER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    def wait_for_peers(barrier, name, peers):
        Path(barrier).mkdir(parents=True, exist_ok=True)
        (Path(barrier) / name).touch()
        deadline = time.time() + 60
        while len(os.listdir(barrier)) < peers:
            if time.time() > deadline:
                sys.exit(f"only {len(os.listdir(barrier))} of {peers} reached the barrier")
            time.sleep(0.01)
""")

APPEND_WORKER = BARRIER + textwrap.dedent("""
    sys.path.insert(0, sys.argv[1])
    from tftransfer.sweeps import runner as sweeps
    path, barrier, name, peers, rows = sys.argv[2:7]
    wait_for_peers(barrier, name, int(peers))
    for i in range(int(rows)):
        sweeps.append_row(path, {"run_key": f"{name}-{i}", "value": i})
""")

# A sweep worker whose fine-tuning is a 0.1 s stand-in that logs the run directory it was
# asked for: the grid's bookkeeping is what is tested, not the training.
SWEEP_WORKER = BARRIER + textwrap.dedent("""
    import json
    sys.path.insert(0, sys.argv[1])
    from tftransfer import finetune
    from tftransfer.sweeps import runner as sweeps
    from tftransfer.config import SweepConfig
    results, log, barrier, name, peers, grid, options = sys.argv[2:9]
    options = json.loads(options)

    def fake_fine_tune(cfg, cache=None, save_model=True, verbose=True):
        with open(log, "a") as handle:  # O_APPEND: one short write per line, never mixed
            handle.write(f"{name} {Path(cfg.out).name}\\n")
        time.sleep(0.1)
        return {"test_accuracy": 0.5}

    class NoData:
        computed = 0
        def target(self, cfg):
            pass

    finetune.fine_tune = fake_fine_tune
    sweep = SweepConfig(**json.loads(grid))
    wait_for_peers(barrier, name, int(peers))
    result = sweeps.run_sweep(sweep, results, cache=NoData(), **options)
    print(json.dumps(result))
""")


# 2 sources x 3 N x 4 seeds = 24 cells.
GRID = dict(name="concurrent", sources=["a", "b"], targets=["t"], train_images=[6, 9, 12],
            unfrozen_blocks=[0], seeds=[0, 1, 2, 3], epochs=1)


def start_together(script, argument_lists):
    """Starts one process per argument list at once; returns their stdouts (all exit 0)."""
    processes = [subprocess.Popen([sys.executable, "-c", script, str(REPO), *arguments],
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for arguments in argument_lists]
    outputs = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=PROCESS_TIMEOUT_SECONDS)
            if process.returncode != 0:
                raise AssertionError(f"worker failed ({process.returncode}):\n{stderr[-3000:]}")
            outputs.append(stdout)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return outputs


class ConcurrentAppendTest(tf.test.TestCase):

    def test_processes_appending_to_one_file_keep_every_row(self):
        tmp = Path(self.get_temp_dir())
        path, peers, rows = tmp / "results.csv", 4, 100
        start_together(APPEND_WORKER, [(str(path), str(tmp / "barrier"), f"p{i}", str(peers),
                                        str(rows)) for i in range(peers)])
        keys = [row["run_key"] for row in sweeps.read_rows(path)]
        self.assertLen(keys, peers * rows)
        self.assertCountEqual(keys, [f"p{i}-{j}" for i in range(peers) for j in range(rows)])

    def test_a_row_with_extra_fields_or_a_non_utf8_byte_is_refused_not_rewritten(self):
        path = Path(self.get_temp_dir()) / "results.csv"
        extra = b"run_key,value\na,1\nb,2,surplus\n"
        path.write_bytes(extra)
        with self.assertRaisesRegex(UserError, r"^Line 3 of .*results.csv has 3 fields, more "
                                               r"than the 2 columns of its header; fix or "
                                               r"remove that line\.$"):
            sweeps.append_row(path, {"run_key": "c", "value": 3})
        self.assertEqual(path.read_bytes(), extra)  # not rewritten with a nameless column
        path.write_bytes("run_key,value\na,1\nb,café\n".encode("latin-1"))
        with self.assertRaisesRegex(UserError, r"^Line 3 of .*results.csv is not UTF-8 text "
                                               r"\(byte 0xe9\); fix or remove that line\.$"):
            sweeps.finished_keys(path.parent)


class ConcurrentSweepTest(tf.test.TestCase):

    @pytest.mark.slow  # ~34 s on 2 cores
    def test_processes_started_together_run_each_cell_once_and_keep_every_row(self):
        tmp = Path(self.get_temp_dir())
        results, log = tmp / "results", tmp / "runs.log"
        # Two plain workers, the two shards of a 2-shard layout, one of them for one source
        # only: all on one directory at once.
        options = [{}, {}, {"shard": "1/2"}, {"shard": "2/2", "sources": ["b"]}]
        outputs = start_together(
            SWEEP_WORKER, [(str(results), str(log), str(tmp / "barrier"), f"w{i}",
                            str(len(options)), json.dumps(GRID), json.dumps(option))
                           for i, option in enumerate(options)])
        summaries = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
        grid = [cell.key for cell in sweeps.cells(SweepConfig(**GRID))]

        runs_started = [line.split() for line in log.read_text().splitlines()]
        self.assertCountEqual([run_dir for _, run_dir in runs_started],
                              [key.replace("|", "__").replace("/", "_") for key in grid])
        self.assertGreater(len({worker for worker, _ in runs_started}), 1)  # they overlapped
        rows = [row for path in sorted(results.glob("results*.csv"))
                for row in sweeps.read_rows(path)]
        self.assertCountEqual([row["run_key"] for row in rows], grid)
        self.assertEqual(sum(summary["ran"] for summary in summaries), len(grid))
        self.assertEqual([summary["failed"] for summary in summaries], [0] * len(options))
        self.assertEmpty(list((results / sweeps.CLAIMS_DIR).iterdir()))  # all released


class NoData:
    """Stands in for a RunCache: the sweep's up-front data check loads nothing."""

    computed = 0

    def target(self, cfg):
        pass


def succeed(cfg, **kwargs):
    return {"test_accuracy": 0.5}


class ClaimTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.results = Path(self.get_temp_dir()) / "claims"
        self.sweep = SweepConfig(name="claims", sources=("a",), targets=("t",),
                                 train_images=(6,), unfrozen_blocks=(0,), seeds=(0, 1, 2, 3),
                                 epochs=1)
        self.grid = sweeps.cells(self.sweep)

    def run_sweep(self, fine_tune=succeed):
        with mock.patch.object(finetune, "fine_tune", fine_tune):
            return sweeps.run_sweep(self.sweep, self.results, cache=NoData())

    def claim(self, cell, pid, host, age_seconds=0.0):
        path = sweeps.claim_path(self.results, cell)
        runs.write_json(path, {"run_key": cell.key, "pid": pid, "host": host, "token": "x",
                               "claimed_at": "2026-01-01T00:00:00"})
        then = time.time() - age_seconds
        os.utime(path, (then, then))
        return path

    def finished(self):
        return [row["run_key"] for row in sweeps.read_rows(self.results / "results.csv")]

    def test_live_claims_are_skipped_and_dead_or_stale_ones_taken_over(self):
        dead = subprocess.Popen(["true"])
        dead.wait()
        here = socket.gethostname()
        stale = sweeps.CLAIM_STALE_SECONDS + 60
        self.claim(self.grid[0], dead.pid, here)                     # killed on this host
        self.claim(self.grid[1], os.getpid(), here)                  # running on this host
        self.claim(self.grid[2], 1, "another-host")                  # running elsewhere
        self.claim(self.grid[3], 1, "another-host", age_seconds=stale)  # silent elsewhere
        result = self.run_sweep()
        self.assertCountEqual(self.finished(), [self.grid[0].key, self.grid[3].key])
        self.assertEqual((result["ran"], result["remaining"]), (2, 2))
        for cell, held in zip(self.grid, (False, True, True, False)):
            self.assertEqual(sweeps.claim_path(self.results, cell).exists(), held, cell.key)

    def test_a_running_cell_is_claimed_by_this_process_and_released_when_interrupted(self):
        markers = []

        def interrupted(cfg, **kwargs):
            markers.append(runs.read_json(sweeps.claim_path(self.results, self.grid[0])))
            raise KeyboardInterrupt
        with self.assertRaises(KeyboardInterrupt):
            self.run_sweep(interrupted)
        self.assertEqual((markers[0]["pid"], markers[0]["host"]),
                         (os.getpid(), socket.gethostname()))
        self.assertFalse(sweeps.claim_path(self.results, self.grid[0]).exists())
        self.assertEqual(self.run_sweep()["ran"], len(self.grid))  # nothing left blocked

    def test_a_cell_recorded_by_another_process_meanwhile_keeps_one_row(self):
        def overtaken(cfg, **kwargs):
            # The process this claim was taken over from finishes first.
            key = next(c.key for c in self.grid if c.file_name == Path(cfg.out).name)
            sweeps.append_row(self.results / "results.csv", {"run_key": key, "by": "other"})
            return {"test_accuracy": 0.5}
        result = self.run_sweep(overtaken)
        self.assertCountEqual(self.finished(), [cell.key for cell in self.grid])
        self.assertEqual((result["ran"], result["failed"], result["remaining"]),
                         (0, 0, 0))

    def test_the_heartbeat_keeps_a_running_claim_fresh(self):
        path = self.claim(self.grid[0], os.getpid(), "another-host",
                          age_seconds=sweeps.CLAIM_STALE_SECONDS + 60)
        self.assertFalse(sweeps.claim_is_live(path))
        with sweeps.Heartbeat(path, interval=0.05):
            time.sleep(0.5)
        self.assertTrue(sweeps.claim_is_live(path))


if __name__ == "__main__":
    tf.test.main()
