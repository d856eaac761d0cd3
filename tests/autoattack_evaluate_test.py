"""AutoAttack over an evaluation set: resumed after a kill, it ends where an uninterrupted run
does; PGD restarts keep the worst case per point."""

from __future__ import annotations

import contextlib
import json
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from tftransfer.adversarial import evaluation
from tftransfer.adversarial.autoattack import on_dataset
from tftransfer.adversarial.autoattack.ensemble import AutoAttackResult
from tftransfer.config import AttackConfig
from tftransfer.errors import UserError

ATTACKS = ("apgd-ce", "square")


def _dataset(batches=3, size=4):
    rng = np.random.default_rng(0)
    x = rng.random((batches * size, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 3, batches * size).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(size)


def _fake_run_standard(calls):
    """A stand-in for run_standard: point i is correct unless i % 4 == 0 and robust unless
    i % 4 == 1 (per batch), recording which batches ran."""
    def run(model, x, y, norm, eps, seed, batch_size, attacks, **budgets):
        calls.append(seed)
        n = len(y)
        correct = np.arange(n) % 4 != 0
        robust = correct & (np.arange(n) % 4 != 1)
        return AutoAttackResult(
            clean_accuracy=correct.mean(), robust_accuracy=robust.mean(),
            accuracy_after={"apgd-ce": robust.mean(), "square": robust.mean()},
            correct=correct, robust=robust, broken_by=np.array([""] * n), x_adv=x,
            norm=norm, eps=eps, attacks=attacks)
    return run


@contextlib.contextmanager
def _fake_attacks(calls):
    """``run_standard`` and the model's sanity checks replaced (the model is None)."""
    with mock.patch.object(on_dataset, "run_standard", _fake_run_standard(calls)), \
            mock.patch.object(on_dataset.sanity, "model_flags", lambda *args: []):
        yield


def test_a_killed_evaluation_resumes_and_ends_as_an_uninterrupted_one(tmp_path):
    state = tmp_path / "state.jsonl"
    calls = []
    with _fake_attacks(calls):
        whole = on_dataset.autoattack_accuracy(None, _dataset(), "l2", 0.5, 12,
                                               attacks=ATTACKS)
        # A run killed after its first batch: the state file holds that batch only.
        on_dataset.autoattack_accuracy(None, _dataset(batches=1), "l2", 0.5, 4,
                                       state_file=state, attacks=ATTACKS)
        calls.clear()
        resumed = on_dataset.autoattack_accuracy(None, _dataset(), "l2", 0.5, 12,
                                                 state_file=state, attacks=ATTACKS)
    assert calls == [1, 2]  # the finished batch (seed 0) was not attacked again
    assert resumed == whole
    assert whole == {"examples": 12, "accuracy": 0.75, "autoattack_after_apgd-ce": 0.5,
                     "autoattack_after_square": 0.5, "robust_accuracy": 0.5,
                     "autoattack_flags": []}
    lines = [json.loads(line) for line in state.read_text().splitlines()]
    assert [line.get("batch") for line in lines] == [None, 0, 1, 2]


def test_a_state_file_of_other_settings_is_refused(tmp_path):
    state = tmp_path / "state.jsonl"
    with _fake_attacks([]):
        on_dataset.autoattack_accuracy(None, _dataset(1), "l2", 0.5, state_file=state,
                                       attacks=ATTACKS)
        with pytest.raises(UserError, match="written for other settings"):
            on_dataset.autoattack_accuracy(None, _dataset(1), "linf", 0.03, state_file=state,
                                           attacks=ATTACKS)


class _Flaky(tf.keras.Model):
    """Class 1 when the pixel (0, 0, 0) exceeds 0.5: from 0.49 an attack with a negligible
    step fools it only where its random start moved that pixel up by more than 0.01."""

    def call(self, x, training=False):
        margin = 1000.0 * (x[:, 0, 0, :1] - 0.5)
        return tf.concat([-margin, margin], axis=1)


def test_restarts_count_a_point_robust_only_if_every_run_fails():
    x = np.full((64, 4, 4, 3), 0.49, np.float32)
    y = np.zeros(64, np.int32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    # The step is negligible, so success depends only on the random start.
    attack = AttackConfig(norm="linf", eps=0.02, steps=1, step_size=1e-9, random_start=True)
    once = evaluation.accuracy(_Flaky(name="flaky"), ds, attack, "ours")["adversarial_accuracy"]
    five = evaluation.accuracy(_Flaky(name="flaky"), ds, attack, "ours", restarts=5)["adversarial_accuracy"]
    assert 0.0 < once < 1.0
    assert five < once


def test_restarts_without_a_random_start_are_refused():
    attack = AttackConfig(norm="linf", eps=0.02, steps=1)
    with pytest.raises(UserError, match="--random-start"):
        evaluation.accuracy(_Flaky(name="flaky"), _dataset(1), attack, "ours", restarts=3)


def test_evaluate_offers_autoattack_and_restarts():
    from tests.helpers import run_cli

    code, out, _ = run_cli("evaluate", "--help")
    text = " ".join(out.split())
    assert code == 0
    assert "{pgd,fgsm_rs,free,autoattack}" in text and "--restarts K" in text
    assert "AutoAttack's standard version" in text


def test_autoattack_needs_a_threat_model():
    with pytest.raises(UserError, match="AutoAttack needs a threat model"):
        evaluation._autoattack(None, _dataset(1), None, 4, None)
