"""``results/autoattack/README.md``, rewritten from ``parity.csv`` by ``autoattack_parity``."""

from __future__ import annotations

import csv
from pathlib import Path

from tftransfer.report.analyses.autoattack_parity_fields import ATTACKS, REF_COMMIT


def _pct(value) -> str:
    return f"{100 * float(value):.1f}"


README_HEAD = """# AutoAttack parity: ours (TensorFlow) against fra31/auto-attack (PyTorch)

Written by `python -m tftransfer.report.analyses.autoattack_parity` (rerun it to add a row; this file is rewritten from
`parity.csv`). Each row: one model and threat model, the first N images of the seeded stratified
subset of the CIFAR-10 test split (`tftransfer.data.select_subset(labels, N, 0)`), the
toolkit's `tftransfer.adversarial.autoattack.run_standard` on the Keras model and the reference
AutoAttack (github.com/fra31/auto-attack at commit {ref_commit}, `version='standard'`,
`device='cpu'`, `seed=0`) on a PyTorch copy of the same weights, whose logits agree with the
Keras model's to within `logit gap` (asserted below 1e-4) on the first 64 images of the subset.
Both run one batch of N, each attack on the points every earlier attack left correctly
classified (mode `standard`; "apgd-ce" etc. are then the cumulative robust accuracies after
that attack), or each attack alone on every clean-correct point (mode `individual`, the
reference's `run_standard_evaluation_individual`; "apgd-ce" etc. are then the robust
accuracies under that attack alone, and "final" under all of them). Accuracies are in %; seconds are wall-clock with one CPU thread per framework (`--threads 1`) on a shared
2-core machine on which two other experiments were running, so they compare the two
implementations only roughly (ours includes tracing its `tf.function`s). With two threads torch
ran about 20x slower there than with one (a forward and backward pass of 50 images: 2.6 s
against 0.12 s; TensorFlow: 0.11 s either way).

## Commands

```
. .venv/bin/activate
git clone https://github.com/fra31/auto-attack ../auto-attack   # then: git -C ../auto-attack checkout {ref_commit}
pip install --no-deps ../auto-attack
export TFDS_DATA_DIR=../shared/tfds
{commands}
```

## Results

"""

README_TAIL = """
"largest gap (points)" is the largest difference between ours and the reference over the
clean, per-attack and final accuracies, in images. Columns "robust: both / ours only / ref only" count the N points by which implementation left
them robust; "ours' x_adv fools twin" is how many of our adversarial examples the PyTorch
copy also misclassifies (and the other way round), which checks that a point broken by one
implementation is a real adversarial example of the shared weights.

## Where ours comes from

- All four attacks are written in TensorFlow from the papers (`tftransfer/adversarial/autoattack/`:
  `apgd.py` APGD-CE and APGD-T, Croce & Hein ICML 2020; `fab.py` FAB-T, Croce & Hein ICML 2020;
  `square.py` Square Attack, Andriushchenko et al. ECCV 2020; `ensemble.py` the standard
  ensemble). cleverhans 4.0.0 has none of them (its TF2 attacks are FGM, PGD/BIM, MIM,
  Carlini-Wagner L2 and SPSA). The reference code was read for the schedules and budgets
  (APGD's checkpoints 22/19/16/... and step 2 eps, 9 target classes by clean-logit rank, FAB's
  alpha_max 0.1, eta 1.05, beta 0.9, Square's p_init 0.8 and its p schedule without rescaling)
  and none of it is copied.
- The reference is not a dependency; the script needs it only to run.

## What still differs (by design or by detail), attack by attack

- Random numbers: ours draws stateless TensorFlow numbers salted per attack, round and batch;
  the reference reseeds torch's global generator with `seed` at the start of every attack.
  The same seed therefore gives different random starts (APGD) and different square windows
  (Square), so per-point outcomes can differ on points near the edge of robustness; only the
  accuracies are comparable.
- APGD (CE and T): at the first checkpoint the reference compares the first iterate's loss
  with 0 (its loss history starts at zeros), ours with the loss at the random start; and the
  reference disables the "no improvement since the last halving" condition at the first
  checkpoint (`reduced_last_check` starts at ones) while ours allows it there. Both only
  change when the step size is first halved.
- FAB-T: both project onto hyperplane-and-box by sorting the breakpoints of the piecewise
  linear constraint; ours finds the active one by a cumulative-sum count
  (`project_onto_hyperplane_box`), the reference by bisection (`projection_l2` /
  `projection_linf`). Both give the minimal-norm step up to round-off. No random start in
  either (one restart). Ours linearises only the target-vs-true logit gap, as the reference's
  targeted branch does.
- Square: the reference draws one window position (`vh`, `vw` are scalars), one orientation
  of the L2 pattern and, for L-infinity, one sign per channel per query for the whole batch;
  ours draws them per example (the paper's per-image random search). The L2 update follows
  the reference's per-channel rescaling of the window mass. Ours queries every point of the
  batch at each step and keeps the update only for the points not yet fooled; the reference
  queries only those (same result, more work for ours).
- Float arithmetic: TensorFlow and PyTorch convolutions round differently (logit gap ~1e-6),
  which can flip an argmax exactly at a decision boundary.
"""


def read_rows(csv_path: Path) -> list[dict]:
    """The rows of ``parity.csv`` ([] when there is none); rows from before ``mode`` are
    ``standard``."""
    if not csv_path.exists():
        return []
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["mode"] = row.get("mode") or "standard"
    return rows


def _largest_gap(row: dict) -> int:
    """The largest |ours - ref| over clean, every attack and final, in points (of N)."""
    n = int(row["images"])
    return max(round(abs(float(row[f"{c}_ours"]) - float(row[f"{c}_ref"])) * n)
               for c in ("clean", *ATTACKS, "final"))


def write_readme(out_dir: Path, rows: list[dict]) -> None:
    commands = sorted({row.get("command", "") for row in rows if row.get("command")})
    lines = [README_HEAD.format(ref_commit=REF_COMMIT, commands="\n".join(commands) or "")]
    header = ["model", "norm", "eps", "N", "mode", "clean ours/ref"] + [
        f"{a} ours/ref" for a in ATTACKS] + ["final ours/ref", "seconds ours/ref",
                                            "robust: both / ours only / ref only",
                                            "ours' x_adv fools twin / ref's fools Keras",
                                            "largest gap (points)", "logit gap"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in rows:
        n = int(row["images"])
        cells = [row["model"], row["norm"], f"{float(row['eps']):.4g}", str(n), row["mode"],
                 f"{_pct(row['clean_ours'])} / {_pct(row['clean_ref'])}"]
        cells += [f"{_pct(row[f'{a}_ours'])} / {_pct(row[f'{a}_ref'])}" for a in ATTACKS]
        cells += [f"{_pct(row['final_ours'])} / {_pct(row['final_ref'])}",
                  f"{float(row['seconds_ours']):.0f} / {float(row['seconds_ref']):.0f}",
                  f"{row['robust_both']} / {row['robust_ours_only']} / {row['robust_ref_only']}",
                  f"{row['ours_adv_fool_twin']} / {row['ref_adv_fool_keras']}",
                  str(_largest_gap(row)), f"{float(row['logit_max_gap']):.1e}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Seconds per attack (ours / ref):")
    lines.append("")
    lines.append("| model | norm | N | mode | " + " | ".join(ATTACKS) + " |")
    lines.append("|" + "---|" * (4 + len(ATTACKS)))
    for row in rows:
        lines.append(f"| {row['model']} | {row['norm']} | {row['images']} | {row['mode']} | "
                     + " | ".join(
            f"{float(row[f'seconds_{a}_ours']):.0f} / {float(row[f'seconds_{a}_ref']):.0f}"
            for a in ATTACKS) + " |")
    lines.append(README_TAIL)
    (out_dir / "README.md").write_text("\n".join(lines))
