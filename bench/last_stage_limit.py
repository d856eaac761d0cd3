"""Last-stage and head-only fine-tuning against the machine's attainable throughput (issue 37).

For each cell (the ``replication`` grid's: MNIST, the natural ``cifar10-resnet20-natural``
source, 32 px, batch 128, the curve every 5 epochs on 2,000 test images, the final accuracy on
all 10,000), in one process:

- the toolkit's real run, through ``finetune.fine_tune`` on cached features (one RunCache, as a
  sweep), then its parts, called with the arguments the run gave them (as
  ``bench/compiled_loop_parts.py``): the schedule's one call without curve points (the SGD
  steps) and with a point after every epoch (the curve's cost per point is the difference:
  a point after every epoch makes it ``epochs / points`` times larger than the noise of a
  shared machine; the run's points are then counted), the final evaluation, and a whole run
  of a new seed (as a sweep's next cell: it also computes its training images' features);
- the limit: the same convolutions and matmuls, at the same shapes and batch sizes, and
  nothing else, in one ``tf.function`` with the steps inside (``Limit``): per training step
  each trained layer's forward, its weight gradient and (but where it reads the cached
  features) its input gradient, then a plain weight update; per evaluation batch the forward
  pass. Its time gives the machine's attainable FLOP/s for that work.

FLOPs are counted from the layer shapes (``Conv``): a convolution's forward pass is
2 x H_out x W_out x C_out x k_h x k_w x C_in per image, a Dense layer's 2 x in x out; the
backward pass is the forward's once for the weight gradient and once more for the input
gradient, which layers reading the cached features do not need (so 2x forward for the
others, 1x for those). BatchNorm, ReLU, additions, the loss, the optimizer and the batch
gathers are counted as no FLOPs: they are what the limit leaves out. A whole run also counts
the frozen trunk's forward pass on the training images whose features it had to compute.

The achieved fraction is (FLOPs / toolkit seconds) / (FLOPs / limit seconds), i.e. limit
seconds / toolkit seconds, each the best of ``--repeats`` rounds (more for a cheap cell),
the two measured in turn. A part that takes milliseconds (a head's curve and final
evaluation) is within a loaded machine's noise: read its fraction as an order of magnitude.

    python bench/last_stage_limit.py [--data-dir ../shared/tfds] [--quick]
        [--last-stage N:EPOCHS ...] [--head N:EPOCHS ...] [--repeats 2]
        [--test-images 10000] [--curve-images 2000]

Default: the last stage at N = 400 (30 epochs) and the head only at N = 100 (2,000 epochs),
4.5 minutes of CPU time (5.2 wall on the loaded machine of 2026-12-07); ``--quick`` (the last
stage for 10 epochs, the head for 400, 2,000 test images, 1,000 for the curve, one round)
about 1.3 minutes of CPU time.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import math
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from common import machine_note, recorded_calls

from tftransfer import config, finetune
from tftransfer.finetune.feature_store import evaluation_batch_size
from tftransfer.finetune.run_cache import extraction_batch_size
from tftransfer.models import architectures

SOURCE = "cifar10-resnet20-natural"
EVAL_EVERY = 5
# The limit's weight update: small enough to keep the weights finite over thousands of steps;
# it chains each step to the last (no step can be skipped or merged with another).
LIMIT_LR = 1e-6
# Forward passes of the limit are repeated to at least this many FLOPs, so that a call's
# fixed cost (about a millisecond) does not pass for the limit of a tiny evaluation.
MIN_TIMED_FLOPS = 5e9
# A cell's parts are timed in at least ``--repeats`` rounds, and more (at most MAX_ROUNDS)
# while the rounds so far took under MIN_SECONDS: the best of more rounds is less noisy.
MIN_SECONDS, MAX_ROUNDS = 3.0, 10


@dataclasses.dataclass(frozen=True)
class Conv:
    """A convolution's shapes (per image; ``in_shape`` before any padding)."""

    in_shape: tuple
    out_shape: tuple
    kernel: tuple      # (k_h, k_w, C_in, C_out)
    stride: int
    padding: str       # SAME for PyTorch's symmetric padding (same FLOPs), else VALID

    @property
    def flops(self) -> int:
        h, w, c_out = self.out_shape
        k_h, k_w, c_in, _ = self.kernel
        return 2 * h * w * c_out * k_h * k_w * c_in


@dataclasses.dataclass(frozen=True)
class Part:
    """Layers run as one: convolutions in forward order (each reads the latest tensor of its
    input shape: the features at ``boundary`` or an earlier convolution's output), then,
    with a ``head`` (in, out), a global average pool and the head."""

    boundary: tuple
    convs: tuple
    head: tuple | None

    def forward_flops(self) -> int:
        head = 2 * self.head[0] * self.head[1] if self.head else 0
        return sum(conv.flops for conv in self.convs) + head

    def reads_boundary(self) -> list[bool]:
        """For each convolution, whether it reads the boundary (by the rule above)."""
        latest, reads = {self.boundary: True}, []
        for conv in self.convs:
            reads.append(latest[conv.in_shape])
            latest[conv.out_shape] = False
        return reads

    def training_flops(self) -> int:
        """Forward, weight gradients, and input gradients but of the layers reading the
        boundary (the cached features need none)."""
        backward = sum(conv.flops * (1 if reads else 2)
                       for conv, reads in zip(self.convs, self.reads_boundary()))
        head = 2 * self.head[0] * self.head[1] * (2 if self.convs else 1)
        return self.forward_flops() + backward + head


def conv_of(model: keras.Model, layer) -> Conv:
    """``layer``'s shapes; its input before the ``<name>_pad`` layer the toolkit's ResNets
    put in front of a padded convolution (``models.resnet.conv``)."""
    names = {other.name for other in model.layers}
    padded = f"{layer.name}_pad" in names
    source = model.get_layer(f"{layer.name}_pad") if padded else layer
    return Conv(tuple(source.input.shape[1:]), tuple(layer.output.shape[1:]),
                tuple(layer.kernel.shape), layer.strides[0], "SAME" if padded else "VALID")


def parts_of(network) -> tuple[Part, Part]:
    """(the trained part, the frozen trunk) of a fine-tuning ``network``, from its layers."""
    trained = network.trained
    trained_names = {layer.name for layer in trained.layers}
    head = trained.get_layer(architectures.head_name(network.model)).kernel.shape
    boundary = tuple(trained.inputs[0].shape[1:])
    convs = [layer for layer in network.model.layers if isinstance(layer, keras.layers.Conv2D)]
    return (Part(boundary, tuple(conv_of(network.model, c) for c in convs
                                 if c.name in trained_names), tuple(head)),
            Part(tuple(network.model.inputs[0].shape[1:]),
                 tuple(conv_of(network.model, c) for c in convs
                       if c.name not in trained_names), None))


class Limit:
    """``part``'s convolutions and matmuls alone, as ``tf.function``s that time training
    epochs and evaluation passes at given batch sizes (see the module docstring)."""

    def __init__(self, part: Part):
        self.part = part
        self.kernels = [tf.Variable(tf.random.normal(c.kernel, stddev=0.05, seed=i))
                        for i, c in enumerate(part.convs)]
        if part.head:
            self.kernels.append(tf.Variable(tf.random.normal(part.head, stddev=0.05, seed=99)))
        self.inputs = {}

    def _input(self, batch: int):
        """A batch of ``batch`` random inputs, made once per size (the loops read it: no
        gather, no copy); made eagerly, outside the traced functions."""
        if batch not in self.inputs:
            self.inputs[batch] = tf.random.uniform([batch, *self.part.boundary], seed=batch)
        return self.inputs[batch]

    def _forward(self, x):
        """(the output, [each conv's input], the head's input)."""
        latest, read = {self.part.boundary: x}, []
        out = x
        for conv, kernel in zip(self.part.convs, self.kernels):
            read.append(latest[conv.in_shape])
            out = latest[conv.out_shape] = tf.nn.conv2d(read[-1], kernel, conv.stride,
                                                        conv.padding)
        if not self.part.head:
            return out, read, None
        pooled = tf.reduce_mean(out, [1, 2]) if self.part.convs else x
        return tf.matmul(pooled, self.kernels[-1]), read, pooled

    def _step(self, x):
        """One SGD step: the gradient of 0.5 |logits|^2 (the logits themselves) by hand,
        layer by layer, then ``kernel -= LIMIT_LR * gradient``."""
        logits, read, pooled = self._forward(x)
        gradients = [tf.matmul(pooled, logits, transpose_a=True)]
        if self.part.convs:
            h, w, c = self.part.convs[-1].out_shape
            g = tf.matmul(logits, self.kernels[-1], transpose_b=True) / (h * w)
            pending = {(h, w, c): tf.broadcast_to(g[:, None, None, :], [tf.shape(x)[0], h, w, c])}
            for conv, kernel, inputs, is_boundary in reversed(list(zip(
                    self.part.convs, self.kernels, read, self.part.reads_boundary()))):
                g_out = pending[conv.out_shape]
                strides = [1, conv.stride, conv.stride, 1]
                gradients.insert(0, tf.raw_ops.Conv2DBackpropFilter(
                    input=inputs, filter_sizes=conv.kernel, out_backprop=g_out,
                    strides=strides, padding=conv.padding))
                if not is_boundary:
                    pending[conv.in_shape] = tf.raw_ops.Conv2DBackpropInput(
                        input_sizes=tf.shape(inputs), filter=kernel, out_backprop=g_out,
                        strides=strides, padding=conv.padding)
        for kernel, gradient in zip(self.kernels, gradients):
            kernel.assign_sub(LIMIT_LR * gradient)

    def training(self, examples: int, batch_size: int, epochs: int):
        """A function running ``epochs`` epochs of ``examples`` in batches of ``batch_size``
        (traced and warmed up here on one epoch)."""
        full, rest = divmod(examples, batch_size)
        x_full, x_rest = self._input(batch_size), self._input(rest)

        @tf.function
        def run(epochs):
            for _ in tf.range(epochs):
                for _ in tf.range(full):
                    self._step(x_full)
                if rest:
                    self._step(x_rest)
            return self.kernels[-1][0, 0]
        return _warmed(run, epochs)

    def evaluation(self, examples: int, batch_size: int, passes: int):
        """(a function, the share of its time that ``passes`` forward passes over
        ``examples`` in batches of ``batch_size`` take): one batch when they fit, as the
        toolkit evaluates. Work too small to time (a head's 2,000 images: 2.6 MFLOP) is
        repeated to ``MIN_TIMED_FLOPS``: the limit is the arithmetic's, not a call's."""
        work = max(1, self.part.forward_flops() * examples * passes)
        repeats = max(1, math.ceil(MIN_TIMED_FLOPS / work))
        return self._passes(examples, batch_size, passes * repeats), 1 / repeats

    def _passes(self, examples: int, batch_size: int, passes: int):
        full, rest = divmod(examples, batch_size)
        x_full, x_rest = self._input(batch_size), self._input(rest)

        @tf.function
        def run(passes):
            total = tf.constant(0.0)
            for _ in tf.range(passes):
                for _ in tf.range(full):
                    total += tf.reduce_sum(self._forward(x_full)[0][:1])
                if rest:
                    total += tf.reduce_sum(self._forward(x_rest)[0][:1])
            return total
        return _warmed(run, passes)


def _warmed(run, count: int):
    """``run(count)`` as a function of nothing, traced and run once with a count of 1 first:
    the timed calls then pay neither the trace nor the graph's first instantiation."""
    run(tf.constant(1)).numpy()
    return lambda: run(tf.constant(count))


def seconds(call, before=None) -> float:
    """Wall seconds of ``call()`` (its tensors fetched), after ``before()``."""
    if before:
        before()
    start = time.perf_counter()
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, call())
    return time.perf_counter() - start


def cell_config(args, root, n: int, blocks: int, epochs: int, seed: int = 0):
    """The replication grid's cell (defaults: batch 128, SGD 0.1 / 0.9 / 5e-4, x0.1 every
    epochs / 3, frozen BatchNorm in inference mode, feature cache on)."""
    return config.TransferConfig(
        target="mnist", source=SOURCE, out=f"{root}/n{n}b{blocks}s{seed}", epochs=epochs,
        unfrozen_blocks=blocks, eval_every=EVAL_EVERY, curve_test_images=args.curve_images,
        seed=seed, training_loop="compiled",
        data=config.DataConfig(dataset="mnist", data_dir=args.data_dir, download=False,
                               train_images=n, test_images=args.test_images, augment=False))


class Cell:
    """One cell's real run and its limit, measured part by part (``measure``)."""

    def __init__(self, args, cache, root, n, blocks, epochs):
        self.cfg = cell_config(args, root, n, blocks, epochs)
        self.cache, self.n, self.epochs = cache, n, epochs
        self.name = (f"{'last stage' if blocks else 'head only'}, N = {n}, {epochs} epochs")
        self._fine_tune(self.cfg)  # features of the test set and of seed 0's images, traces
        self.network, _, calls = recorded_calls(cache, lambda: self._fine_tune(self.cfg),
                                                ("schedule", "evaluate"))
        self.schedule_args, (self.test_set,) = calls["schedule"], calls["evaluate"]
        self.trained, self.trunk = parts_of(self.network)
        # Curve points inside the call (a last one on the final test set is made after it).
        self.points = int(np.sum(self.schedule_args[4].numpy()))
        self.curve_images = int(self.schedule_args[5].shape[0])
        self.test_images = int(self.test_set[0].shape[0])

    def _fine_tune(self, cfg):
        return finetune.fine_tune(cfg, cache=self.cache, save_model=False, verbose=False)

    def _schedule(self, every_epoch: bool):
        """The recorded schedule call with a curve point after every epoch, or none (the
        same shapes: the same trace). The curve's cost is the difference, a point after every
        epoch making it ``epochs / points`` times larger than the noise of a shared machine."""
        args = list(self.schedule_args)
        args[4] = tf.fill(tf.shape(args[4]), every_epoch)  # is_point
        return lambda: self._functions["schedule"](*args)

    @property
    def _functions(self) -> dict:
        """The network's traced compiled-loop functions (one steps-per-epoch entry)."""
        return next(iter(self.network.compiled_functions.values()))

    def _reset(self):
        self.network.reset(self.cfg.head_init, self.cfg.seed, self.cfg.head_std)

    def measure(self, repeats: int) -> list[tuple]:
        """Rows (part, GFLOP, toolkit s, limit s), each time the best of ``repeats``."""
        limit = Limit(self.trained)
        evaluate = self._functions["evaluate"]
        eval_batch = evaluation_batch_size(int(np.prod(self.trained.boundary)) * 4)
        pairs = {  # part -> (toolkit call, (its limit, the share of the limit's time))
            "steps": (self._schedule(False),
                      (limit.training(self.n, self.cfg.data.batch_size, self.epochs), 1)),
            "every epoch": (self._schedule(True), None),
            "curve": (None, limit.evaluation(self.curve_images, eval_batch, self.epochs)),
            "final": (lambda: evaluate(self.test_set),
                      limit.evaluation(self.test_images, eval_batch, 1))}
        best = collections.defaultdict(lambda: math.inf)
        began, rounds = time.perf_counter(), 0
        # In turn, so that both see the same background load; a cheap cell (a head's
        # parts take milliseconds) gets more rounds, up to MAX_ROUNDS in MIN_SECONDS.
        while rounds < repeats or (time.perf_counter() - began < MIN_SECONDS
                                   and rounds < MAX_ROUNDS):
            for part, (toolkit, bound) in pairs.items():
                if toolkit is not None:
                    best[part, "toolkit"] = min(best[part, "toolkit"],
                                                seconds(toolkit, self._reset))
                if bound is not None:
                    best[part, "limit"] = min(best[part, "limit"], seconds(bound[0]) * bound[1])
            rounds += 1
        return self._rows(best, repeats)

    def _rows(self, best, repeats):
        train = self.trained.training_flops() * self.n * self.epochs
        curve = self.trained.forward_flops() * self.curve_images * self.points
        final = self.trained.forward_flops() * self.test_images
        # Both curve timings had a point after every epoch: the run's share of them.
        share = self.points / self.epochs
        rows = [(f"SGD steps ({self.n} images x {self.epochs} epochs)", train,
                 best["steps", "toolkit"], best["steps", "limit"]),
                (f"curve ({self.points} x {self.curve_images:,} images)", curve,
                 (best["every epoch", "toolkit"] - best["steps", "toolkit"]) * share,
                 best["curve", "limit"] * share),
                (f"final evaluation ({self.test_images:,} images)", final,
                 best["final", "toolkit"], best["final", "limit"])]
        return rows + [self._whole_run(repeats, train + curve + final,
                                       sum(row[3] for row in rows))]

    def _whole_run(self, repeats: int, flops: int, limit_seconds: float) -> tuple:
        """A new seed's whole run (what a sweep's next cell pays), with the trunk's forward
        pass on the training images whose features it computed."""
        runs = []
        for seed in range(1, repeats + 1):
            computed = self.cache.computed
            took = seconds(lambda: self._fine_tune(dataclasses.replace(self.cfg, seed=seed)))
            runs.append((took, self.cache.computed - computed))
        took, images = min(runs)
        trunk_seconds = 0.0
        if images:  # its limit: the frozen trunk's convolutions on them, in the same batches
            call, share = Limit(self.trunk).evaluation(
                images, extraction_batch_size(256, self.trunk.boundary[0]), 1)
            trunk_seconds = min(seconds(call) for _ in range(2)) * share
        return (f"whole run, a new seed (+ trunk on its {images} new images, Python)",
                flops + self.trunk.forward_flops() * images, took, limit_seconds + trunk_seconds)


def cells(text: list[str]) -> list[tuple[int, int]]:
    """``N:EPOCHS`` arguments -> (N, epochs) pairs."""
    return [tuple(int(part) for part in item.split(":")) for item in text]


def print_table(measured: list[tuple[str, list]]) -> None:
    print("\n| cell | part | GFLOP | toolkit s | toolkit GFLOP/s | limit s | "
          "attainable GFLOP/s | achieved fraction |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in measured:
        for part, flops, toolkit, limit in rows:
            print(f"| {name} | {part} | {flops / 1e9:.3g} | {toolkit:.3g} | "
                  f"{flops / 1e9 / toolkit:.3g} | {limit:.3g} | {flops / 1e9 / limit:.3g} | "
                  f"{limit / toolkit:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/tfds")
    parser.add_argument("--quick", action="store_true",
                        help="shorter cells, 2,000 test images, one round")
    parser.add_argument("--last-stage", nargs="*", help="N:EPOCHS cells (default 400:30)")
    parser.add_argument("--head", nargs="*", help="N:EPOCHS cells (default 100:2000)")
    parser.add_argument("--repeats", type=int, help="the best of (default 2)")
    parser.add_argument("--test-images", type=int, help="final evaluation set (default all)")
    parser.add_argument("--curve-images", type=int, help="curve set (default 2000)")
    args = parser.parse_args()
    quick = {"last_stage": ["400:10"], "head": ["100:400"], "repeats": 1, "test_images": 2000,
             "curve_images": 1000}
    full = {"last_stage": ["400:30"], "head": ["100:2000"], "repeats": 2, "test_images": None,
            "curve_images": 2000}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    print(machine_note())
    cache, measured = finetune.RunCache(), []
    with tempfile.TemporaryDirectory() as root:
        for blocks, kinds in ((3, args.last_stage), (0, args.head)):
            for n, epochs in cells(kinds):
                cell = Cell(args, cache, root, n, blocks, epochs)
                measured.append((cell.name, cell.measure(args.repeats)))
                print(f"{cell.name}: trained part {cell.trained.forward_flops() / 1e6:.3g} "
                      f"MFLOP forward, {cell.trained.training_flops() / 1e6:.3g} per training "
                      f"image; frozen trunk {cell.trunk.forward_flops() / 1e6:.3g} forward",
                      flush=True)
    print_table(measured)


if __name__ == "__main__":
    main()
