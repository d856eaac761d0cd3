"""AutoAttack parity: the toolkit's TensorFlow AutoAttack against the reference
(github.com/fra31/auto-attack, PyTorch) on the same weights and the same images.

The Keras model is copied into a PyTorch module of the same architecture (``torch_twin``:
the ``normalize`` layer's mean/std, conv kernels HWIO -> OIHW, dense (in, out) -> (out, in),
BatchNorm gamma/beta/moving statistics with each layer's own epsilon) and the logits of the
two are asserted to agree to 1e-4 on the first 64 images of the subset. Both AutoAttacks then
run the standard version (APGD-CE, APGD-T, FAB-T, Square; seed 0; one batch of N) on the
first N images of the seeded stratified subset of the CIFAR-10 test split
(``select_subset(labels, N, 0)``), and the clean accuracy, the cumulative robust accuracy
after each attack and the seconds of each are appended as a row to ``parity.csv``;
``README.md`` is rewritten from all the rows.

The reference package is not a dependency of the project; install it from an export of
the repository (commit a39220048b3c9f2cca9a4d3a54604793c68eca7e was used), e.g.

    git clone https://github.com/fra31/auto-attack /tmp/auto-attack
    pip install --no-deps /tmp/auto-attack     # + the [torch] extra (torch, CPU is enough)

Runs (from the repository root; 2 shared CPU cores):

    python results/autoattack/parity.py --model cifar10-resnet20-l2-eps0.5 --norm l2 \
        --eps 0.5 --images 50 --data-dir ../shared/tfds
    python results/autoattack/parity.py --model cifar10-resnet20-l2-eps0.5 --norm linf \
        --eps 8/255 --images 50 --data-dir ../shared/tfds
    python results/autoattack/parity.py --model cifar10-resnet20-l2-eps0.5 --norm linf \
        --eps 8/255 --images 30 --individual --data-dir ../shared/tfds

``--individual`` runs each attack alone on every clean-correct point (as the reference's
``run_standard_evaluation_individual``), which compares APGD-T, FAB-T and Square on points
that APGD-CE would otherwise have taken; ``--readme-only`` rewrites README.md from
parity.csv.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import fractions
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
LOGIT_TOLERANCE = 1e-4
FIELDS = (["model", "norm", "eps", "images", "seed", "mode", "logit_max_gap", "clean_ours", "clean_ref"]
          + [f"{a}_{side}" for a in ATTACKS for side in ("ours", "ref")]
          + ["final_ours", "final_ref", "seconds_ours", "seconds_ref"]
          + [f"seconds_{a}_{side}" for a in ATTACKS for side in ("ours", "ref")]
          + ["robust_both", "robust_ours_only", "robust_ref_only", "fooled_both",
             "ours_adv_fool_twin", "ref_adv_fool_keras", "threads", "ref_commit", "git_commit",
             "date"])
REF_COMMIT = "a39220048b3c9f2cca9a4d3a54604793c68eca7e"


# ----------------------------------------------------------------------------- torch twin

def torch_twin(keras_model):
    """A PyTorch module computing ``keras_model``'s logits on NCHW [0, 1] images.

    Supports the toolkit's torchvision-layout ResNets with basic blocks (resnet20/18/34):
    ``normalize``, ``conv1``/``bn1`` stem (3x3 stride 1 for CIFAR-style models, 7x7 stride 2
    plus max-pool otherwise), ``layerS.B`` blocks with ``downsample.0/1`` shortcuts, global
    average pooling and ``fc``. The weights are those of ``tftransfer.convert.weight_mapping``
    read backwards, and every BatchNorm gets its Keras layer's epsilon.
    """
    import torch
    from tftransfer.convert.weight_mapping import _keras_targets
    from tftransfer.models.torch_resnet import BasicBlock

    nn = torch.nn
    layers = {layer.name: layer for layer in keras_model.layers}
    stem = layers["conv1"]
    small = tuple(stem.kernel_size) == (3, 3)
    stages = sorted({int(name.split(".")[0][5:]) for name in layers
                     if name.startswith("layer") and name.endswith(".conv1")})

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            normalize = layers["normalize"]
            self.register_buffer("mean", torch.tensor(np.asarray(normalize.mean),
                                                      dtype=torch.float32)[:, None, None])
            self.register_buffer("std", torch.tensor(np.asarray(normalize.std),
                                                     dtype=torch.float32)[:, None, None])
            planes = stem.filters
            self.conv1 = nn.Conv2d(3, planes, 3 if small else 7, 1 if small else 2,
                                   1 if small else 3, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU()
            self.maxpool = nn.Identity() if small else nn.MaxPool2d(3, 2, 1)
            inplanes = planes
            for stage in stages:
                count = len({name.split(".")[1] for name in layers
                             if name.startswith(f"layer{stage}.") and name.endswith(".conv1")})
                out = layers[f"layer{stage}.0.conv1"].filters
                stride = layers[f"layer{stage}.0.conv1"].strides[0]
                blocks = []
                for index in range(count):
                    downsample = None
                    if index == 0 and f"layer{stage}.0.downsample.0" in layers:
                        downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False),
                                                   nn.BatchNorm2d(out))
                    blocks.append(BasicBlock(inplanes, out, stride if index == 0 else 1,
                                             downsample))
                    inplanes = out
                setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            self.fc = nn.Linear(inplanes, layers["fc"].units)

        def forward(self, x):
            x = (x - self.mean) / self.std
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for stage in stages:
                x = getattr(self, f"layer{stage}")(x)
            return self.fc(torch.flatten(x.mean((2, 3)), 1))

    twin = Twin()
    state = twin.state_dict()
    targets = _keras_targets(keras_model)
    missing = sorted(set(state) - set(targets) - {"mean", "std"}
                     - {key for key in state if key.endswith("num_batches_tracked")})
    unused = sorted(set(targets) - set(state))
    if missing or unused:
        raise ValueError(f"torch twin and Keras model differ: torch-only {missing[:3]}, "
                         f"Keras-only {unused[:3]}")
    with torch.no_grad():
        for key, (variable, axes) in targets.items():
            value = np.asarray(variable.numpy())
            if axes is not None:  # the inverse of the torch -> Keras transpose
                value = np.transpose(value, np.argsort(axes))
            state[key].copy_(torch.from_numpy(np.ascontiguousarray(value, np.float32)))
    for name, module in twin.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = float(layers[name].epsilon)
    return twin.eval()


def logit_gap(keras_model, twin, x) -> float:
    """max |Keras logits - torch logits| on NHWC images ``x``."""
    import torch

    keras_logits = np.asarray(keras_model(x, training=False), np.float32)
    with torch.no_grad():
        torch_logits = twin(torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).copy())).numpy()
    return float(np.abs(keras_logits - torch_logits).max())


# ----------------------------------------------------------------------------- the two runs

def run_ours(model, x, y, norm, eps, seed, individual=False):
    """The toolkit's ``run_standard``: the four attacks in turn (``individual``: each alone on
    every clean-correct point). Returns (result, {attack: seconds}, total seconds); result has
    clean_accuracy, correct, robust (against every attack), accuracy_after and x_adv."""
    from tftransfer.adversarial.autoattack import run_standard

    start = time.perf_counter()
    groups = [(name,) for name in ATTACKS] if individual else [ATTACKS]
    results, seconds, after = [], {}, {}
    for group in groups:
        marks = []  # after the clean pass, then after each attack

        def log(line, marks=marks):
            marks.append(time.perf_counter())
            print(f"ours {line} ({marks[-1] - start:.0f} s)", flush=True)

        results.append(run_standard(model, x, y, norm, eps, seed=seed, batch_size=len(y),
                                    attacks=group, log=log))
        for i, name in enumerate(group):
            seconds[name] = marks[i + 1] - marks[i]
            after[name] = results[-1].accuracy_after[name]
    total = time.perf_counter() - start
    robust = np.logical_and.reduce([r.robust for r in results])
    x_adv = results[0].x_adv.copy()
    done = results[0].correct & ~results[0].robust
    for r in results[1:]:  # the first attack's example where several fooled a point
        take = ~done & r.correct & ~r.robust
        x_adv[take] = r.x_adv[take]
        done |= take
    result = types.SimpleNamespace(
        clean_accuracy=results[0].clean_accuracy, correct=results[0].correct, robust=robust,
        robust_accuracy=float(robust.mean()), accuracy_after=after, x_adv=x_adv)
    return result, seconds, total


def run_reference(twin, x, y, norm, eps, seed, individual=False):
    """The reference's standard AutoAttack, its attack objects as ``set_version('standard')``
    configures them, run in its order on the points still classified correctly, exactly as
    ``AutoAttack.run_standard_evaluation`` does (one batch), keeping the robust accuracy after
    each attack (which that method only logs); ``individual``: each attack alone on every
    clean-correct point, as ``run_standard_evaluation_individual`` does. Returns (clean [N],
    robust [N] (against every attack), after, seconds, total seconds, x_adv NHWC)."""
    import torch
    from autoattack import AutoAttack

    adversary = AutoAttack(twin, norm={"l2": "L2", "linf": "Linf"}[norm], eps=eps,
                           version="standard", device="cpu", seed=seed, verbose=False)
    x_t = torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).copy())
    y_t = torch.from_numpy(y.astype(np.int64))
    start = time.perf_counter()
    with torch.no_grad():
        clean = twin(x_t).argmax(1) == y_t
    robust = clean.clone()
    robust_all = clean.clone()
    x_adv = x_t.clone()
    after, seconds = {}, {}
    for name in ATTACKS:
        begin = time.perf_counter()
        if individual:
            robust = clean.clone()
        points = torch.nonzero(robust).flatten()
        if points.numel():
            xb, yb = x_t[points].clone(), y_t[points].clone()
            if name == "apgd-ce":
                adversary.apgd.loss = "ce"
                adversary.apgd.seed = adversary.get_seed()
                found = adversary.apgd.perturb(xb, yb)
            elif name == "apgd-t":
                adversary.apgd_targeted.seed = adversary.get_seed()
                found = adversary.apgd_targeted.perturb(xb, yb)
            elif name == "fab-t":
                adversary.fab.targeted = True
                adversary.fab.n_restarts = 1
                adversary.fab.seed = adversary.get_seed()
                found = adversary.fab.perturb(xb, yb)
            else:
                adversary.square.seed = adversary.get_seed()
                found = adversary.square.perturb(xb, yb)
            with torch.no_grad():
                fooled = twin(found).argmax(1) != yb
            robust[points[fooled]] = False
            first = robust_all[points] & fooled  # keep the first attack's example
            x_adv[points[first]] = found[first].detach()
            robust_all &= robust
        after[name] = float(robust.float().mean())
        seconds[name] = time.perf_counter() - begin
        print(f"ref robust accuracy after {name} {after[name]:.2%} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    total = time.perf_counter() - start
    return (clean.numpy(), robust_all.numpy(), after, seconds, total,
            np.transpose(x_adv.numpy(), (0, 2, 3, 1)))


# ----------------------------------------------------------------------------- the report

def _git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _parse_eps(text: str) -> float:
    return float(fractions.Fraction(text)) if "/" in text else float(text)


def _pct(value) -> str:
    return f"{100 * float(value):.1f}"


README_HEAD = """# AutoAttack parity: ours (TensorFlow) against fra31/auto-attack (PyTorch)

Written by `results/autoattack/parity.py` (rerun it to add a row; this file is rewritten from
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
git clone https://github.com/fra31/auto-attack /tmp/auto-attack   # then: git -C /tmp/auto-attack checkout {ref_commit}
pip install --no-deps /tmp/auto-attack
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


# ----------------------------------------------------------------------------- main

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cifar10-resnet20-l2-eps0.5",
                        help="a folder under saved_models/ or a model path")
    parser.add_argument("--norm", choices=("l2", "linf"), default="l2")
    parser.add_argument("--eps", default="0.5", help="radius in [0, 1] pixels (e.g. 0.5, 8/255)")
    parser.add_argument("--images", type=int, default=50, help="N test images (>= 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both AutoAttacks")
    parser.add_argument("--data-dir", default=os.environ.get("TFDS_DATA_DIR"),
                        help="TFDS data directory (default: $TFDS_DATA_DIR)")
    parser.add_argument("--individual", action="store_true",
                        help="run each attack alone on every clean-correct point (both sides) "
                             "instead of the cumulative standard ensemble")
    parser.add_argument("--readme-only", action="store_true",
                        help="only rewrite README.md from parity.csv")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of each framework (default 1: on the shared 2-core "
                             "machine torch with 2 threads ran 20x slower than with 1)")
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parent),
                        help="where parity.csv and README.md go (default: this folder)")
    args = parser.parse_args(argv)
    eps = _parse_eps(args.eps)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.readme_only:
        write_readme(out_dir, read_rows(out_dir / "parity.csv"))
        return

    import tensorflow as tf
    import torch

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    torch.set_num_threads(args.threads)
    from tftransfer import data, load_model

    model_path = REPO / "saved_models" / args.model
    model = load_model(str(model_path if model_path.exists() else args.model))
    twin = torch_twin(model)
    dataset = data.load("cifar10", args.data_dir, download=False)
    order = data.select_subset(dataset.test.labels, max(args.images, 64), 0, "--images")
    x_all, y_all = data.subset_arrays(dataset.test, order, 32)
    gap = logit_gap(model, twin, x_all[:64])
    print(f"logit gap Keras vs torch on 64 images: {gap:.2e}", flush=True)
    assert gap < LOGIT_TOLERANCE, f"the torch copy differs from the Keras model by {gap}"
    x, y = x_all[:args.images], y_all[:args.images].astype(np.int32)

    ours, seconds_ours, total_ours = run_ours(model, x, y, args.norm, eps, args.seed,
                                              args.individual)
    print(f"ours: clean {ours.clean_accuracy:.3f} after {ours.accuracy_after} "
          f"in {total_ours:.0f} s", flush=True)
    clean_ref, robust_ref, after_ref, seconds_ref, total_ref, adv_ref = run_reference(
        twin, x, y, args.norm, eps, args.seed, args.individual)
    print(f"ref:  clean {clean_ref.mean():.3f} after {after_ref} in {total_ref:.0f} s",
          flush=True)

    # Cross-check: each side's adversarial examples on the other side's model.
    fooled_ours = ours.correct & ~ours.robust
    with torch.no_grad():
        twin_pred = twin(torch.from_numpy(np.transpose(ours.x_adv, (0, 3, 1, 2)).copy())
                         ).argmax(1).numpy()
    keras_pred = np.argmax(np.asarray(model(adv_ref, training=False)), 1)
    fooled_ref = clean_ref & ~robust_ref
    row = {"model": args.model, "norm": args.norm, "eps": f"{eps:.6g}", "images": len(y),
           "seed": args.seed, "mode": "individual" if args.individual else "standard",
           "logit_max_gap": f"{gap:.3e}",
           "clean_ours": ours.clean_accuracy, "clean_ref": float(clean_ref.mean())}
    for name in ATTACKS:
        row[f"{name}_ours"] = ours.accuracy_after[name]
        row[f"{name}_ref"] = after_ref[name]
        row[f"seconds_{name}_ours"] = f"{seconds_ours[name]:.1f}"
        row[f"seconds_{name}_ref"] = f"{seconds_ref[name]:.1f}"
    row.update({
        "final_ours": ours.robust_accuracy, "final_ref": float(robust_ref.mean()),
        "seconds_ours": f"{total_ours:.1f}", "seconds_ref": f"{total_ref:.1f}",
        "robust_both": int((ours.robust & robust_ref).sum()),
        "robust_ours_only": int((ours.robust & ~robust_ref).sum()),
        "robust_ref_only": int((~ours.robust & robust_ref).sum()),
        "fooled_both": int((fooled_ours & fooled_ref).sum()),
        "ours_adv_fool_twin": f"{int((twin_pred[fooled_ours] != y[fooled_ours]).sum())}/"
                              f"{int(fooled_ours.sum())}",
        "ref_adv_fool_keras": f"{int((keras_pred[fooled_ref] != y[fooled_ref]).sum())}/"
                              f"{int(fooled_ref.sum())}",
        "threads": args.threads,
        "ref_commit": REF_COMMIT, "git_commit": _git_commit(),
        "date": datetime.date.today().isoformat()})
    command = ("python results/autoattack/parity.py " + " ".join(
        f"--{k} {v}" for k, v in (("model", args.model), ("norm", args.norm),
                                  ("eps", args.eps), ("images", args.images)))
        + (f" --seed {args.seed}" if args.seed else "")
        + (" --individual" if args.individual else "")
        + (f" --threads {args.threads}" if args.threads != 1 else ""))
    row["command"] = command
    csv_path = out_dir / "parity.csv"
    rows = read_rows(csv_path)
    rows.append({key: str(value) for key, value in row.items()})
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(FIELDS) + ["command"])
        writer.writeheader()
        writer.writerows(rows)
    write_readme(out_dir, rows)
    print(f"wrote {csv_path} and {out_dir / 'README.md'}")


if __name__ == "__main__":
    main()
