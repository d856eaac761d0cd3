"""AutoAttack over a whole evaluation set, batch by batch, resumable.

Each batch of the (deterministically ordered) evaluation set runs ``run_standard``; its counts
are appended as one JSON line to a state file as soon as it is done, so a killed evaluation
(even ``kill -9``) rerun with the same state file skips the batches already counted and ends
with the result an uninterrupted run gives.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tftransfer.adversarial.autoattack import sanity
from tftransfer.adversarial.autoattack.ensemble import STANDARD, run_standard
from tftransfer.errors import UserError


def autoattack_accuracy(model, dataset, norm: str, eps: float, total: int | None = None,
                        seed: int = 0, state_file=None, attacks=STANDARD, **budgets) -> dict:
    """Clean accuracy, robust accuracy after each attack and the final robust accuracy of
    ``model`` under AutoAttack over ``dataset``.

    Args:
      model: Keras classifier on [0, 1] images.
      dataset: batches of (images, labels) in a fixed order.
      norm, eps: the threat model (``l2`` or ``linf``; eps in [0, 1] pixel units).
      total: the number of images, for the progress bar's ETA (None: unknown).
      seed: seed of the attacks' random draws (batch ``i`` uses ``seed + i``).
      state_file: JSON-lines file of the finished batches' counts (None: not kept); a
        file written for other settings is refused.
      attacks: the attacks, in order (default: the standard four).
      **budgets: ``run_standard``'s ``steps``, ``square_queries``, ``n_targets``.

    Returns:
      ``{"examples", "accuracy", "robust_accuracy", "autoattack_after_<attack>": ...,
      "autoattack_flags": [...]}``: the flags are AutoAttack's sanity warnings
      (``sanity``; the model checks on the first batch, Square's on the totals), each also
      printed to stderr.
    """
    from tqdm import tqdm

    settings = {"norm": norm, "eps": float(eps), "seed": seed, "attacks": list(attacks),
                **budgets}
    done = _finished_batches(state_file, settings)
    bar = tqdm(total=total, desc=f"autoattack {norm} eps={eps:g}", unit="img",
               initial=sum(batch["examples"] for batch in done))
    flags = []
    for index, (images, labels) in enumerate(dataset):
        if index == 0:
            flags += sanity.model_flags(model, images.numpy(), labels.numpy(), attacks,
                                        budgets.get("n_targets", 9))
        if index < len(done):
            continue
        result = run_standard(model, images.numpy(), labels.numpy(), norm, eps,
                              seed=seed + index, batch_size=len(labels), attacks=attacks,
                              check=False, **budgets)
        batch = {"batch": index, "examples": int(len(labels)),
                 "correct": int(result.correct.sum()),
                 "after": {name: round(value * len(labels)) for name, value in
                           result.accuracy_after.items()}}
        _append(state_file, settings, batch, first=not done)
        done.append(batch)
        bar.update(batch["examples"])
        bar.set_postfix(robust=f"{_robust(done, attacks) / _examples(done):.1%}")
    bar.close()
    totals = _totals(done, attacks)
    after = {name: totals[f"autoattack_after_{name}"] for name in attacks}
    flags = [flag for flag in flags + [sanity.square_beats_white_box(after)] if flag]
    for flag in flags:
        print(f"warning: AutoAttack: {flag}", file=sys.stderr, flush=True)
    return {**totals, "autoattack_flags": flags}


def _finished_batches(state_file, settings: dict) -> list[dict]:
    """The batches a state file holds (its first line the settings it was written for)."""
    if state_file is None or not Path(state_file).exists():
        return []
    lines = [json.loads(line) for line in Path(state_file).read_text().splitlines()
             if line.strip()]
    if not lines:
        return []
    if lines[0].get("settings") != settings:
        raise UserError(f"The AutoAttack state file {state_file} was written for other "
                        f"settings ({lines[0].get('settings')}); remove it or name another.")
    return [line for line in lines[1:] if "batch" in line]


def _append(state_file, settings: dict, batch: dict, first: bool) -> None:
    """One batch's counts, flushed to disk before the next batch starts."""
    if state_file is None:
        return
    path = Path(state_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        if first and path.stat().st_size == 0:
            handle.write(json.dumps({"settings": settings}) + "\n")
        handle.write(json.dumps(batch) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _examples(done: list[dict]) -> int:
    return max(sum(batch["examples"] for batch in done), 1)


def _robust(done: list[dict], attacks) -> int:
    return sum(batch["after"][attacks[-1]] for batch in done) if attacks else 0


def _totals(done: list[dict], attacks) -> dict:
    if not done:
        raise UserError("The evaluation set is empty.")
    count = sum(batch["examples"] for batch in done)
    result = {"examples": count,
              "accuracy": sum(batch["correct"] for batch in done) / count}
    for name in attacks:
        result[f"autoattack_after_{name}"] = sum(b["after"][name] for b in done) / count
    result["robust_accuracy"] = (result[f"autoattack_after_{attacks[-1]}"] if attacks
                                 else result["accuracy"])
    return result
