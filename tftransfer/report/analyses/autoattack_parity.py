"""AutoAttack parity: the toolkit's TensorFlow AutoAttack against the reference
(github.com/fra31/auto-attack, PyTorch) on the same weights and the same images.

The Keras model is copied into a PyTorch module of the same architecture (``convert.to_torch.torch_twin``:
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

    git clone https://github.com/fra31/auto-attack ../auto-attack
    pip install --no-deps ../auto-attack     # + the [torch] extra (torch, CPU is enough)

Runs (from the repository root; 2 shared CPU cores):

    python -m tftransfer.report.analyses.autoattack_parity --model cifar10-resnet20-l2-eps0.5 --norm l2 \
        --eps 0.5 --images 50 --data-dir ../shared/tfds
    python -m tftransfer.report.analyses.autoattack_parity --model cifar10-resnet20-l2-eps0.5 --norm linf \
        --eps 8/255 --images 50 --data-dir ../shared/tfds
    python -m tftransfer.report.analyses.autoattack_parity --model cifar10-resnet20-l2-eps0.5 --norm linf \
        --eps 8/255 --images 30 --individual --data-dir ../shared/tfds

``--individual`` runs each attack alone on every clean-correct point (as the reference's
``run_standard_evaluation_individual``), which compares APGD-T, FAB-T and Square on points
that APGD-CE would otherwise have taken; ``--readme-only`` rewrites README.md from
parity.csv.
"""

from __future__ import annotations

import argparse
import datetime
import fractions
import csv
import os
import time
import types
from pathlib import Path

import numpy as np

from tftransfer import runs
from tftransfer.convert.to_torch import logit_gap, torch_twin
from tftransfer.report.analyses.autoattack_parity_fields import (ATTACKS, FIELDS,
                                                                 LOGIT_TOLERANCE, REF_COMMIT)
from tftransfer.report.analyses.autoattack_parity_readme import read_rows, write_readme


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


def _parse_eps(text: str) -> float:
    return float(fractions.Fraction(text)) if "/" in text else float(text)


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
    parser.add_argument("--out-dir", default="results/autoattack",
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

    model = load_model(args.model)  # a registered name or a model path
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
        "ref_commit": REF_COMMIT, "git_commit": runs.git_commit(),
        "date": datetime.date.today().isoformat()})
    command = ("python -m tftransfer.report.analyses.autoattack_parity " + " ".join(
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
