"""Clean and adversarial test accuracy of a model -> one result dict (a results row)."""

from __future__ import annotations

import sys
import time

import tensorflow as tf

from tftransfer import data
from tftransfer.adversarial import attacks
from tftransfer.config import AttackConfig
from tftransfer.errors import UserError


def model_image_size(model) -> int:
    """The input side in pixels that ``model`` expects."""
    shape = model.inputs[0].shape
    if shape[1] is None or shape[1] != shape[2] or shape[-1] != 3:
        raise UserError(f"Expected a model taking square RGB images, got input shape {tuple(shape)}.")
    return int(shape[1])


class _Progress:
    """``evaluated done/total images, R images/s`` on stderr: rewritten in place on a
    terminal; in a log file one line every ``LOG_EVERY_S`` seconds (and the last), so a log
    is not one line of carriage returns."""

    LOG_EVERY_S = 10.0

    def __init__(self, total: int | None):
        self.total, self.start, self.logged = total, time.time(), 0.0
        self.tty = sys.stderr.isatty()

    def update(self, done: int, final: bool = False) -> None:
        """Reports ``done`` images evaluated so far (``final``: the last report)."""
        elapsed = time.time() - self.start
        if not (self.tty or final or elapsed - self.logged >= self.LOG_EVERY_S):
            return
        self.logged = elapsed
        of = f"/{self.total}" if self.total else ""
        line = (f"evaluated {done}{of} images, {done / max(elapsed, 1e-9):.0f} images/s, "
                f"{elapsed:.0f}s")
        end = "\n" if final or not self.tty else ""
        print(("\r" if self.tty else "") + line, end=end, file=sys.stderr, flush=True)


def accuracy(model, dataset: tf.data.Dataset, attack: AttackConfig | None = None,
             implementation: str = "cleverhans", total: int | None = None,
             restarts: int = 1) -> dict:
    """Clean (and, with an attack, adversarial) accuracy and loss over ``dataset``.

    Args:
      model: Keras classifier on [0, 1] images.
      dataset: batches of (images, labels).
      attack: the attack to evaluate under (None or norm ``none``: clean only).
      implementation: ``cleverhans`` (the reference PGD) or ``ours`` (the method's
        registered function, ``attacks.attack_with``).
      total: the number of images in ``dataset``, for the progress line (None: unknown).
      restarts: runs of the attack, each from its own random start; a point counts as
        robust only if every run fails (needs ``attack.random_start`` above 1).

    Returns:
      ``{"examples", "accuracy", "loss"}`` plus ``adversarial_accuracy`` with an attack.
    """
    attacked = attack is not None and attack.norm != "none"
    if attacked and (restarts < 1 or (restarts > 1 and not attack.random_start)):
        raise UserError(f"--restarts must be at least 1, and above 1 only with --random-start "
                        f"(without it every run is the same); got {restarts}.")
    predict = tf.function(lambda x: tf.cast(model(x, training=False), tf.float32))
    adversary = tf.function(_adversary(model, attack, implementation)) if attacked else None
    correct = adv_correct = 0
    loss_sum, count, progress = 0.0, 0, _Progress(total)
    for images, labels in dataset:
        logits = predict(images)
        correct += int(tf.reduce_sum(tf.cast(tf.argmax(logits, 1, output_type=tf.int32) == labels,
                                             tf.int32)))
        loss_sum += float(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=logits)))
        if attacked:
            robust = tf.ones_like(labels, tf.bool)
            for _ in range(restarts):  # the worst case over the runs, per point
                adv_logits = predict(adversary(images, labels))
                robust &= tf.argmax(adv_logits, 1, output_type=tf.int32) == labels
            adv_correct += int(tf.reduce_sum(tf.cast(robust, tf.int32)))
        count += int(labels.shape[0])
        progress.update(count)
    progress.update(count, final=True)
    if count == 0:
        raise UserError("The evaluation set is empty.")
    result = {"examples": count, "accuracy": correct / count, "loss": loss_sum / count}
    if attacked:
        result["adversarial_accuracy"] = adv_correct / count
    return result


def _adversary(model, attack: AttackConfig, implementation: str):
    # Checked here, before tracing: an error raised inside tf.function gains TF's context.
    if implementation == "cleverhans":
        attacks.check_cleverhans(attack)
        return lambda x, y: attacks.cleverhans_pgd(model, x, y, attack)
    if implementation == "ours":
        perturb = attacks.implementation(attack)
        return lambda x, y: perturb(model, x, y, attack)
    raise UserError(f"--attack-impl must be 'cleverhans' or 'ours', got {implementation!r}.")


def evaluate_on_dataset(model, dataset_name: str, data_dir=None, download=True,
                        attack: AttackConfig | None = None, max_examples: int | None = None,
                        batch_size: int = 256, implementation: str = "cleverhans",
                        test_fraction: float = 0.2, seed: int = 0,
                        load_options: dict | None = None, restarts: int = 1,
                        autoattack_state=None) -> dict:
    """Loads the test split of ``dataset_name`` at the model's size and evaluates on it.

    ``max_examples`` takes a fixed stratified subset (seed 0), the same for every model.
    ``load_options``: further ``data.load`` options (e.g. ``config.recorded_load_options``:
    the run's keys, splits and preprocessing); a test fraction there wins over ``test_fraction``.
    ``implementation`` ``autoattack``: AutoAttack's standard version at the attack's norm
    and eps (``autoattack.autoattack_accuracy``; ``autoattack_state`` keeps its finished
    batches for a resume); else PGD with ``restarts`` runs (see ``accuracy``).
    """
    options = {"test_fraction": test_fraction, **(load_options or {})}
    target = data.load(dataset_name, data_dir, download, seed=seed, **options)
    num_outputs = int(model.outputs[0].shape[-1])
    if num_outputs != target.num_classes:
        raise UserError(f"The model has {num_outputs} outputs but {target.name} has "
                        f"{target.num_classes} classes; fine-tune it with `transfer` first.")
    indices = (data.select_subset(target.test.labels, max_examples, 0, "--max-examples")
               if max_examples and max_examples < len(target.test) else None)
    ds = data.pipeline(target.test, indices, model_image_size(model), batch_size, cache=False)
    result = {"dataset": target.name, "split": "test"}
    total = len(indices) if indices is not None else len(target.test)
    if implementation == "autoattack":
        return {**result, **_autoattack(model, ds, attack, total, autoattack_state)}
    result.update(accuracy(model, ds, attack, implementation, total, restarts))
    if attack is not None and attack.norm != "none":
        result.update(attack.describe())
        result["attack_implementation"] = implementation
        if restarts > 1:
            result["restarts"] = restarts
    return result


def _autoattack(model, dataset, attack: AttackConfig | None, total: int, state_file) -> dict:
    """AutoAttack's result row: the threat model, clean and per-attack robust accuracy."""
    from tftransfer.adversarial.autoattack import STANDARD
    from tftransfer.adversarial.autoattack.on_dataset import autoattack_accuracy

    if attack is None or attack.norm == "none":
        raise UserError("AutoAttack needs a threat model: --attack l2 or linf and --eps.")
    row = {"attack": attack.norm, "eps": attack.eps, "attack_method": "autoattack",
           "attacks": ",".join(STANDARD), "attack_implementation": "tftransfer"}
    row.update(autoattack_accuracy(model, dataset, attack.norm, attack.eps, total,
                                   state_file=state_file))
    row["adversarial_accuracy"] = row["robust_accuracy"]
    return row
