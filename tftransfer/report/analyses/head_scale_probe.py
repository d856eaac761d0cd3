"""How large are the new head's initial logits and gradients at the paper's N(0, 1) scale?

The paper draws its new head from N(0, 1) over ResNet-50's 2,048 features; over resnet20's 64
features the same draw gives initial logits sqrt(2048 / 64) = 5.66 times smaller when the
features have similar magnitudes (the why-no-gain "head initial scale" cause). This probe
measures it, without training: it builds the network exactly as ``fine_tune`` does for the ``utrera2021``
preset (``RunCache.network``: a copy of the source, the new head, the last blocks unfrozen,
frozen BatchNorm in training mode, the target's normalisation constants), takes the first
training batch of the run's subset, and for each head scale and head seed runs one forward
and one backward pass (no optimizer step). Per image it reports the L2 norm of the
penultimate features and of the logits, the batch's cross-entropy, and the global L2 norm of
the cross-entropy's gradient reaching the unfrozen blocks' weights and the head.

Usage:
  python -m tftransfer.report.analyses.head_scale_probe --data-dir DIR \\
      [--out results/why-no-gain/head_scale.md] [--train-images 100] [--head-stds 1.0 5.657]
"""

from __future__ import annotations

import argparse
import csv
import math
import shlex
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tftransfer import data
from tftransfer.config import DataConfig, TransferConfig, apply_recipe
from tftransfer.finetune.networks import classification_loss
from tftransfer.finetune.run import augments, normalization_statistics, resolve_length_and_stages
from tftransfer.finetune.run_cache import RunCache
from tftransfer.models import architectures
from tftransfer.runs import write_text_atomic
from tftransfer.training import runtime

SOURCES = ("cifar10-resnet20-natural", "cifar10-resnet20-l2-eps0.5")
TARGETS = ("mnist", "fashion_mnist")
# 1: the paper's N(0, 1); sqrt(2048 / 64): the paper's initial logit size over resnet20's 64.
HEAD_STDS = (1.0, 5.657)
HEAD_SEEDS = (0, 1, 2, 3, 4)
# The measured quantities, each a column of the CSV: (column, the markdown table's header).
MEASURES = (
    ("feature_norm", "feature L2 / image"),
    ("logit_norm", "logit L2 / image"),
    ("loss", "cross-entropy"),
    ("grad_blocks", "grad L2, unfrozen blocks"),
    ("grad_head", "grad L2, head"),
)


def preset_config(target: str, source: str, data_dir: str | None = None,
                  train_images: int = 100, unfrozen_blocks: int = 3, seed: int = 0,
                  recipe: str | None = "utrera2021") -> TransferConfig:
    """The TransferConfig a ``transfer --recipe utrera2021`` run of this cell resolves to
    (built as the ``transfer`` command builds it: its fields, then the recipe)."""
    cfg = TransferConfig(target=target, source=source, seed=seed,
                         unfrozen_blocks=unfrozen_blocks,
                         data=DataConfig(dataset=target, data_dir=data_dir, download=False,
                                         train_images=train_images))
    return apply_recipe(cfg, recipe)


def measure(cfg: TransferConfig, head_stds=HEAD_STDS, head_seeds=HEAD_SEEDS,
            cache: RunCache | None = None) -> list[dict]:
    """One forward and one backward pass per head scale and head seed, no weight change.

    The network, its normalisation and the first training batch are ``fine_tune``'s for
    ``cfg``; before each pass the network is ``reset`` to the source's weights and a head
    drawn with ``cfg.head_init``, the scale and the seed (``cfg.head_std`` and ``cfg.seed``'s
    head are not used: ``cfg.seed`` still draws the training images).

    Args:
      cfg: the run's configuration (``preset_config``).
      head_stds: the ``normal`` head's standard deviations to measure.
      head_seeds: the head initializer's seeds.
      cache: a RunCache, to share loaded sources and targets across calls.

    Returns:
      One row per (head_std, head_seed): the cell's names, the batch's size and the
      ``MEASURES`` (per-image means of the feature and logit L2 norms, the mean
      cross-entropy, and the global L2 norms of its gradient over the unfrozen blocks'
      weights and over the head's kernel and bias; the trainer's weight-decay term is not
      included).
    """
    with runtime.precision_policy(cfg.precision):
        cache = cache or RunCache()
        source = cache.source(cfg.source)
        cfg = resolve_length_and_stages(cfg, source, cache)
        target = cache.target(cfg)
        image_size = cfg.data.image_size or int(source.model.inputs[0].shape[1])
        # fine_tune's training images, steps, augmentation and normalisation (run._indices).
        train_idx = data.select_subset(target.train.labels, cfg.data.train_images, cfg.seed,
                                       method=cfg.data.subset)
        steps = math.ceil(len(train_idx) / cfg.data.batch_size)
        augment = augments(cfg, target)
        network = cache.network(cfg, source, target.num_classes, image_size, steps, augment,
                                normalization_statistics(cfg, target, train_idx, image_size))
        if network.cached:
            raise ValueError("head_scale_probe measures a network trained end to end; this "
                             "configuration trains on cached trunk features.")
        images, labels = first_batch(cfg, target, train_idx, image_size, augment)
        model = network.model
        probe = keras.Model(model.inputs, [architectures.features(model), model.outputs[0]])
        groups = variable_groups(model, network.blocks)
        loss_fn = classification_loss(cfg.optim.label_smoothing)
        rows = []
        for head_std in head_stds:
            for head_seed in head_seeds:
                network.reset(cfg.head_init, head_seed, head_std)
                with tf.GradientTape() as tape:
                    features, logits = probe(images, training=True)  # as the trainer's step
                    loss = loss_fn(labels, tf.cast(logits, tf.float32))
                gradients = tape.gradient(loss, [v for group in groups.values() for v in group])
                norms, start = {}, 0
                for name, group in groups.items():
                    norms[name] = float(tf.linalg.global_norm(gradients[start:start + len(group)]))
                    start += len(group)
                rows.append({
                    "target": target.name, "source": cfg.source, "train_images": len(train_idx),
                    "batch_images": int(images.shape[0]), "unfrozen_blocks": cfg.unfrozen_blocks,
                    "head_std": head_std, "head_seed": head_seed,
                    "feature_norm": mean_norm(features), "logit_norm": mean_norm(logits),
                    "loss": float(loss), "grad_blocks": norms["blocks"],
                    "grad_head": norms["head"]})
        network.reset(cfg.head_init, cfg.seed, cfg.head_std)  # as a new run would find it
    return rows


def first_batch(cfg: TransferConfig, target, train_idx, image_size: int, augment: bool):
    """The first batch of ``fine_tune``'s training input (``data.training_pipeline`` with the
    run's seed set as ``fine_tune`` sets it): (images, labels) tensors."""
    runtime.set_seed(cfg.seed)
    ds = data.training_pipeline(target.train, train_idx, image_size, cfg.data.batch_size,
                                cfg.seed, cfg.epochs, augmentation=augment, flip=target.flip,
                                color_jitter=cfg.data.color_jitter,
                                policy=cfg.data.augment_policy)
    images, labels = next(iter(ds.take(1)))
    return images, labels


def variable_groups(model: keras.Model, blocks: list[str]) -> dict[str, list]:
    """The trainable variables of the unfrozen ``blocks`` and of the head (layers between
    them, ``architectures.top_layers``, are in neither)."""
    head = architectures.head_name(model)
    groups = {"blocks": [], "head": []}
    for layer in model.layers:
        if layer.name == head:
            groups["head"] += layer.trainable_weights
        elif architectures.in_blocks(layer.name, blocks):
            groups["blocks"] += layer.trainable_weights
    return groups


def mean_norm(tensor) -> float:
    """The mean over the batch of each row's L2 norm."""
    flat = tf.reshape(tf.cast(tensor, tf.float32), [tf.shape(tensor)[0], -1])
    return float(tf.reduce_mean(tf.norm(flat, axis=1)))


def summarize(rows: list[dict]) -> list[dict]:
    """Per (target, source, head_std): mean, min and max over the head seeds of each measure."""
    cells: dict[tuple, list[dict]] = {}
    for row in rows:
        cells.setdefault((row["target"], row["source"], row["head_std"]), []).append(row)
    summary = []
    for (target, source, head_std), group in cells.items():
        entry = {"target": target, "source": source, "head_std": head_std,
                 "head_seeds": len(group), "batch_images": group[0]["batch_images"]}
        for name, _ in MEASURES:
            values = np.asarray([row[name] for row in group], np.float64)
            entry.update({name: values.mean(), f"{name}_min": values.min(),
                          f"{name}_max": values.max()})
        summary.append(entry)
    return summary


def _cell(entry: dict, name: str) -> str:
    low, high = entry[f"{name}_min"], entry[f"{name}_max"]
    if np.isclose(low, high, rtol=1e-6, atol=0):
        return f"{entry[name]:.4g}"
    return f"{entry[name]:.4g} ({low:.4g}-{high:.4g})"


def markdown(rows: list[dict], command: str) -> str:
    """The probe's markdown: the command, then one table row per (target, source, head_std)
    and, per (target, source), the larger scale's measures over the smaller one's."""
    summary = summarize(rows)
    seeds = sorted({row["head_seed"] for row in rows})
    lines = [f"`{command}`", "",
             f"One forward and one backward pass, no training, on the first training batch "
             f"({rows[0]['batch_images']} images of N = {rows[0]['train_images']}) of the "
             f"utrera2021 preset (random subset, seed 0; last {rows[0]['unfrozen_blocks']} "
             f"blocks unfrozen, frozen BatchNorm in training mode, the target's normalisation "
             f"constants). Mean over head seeds {', '.join(map(str, seeds))} (min-max in "
             f"brackets where they differ). Norms are per image, averaged over the batch; "
             f"gradients are global L2 norms of the cross-entropy's gradient (without the "
             f"weight-decay term) over the unfrozen blocks' weights and over the head's kernel "
             f"and bias.", "",
             "| target | source | head std | " + " | ".join(h for _, h in MEASURES) + " |",
             "|---|---|---|" + "---|" * len(MEASURES)]
    for entry in summary:
        lines.append(f"| {entry['target']} | {entry['source']} | {entry['head_std']:g} | "
                     + " | ".join(_cell(entry, name) for name, _ in MEASURES) + " |")
    lines += ["", "Larger head std over smaller (ratio of the seed means):", "",
              "| target | source | std ratio | " + " | ".join(h for _, h in MEASURES) + " |",
              "|---|---|---|" + "---|" * len(MEASURES)]
    by_cell: dict[tuple, list[dict]] = {}
    for entry in summary:
        by_cell.setdefault((entry["target"], entry["source"]), []).append(entry)
    for (target, source), entries in by_cell.items():
        entries = sorted(entries, key=lambda e: e["head_std"])
        if len(entries) < 2:
            continue
        low, high = entries[0], entries[-1]
        lines.append(f"| {target} | {source} | {high['head_std'] / low['head_std']:.4g} | "
                     + " | ".join(f"{high[name] / low[name]:.3g}" for name, _ in MEASURES)
                     + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    """Every (target, source, head_std, head_seed) row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="TFDS data directory")
    parser.add_argument("--out", default="results/why-no-gain/head_scale.md",
                        help="the markdown file (the CSV goes beside it, same stem)")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES))
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    parser.add_argument("--train-images", type=int, default=100)
    parser.add_argument("--unfrozen-blocks", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="the run seed (training images)")
    parser.add_argument("--head-stds", type=float, nargs="+", default=list(HEAD_STDS))
    parser.add_argument("--head-seeds", type=int, nargs="+", default=list(HEAD_SEEDS))
    args = parser.parse_args()

    command = "python -m tftransfer.report.analyses.head_scale_probe " + shlex.join(sys.argv[1:])
    cache = RunCache()
    rows = []
    for target in args.targets:
        for source in args.sources:
            cfg = preset_config(target, source, args.data_dir, args.train_images,
                                args.unfrozen_blocks, args.seed)
            rows += measure(cfg, args.head_stds, args.head_seeds, cache)
    out = Path(args.out)
    write_csv(rows, out.with_suffix(".csv"))
    text = markdown(rows, command)
    write_text_atomic(out, text)
    print(text)


if __name__ == "__main__":
    main()
