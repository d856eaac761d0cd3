"""The same last-stage fine-tune in PyTorch, written the way the paper's code runs it, against
the toolkit with and without its feature cache (issue 37, item 4).

One process, one cell of the ``replication`` grid: the natural ``cifar10-resnet20-natural``
source on MNIST at 32 px, N training images (the toolkit's subset for the seed), the last stage
(layer3's 3 blocks) and a new N(0, 1) head (drawn with the seed) trained, SGD lr 0.1, momentum
0.9, weight decay 5e-4 (coupled, PyTorch's), x0.1 every epochs / 3, batch 128, the test curve
every 5 epochs on 2,000 test images and the final accuracy on all 10,000.

- PyTorch: the toolkit's Keras network (source weights and the seed's head) turned into a
  torch module by ``convert.to_torch.torch_twin`` (same architecture and weights: its logits
  are checked against Keras'), then a plain loop over a ``DataLoader`` (shuffled batches of a
  ``TensorDataset``, ``num_workers=0``: worker processes would only compete for the 2 cores),
  the whole network forward at every step, the frozen part's parameters with
  ``requires_grad = False`` (the paper's ``re_init_and_freeze_blocks``), evaluations under
  ``torch.no_grad()`` in batches of 128 (robustness' loaders). The images are the toolkit's
  model inputs (resized to 32 px, 3 channels, in [0, 1]) computed once before timing: the
  paper's code decodes and transforms them in every epoch, so its time is at least this.
- The toolkit: ``finetune.fine_tune`` with ``feature_cache=off`` (``fit()`` over a tf.data
  pipeline of images, the whole network each step), traced by a warm-up run of another seed
  on a small test set; and with the cache (the default): its first run in the process
  (the test set's features at the stage boundary, traces), then a new seed (a sweep's next
  cell: its training images' features).

BatchNorm: ``--frozen-bn inference`` (the replication grid's; the frozen layers in eval mode
in PyTorch, needed by the cache) or ``train`` (the ``utrera2021`` preset's, PyTorch's
``model.train()`` everywhere; the toolkit then runs without the cache).

Threads: torch gets as many intra-op threads as TensorFlow's pool (all cores when TensorFlow's
setting is 0, as here) and as many inter-op threads. ``--torch-threads 2 1`` adds runs with
other counts (the first is the ratios' reference): on a shared machine PyTorch's OpenMP
threads wait for each other at every operation, and a single thread can be faster.

    python bench/torch_last_stage.py [--data-dir ../shared/tfds] [--quick] [--n 400]
        [--epochs 30] [--test-images 10000] [--curve-images 2000] [--frozen-bn inference]
        [--torch-threads 2 1]

Default: 13 minutes with ``--torch-threads 2 1`` on the loaded machine of 2026-12-07, 8 of
them PyTorch's 2-thread run (bench/README.md); ``--quick`` (N = 200, 10 epochs, 2,000 test
images) is several times shorter. Not yet timed on a quiet machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
import warnings

import numpy as np
import tensorflow as tf
from common import machine_note

from tftransfer import config, data, finetune
from tftransfer.convert.to_torch import logit_gap, torch_twin
from tftransfer.finetune.compiled_loop import curve_epochs
from tftransfer.models import architectures

SOURCE = "cifar10-resnet20-natural"
BLOCKS = 3
EVAL_EVERY = 5


def tensorflow_threads() -> tuple[int, int]:
    """TensorFlow's (intra-op, inter-op) threads; its setting 0 means all cores."""
    threading = tf.config.threading
    return (threading.get_intra_op_parallelism_threads() or os.cpu_count(),
            threading.get_inter_op_parallelism_threads() or os.cpu_count())


def run_config(args, root, seed: int, feature_cache: str, **data_fields):
    """The cell's TransferConfig (the grid's defaults otherwise)."""
    fields = {"dataset": "mnist", "data_dir": args.data_dir, "download": False,
              "train_images": args.n, "test_images": args.test_images, "augment": False,
              **data_fields}
    return config.TransferConfig(
        target="mnist", source=SOURCE, out=f"{root}/{feature_cache}{seed}", epochs=args.epochs,
        unfrozen_blocks=BLOCKS, eval_every=EVAL_EVERY, curve_test_images=args.curve_images,
        seed=seed, frozen_bn=args.frozen_bn, feature_cache=feature_cache,
        data=config.DataConfig(**fields))


def timed_fine_tune(cfg, cache) -> tuple[float, float]:
    """(seconds, final test accuracy) of ``finetune.fine_tune(cfg)``."""
    start = time.perf_counter()
    result = finetune.fine_tune(cfg, cache=cache, save_model=False, verbose=False)
    return time.perf_counter() - start, result["test_accuracy"]


def torch_inputs(torch, cfg, cache):
    """The run's training, curve and test images (NCHW float tensors) and labels, as the
    toolkit's pipeline makes them."""
    target = cache.target(cfg)
    train_idx, test_idx, curve_idx = finetune.run_indices(cfg, target)

    def tensors(image_set, idx):
        images, labels = data.subset_arrays(image_set, idx, 32)
        return (torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
                torch.from_numpy(labels.astype(np.int64)))
    return (tensors(target.train, train_idx), tensors(target.test, curve_idx),
            tensors(target.test, test_idx))


def torch_network(torch, cfg, cache, check_images):
    """The twin of the toolkit's network for ``cfg`` (the source with the seed's head), its
    logits checked against Keras'; returns (module, names of the trained modules)."""
    warnings.filterwarnings("ignore", message="The structure of `inputs`")  # logit_gap's call
    keras_model = finetune.attach_head(cache.source(SOURCE).model, 10, cfg.head_init, cfg.seed,
                                       cfg.head_std)
    twin = torch_twin(keras_model)
    gap = logit_gap(keras_model, twin, check_images)
    if gap > 1e-3:
        raise SystemExit(f"the torch twin's logits differ from Keras' by {gap:.2e}")
    return twin, trained_names(keras_model)


def trained_names(keras_model) -> tuple[str, ...]:
    """The layers fine-tuning trains (``finetune.freeze``'s rule): the last blocks, the
    layers between them and the head, the head; torch's module names are the same."""
    return (*finetune.unfrozen_block_names(keras_model, BLOCKS),
            *architectures.top_layers(keras_model), architectures.head_name(keras_model))


def _is_trained(name: str, trained) -> bool:
    return any(name == part or name.startswith(f"{part}.") for part in trained)


def paper_setup(torch, twin, trained, cfg):
    """Freezes ``twin`` as the paper does (``requires_grad = False`` outside ``trained``);
    returns (a function setting each module's train/eval mode for an epoch, the SGD)."""
    for name, parameter in twin.named_parameters():
        parameter.requires_grad = _is_trained(name, trained)
    frozen_norms = [module for name, module in twin.named_modules()
                    if isinstance(module, torch.nn.BatchNorm2d) and not _is_trained(name, trained)]

    def set_modes():
        twin.train()
        if cfg.frozen_bn == "inference":
            for module in frozen_norms:
                module.eval()
    optimizer = torch.optim.SGD([p for p in twin.parameters() if p.requires_grad],
                                lr=cfg.optim.learning_rate, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)
    return set_modes, optimizer


def sgd_step(torch, twin, optimizer, x, y) -> None:
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(twin(x), y).backward()
    optimizer.step()


def torch_fine_tune(torch, twin, trained, inputs, cfg) -> tuple[float, float]:
    """(seconds, final test accuracy) of the paper-style loop on ``twin``."""
    (train_x, train_y), curve, test = inputs
    set_modes, optimizer = paper_setup(torch, twin, trained, cfg)
    batch, data_tools = cfg.data.batch_size, torch.utils.data
    loader = data_tools.DataLoader(data_tools.TensorDataset(train_x, train_y),
                                   batch_size=batch, shuffle=True,
                                   generator=torch.Generator().manual_seed(cfg.seed))
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, max(1, cfg.epochs // 3), 0.1)
    points = set(curve_epochs(cfg.epochs, cfg.eval_every))
    start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        set_modes()
        for x, y in loader:
            sgd_step(torch, twin, optimizer, x, y)
        schedule.step()
        if epoch in points:
            torch_accuracy(torch, twin, *curve, batch)
    accuracy = torch_accuracy(torch, twin, *test, batch)
    return time.perf_counter() - start, accuracy


def one_step_gap(torch, cfg, cache, inputs) -> float:
    """The largest difference of any weight or BatchNorm statistic after one SGD step on the
    same first batch from the same start, the toolkit's ``train_step`` against
    ``sgd_step``: that both run the same recipe (the runs' batch orders differ)."""
    network = finetune.build_network(cfg, cache.source(SOURCE), 10, 32, 1)
    network.reset(cfg.head_init, cfg.seed, cfg.head_std)
    twin = torch_twin(network.model)
    set_modes, optimizer = paper_setup(torch, twin, trained_names(network.model), cfg)
    x, y = (tensor[:cfg.data.batch_size] for tensor in inputs[0])
    set_modes()
    sgd_step(torch, twin, optimizer, x, y)
    network.trainer.train_step((tf.constant(x.numpy().transpose(0, 2, 3, 1)),
                                tf.constant(y.numpy())))
    stepped = torch_twin(network.model).state_dict()
    return max(float((value - stepped[key]).abs().max())  # not torch's own step counts
               for key, value in twin.state_dict().items()
               if not key.endswith("num_batches_tracked"))


def torch_accuracy(torch, model, images, labels, batch: int) -> float:
    """Top-1 accuracy of ``model`` in eval mode, batch by batch over a DataLoader."""
    model.eval()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels),
                                         batch_size=batch)
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    return correct / len(labels)


def toolkit_rows(args, root, cache) -> list[tuple[str, float, float]]:
    """(path, seconds, accuracy) of the toolkit's runs: without the cache (traced by a
    warm-up of another seed on 200 test images), then with it (first run, a new seed)."""
    seed = args.seed
    small = {"test_images": 200}
    warm = dataclasses.replace(run_config(args, root, seed + 1, "off", **small),
                               curve_test_images=100)
    timed_fine_tune(warm, cache)
    rows = [("toolkit, feature cache off (fit() on images, traced)",
             *timed_fine_tune(run_config(args, root, seed, "off"), cache))]
    if args.frozen_bn != "inference":
        return rows  # the cache needs frozen BatchNorm in inference mode
    return rows + [
        ("toolkit, feature cache on, first run (test-set features, traces)",
         *timed_fine_tune(run_config(args, root, seed, "auto"), cache)),
        ("toolkit, feature cache on, a new seed (its training images' features)",
         *timed_fine_tune(run_config(args, root, seed + 2, "auto"), cache))]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/tfds")
    parser.add_argument("--quick", action="store_true",
                        help="N = 200, 10 epochs, 2,000 test images, 500 for the curve")
    parser.add_argument("--n", type=int, help="training images (default 400)")
    parser.add_argument("--epochs", type=int, help="epochs (default 30)")
    parser.add_argument("--test-images", type=int, help="final evaluation (default all)")
    parser.add_argument("--curve-images", type=int, help="curve set (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frozen-bn", choices=("inference", "train"), default="inference")
    parser.add_argument("--torch-threads", type=int, nargs="*",
                        help="torch runs with these thread counts (default: TensorFlow's "
                             "intra-op threads); the first is the ratios' reference")
    args = parser.parse_args()
    defaults = ({"n": 200, "epochs": 10, "test_images": 2000, "curve_images": 500} if args.quick
                else {"n": 400, "epochs": 30, "test_images": None, "curve_images": 2000})
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.torch_threads = args.torch_threads or [tensorflow_threads()[0]]
    return args


def torch_rows(torch, args, cfg, cache, inputs) -> list[tuple[str, float, float]]:
    """(path, seconds, accuracy) of the PyTorch runs, one per ``--torch-threads`` count."""
    rows = []
    for threads in args.torch_threads:
        torch.set_num_threads(threads)
        twin, trained = torch_network(torch, cfg, cache,
                                      inputs[0][0][:8].numpy().transpose(0, 2, 3, 1))
        rows.append((f"PyTorch, plain loop over a DataLoader (the paper's way), "
                     f"{threads} thread{'s' if threads > 1 else ''}",
                     *torch_fine_tune(torch, twin, trained, inputs, cfg)))
    return rows


def main():
    args = parse_args()
    import torch  # after TensorFlow: both import together (../shared/DESIGN.md)

    intra, inter = tensorflow_threads()
    torch.set_num_interop_threads(inter)
    print(machine_note())
    print(f"threads: TensorFlow intra-op {intra}, inter-op {inter} (its 0 = all cores); torch "
          f"set_num_interop_threads({inter}), set_num_threads({args.torch_threads})")
    cache = finetune.RunCache()
    with tempfile.TemporaryDirectory() as root:
        cfg = run_config(args, root, args.seed, "off")
        inputs = torch_inputs(torch, cfg, cache)  # loads MNIST and the source: neither timed
        gap = one_step_gap(torch, cfg, cache, inputs)
        print(f"one SGD step on the same {cfg.data.batch_size} images from the same weights, "
              f"toolkit against PyTorch: largest difference of any weight or BatchNorm "
              f"statistic {gap:.1e}", flush=True)
        rows = toolkit_rows(args, root, cache)
        print_table(args, torch_rows(torch, args, cfg, cache, inputs), rows)


def print_table(args, torch_rows, rows) -> None:
    print(f"\nLast stage ({BLOCKS} blocks) + head, MNIST N = {args.n}, {args.epochs} epochs, "
          f"curve every {EVAL_EVERY} on {args.curve_images:,}, final on "
          f"{args.test_images or 10000:,} test images, frozen BatchNorm: {args.frozen_bn}\n")
    print("| path | seconds | final test accuracy | / PyTorch |")
    print("|---|---|---|---|")
    reference = torch_rows[0][1]
    for name, seconds, accuracy in [*torch_rows, *rows]:
        print(f"| {name} | {seconds:.2f} | {accuracy:.4f} | {seconds / reference:.2f}x |")


if __name__ == "__main__":
    main()
