"""Is a fine-tuned run's test accuracy held back by its BatchNorm moving statistics?

Loads a ``python main.py transfer --out RUN`` model, measures its accuracy on a stratified
part of the test split, then refreshes the moving statistics of its trainable BatchNorm
layers with forward passes in training mode over the run's own training images (no
optimizer step, no weight change; frozen BatchNorm layers stay in inference mode in Keras 3)
and measures again. A large gain means the run stopped before those statistics had moved
from the source's data to the target's.

Usage:
  python -m tftransfer.report.analyses.bn_statistics_probe RUN [--test-images 2000] [--passes 60]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tftransfer import data
from tftransfer.sources import saving
from tftransfer.config import recorded_load_options


def accuracy(model, images, labels) -> float:
    return float(np.mean(np.argmax(model.predict(images, verbose=0), -1) == labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a transfer run directory (model.keras, config.json)")
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--passes", type=int, default=60,
                        help="forward passes over the training images (momentum 0.1 each)")
    args = parser.parse_args()

    run = Path(args.run)
    config = json.loads((run / "config.json").read_text())
    cfg = config["resolved_config"]
    model = saving.load_model(run / "model.keras")
    # The run's keys, splits and preprocessing: the images it trained and tested on.
    target = data.load(cfg["target"], data_dir=cfg["data"]["data_dir"], download=False,
                       **recorded_load_options(config))
    size = model.input_shape[1]
    train_idx = data.select_subset(target.train.labels, cfg["data"]["train_images"], cfg["seed"])
    test_idx = np.sort(data.select_subset(target.test.labels, args.test_images, 0))
    x_train, _ = data.subset_arrays(target.train, train_idx, size)
    x_test, y_test = data.subset_arrays(target.test, test_idx, size)

    before = accuracy(model, x_test, y_test)
    for _ in range(args.passes):
        model(x_train, training=True)  # updates only the moving mean and variance
    after = accuracy(model, x_test, y_test)
    print(json.dumps({"run": str(run), "test_images": len(test_idx), "passes": args.passes,
                      "accuracy_as_trained": round(before, 4),
                      "accuracy_statistics_refreshed": round(after, 4)}))


if __name__ == "__main__":
    main()
