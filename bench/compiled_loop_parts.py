"""What parts of a compiled head-only run cost (issue 24): the schedule's one call alone, after
each kind of seeding, and with the steps of an epoch in a loop instead of traced in a row.

The cell of ``bench/head_only.py`` (MNIST, N = 100, 2,000 epochs, the natural resnet20 source,
cached features, final test only). A warm-up run records the arguments of its schedule call
(the network's ``compiled_functions``); each row then times that call (the best of 3,
the head reset before each):

- alone: nothing between two calls;
- after ``runtime.set_seed(0)``: ``tf.random.set_seed``'s kernel-cache clear, which makes the
  call instantiate its graph again (what every run pays: the toolkit writes no private
  TensorFlow seed state to avoid it);
- steps in a loop: the schedule traced again with ``_UNROLLED_STEPS = 0``, so that the one step
  of each epoch runs inside an inner ``tf.while_loop`` (the loop before this change).

    python bench/compiled_loop_parts.py [--data-dir ../shared/tfds]
"""

import argparse
import tempfile
import time

from common import machine_note, recorded_calls

from tftransfer import config
from tftransfer.finetune import compiled_loop
from tftransfer.training import runtime
from tftransfer import finetune


def best_of_3(call, before):
    seconds = []
    for _ in range(3):
        before()
        start = time.perf_counter()
        [output.numpy() for output in call()]
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def recorded_schedule_call(cache, cfg):
    """Runs ``cfg`` again on the network the warm-up traced and returns (network, steps per
    epoch, the schedule call's args), read from the network's store of traced functions."""
    network, steps, calls = recorded_calls(
        cache, lambda: finetune.fine_tune(cfg, cache=cache, save_model=False, verbose=False),
        ("schedule",))
    return network, steps, calls["schedule"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/tfds")
    args = parser.parse_args()
    print(machine_note())
    cache = finetune.RunCache()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config.TransferConfig(
            target="mnist", source="cifar10-resnet20-natural", out=f"{tmp}/run", epochs=2000,
            eval_every=0, unfrozen_blocks=0, training_loop="compiled",
            data=config.DataConfig(dataset="mnist", data_dir=args.data_dir, download=False,
                                   train_images=100, augment=False))
        finetune.fine_tune(cfg, cache=cache, save_model=False, verbose=False)  # features, traces
        network, steps, call_args = recorded_schedule_call(cache, cfg)

    def reset():
        network.reset(cfg.head_init, cfg.seed)

    def schedule():
        return compiled_loop._functions(network.trainer, steps,
                                        network.compiled_functions)["schedule"](*call_args)

    rows = [("alone", best_of_3(schedule, reset)),
            ("after runtime.set_seed(0)", best_of_3(schedule, lambda: (reset(),
                                                                        runtime.set_seed(0))))]
    unrolled, compiled_loop._UNROLLED_STEPS = compiled_loop._UNROLLED_STEPS, 0
    network.compiled_functions.clear()  # traced again, steps in a loop
    schedule()
    rows.append(("steps in a loop (alone)", best_of_3(schedule, reset)))
    compiled_loop._UNROLLED_STEPS = unrolled
    print(f"\nThe schedule's one call, head only, MNIST N = 100, 2,000 epochs of {steps} step:\n")
    print("| call | seconds | / alone |")
    print("|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {seconds / rows[0][1]:.2f}x |")


if __name__ == "__main__":
    main()
