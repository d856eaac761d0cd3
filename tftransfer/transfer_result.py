"""The result row of a fine-tuning run: what ``metrics.json`` holds and a sweep appends."""

from __future__ import annotations

from tftransfer import runs
from tftransfer.config import TransferConfig


def result_row(cfg, source, target, indices, evaluator, seconds, out, use_cache):
    """The run's result row: final test accuracy and loss, the paper's variables, the
    protocol fields that differ from the defaults, time, the test curve and the run dir."""
    train_idx, test_idx, curve_idx = indices
    row = {
        "test_accuracy": evaluator.final["test_accuracy"],
        "test_loss": evaluator.final["test_loss"],
        "target": target.name, "source": source.identity["source"],
        "source_attack": source.identity["source_attack"],
        "source_eps": source.identity["source_eps"],
        "train_images": int(len(train_idx)), "test_images": int(len(test_idx)),
        "curve_test_images": int(len(curve_idx)),
        "unfrozen_blocks": cfg.unfrozen_blocks, "epochs": cfg.epochs, "seed": cfg.seed,
        "head_init": cfg.head_init, "frozen_bn": cfg.frozen_bn,
        **protocol_columns(cfg),
        "learning_rate": cfg.optim.learning_rate, "batch_size": cfg.data.batch_size,
        "train_seconds": round(seconds, 2), "images_seen": int(len(train_idx)) * cfg.epochs,
        "feature_cache": use_cache, "git_commit": runs.git_commit(), "run_dir": str(out),
    }
    for epoch, accuracy in sorted(evaluator.curve.items()):
        row[f"test_accuracy_epoch_{epoch}"] = accuracy
    return row


def protocol_columns(cfg: TransferConfig) -> dict:
    """The protocol fields that differ from the defaults the replication's rows were run
    with (so those rows keep their columns): normalisation, subset, augmentation, recipe."""
    columns = {}
    if cfg.normalization != "source":
        columns["normalization"] = cfg.normalization
    if cfg.data.subset != "stratified":
        columns["subset"] = cfg.data.subset
    if cfg.data.augment:
        columns["augment"] = cfg.data.augment_policy
    if cfg.recipe:
        columns["recipe"] = cfg.recipe
    return columns
