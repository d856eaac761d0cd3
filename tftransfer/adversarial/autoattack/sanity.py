"""AutoAttack's sanity flags: signs that a robust accuracy measured by it may not be reliable.

The checks follow the reference's ``flags_doc.md`` (github.com/fra31/auto-attack), written here
for Keras models from its description:

- **randomised outputs**: the same inputs give different logits (or a different number of
  correct points) over repeated calls in inference mode; a randomised defence needs the
  ``rand`` version (expectation over transformation), not ``standard``;
- **probabilities, not logits**: every output row lies in [0, 1] and sums to 1; the
  cross-entropy and DLR losses then act on a squashed output and their gradients vanish;
- **zero gradients**: points whose input gradient of the cross-entropy is exactly zero, which
  gradient-based attacks cannot move (gradient masking, saturated softmax, non-differentiable
  layers);
- **Square beating the white-box attacks**: the black-box Square attack lowers the robust
  accuracy further after APGD and FAB, by more than 0.2 points: the gradients mislead the
  white-box attacks, so the reported robustness is likely overestimated;
- **too few classes** for the targeted attacks' number of targets.

The reference's check for dynamic defences traces PyTorch autograd calls inside the forward
pass and has no TensorFlow counterpart (the reference also skips it for TF models).
Each check returns one warning sentence, or None.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tftransfer.adversarial.autoattack import _common

FLAGS_DOC = "github.com/fra31/auto-attack/blob/master/flags_doc.md"


def randomized_outputs(model, x, y, repeats: int = 5, tolerance: float = 1e-4) -> str | None:
    """Warns when repeated inference-mode calls on ``x`` disagree (a randomised model)."""
    x = tf.constant(x, tf.float32)
    outputs = [_common.logits(model, x) for _ in range(repeats)]
    correct = {int(np.sum(_common.predicted(out).numpy() == y)) for out in outputs}
    unit = [out / (tf.norm(out, axis=1, keepdims=True) + 1e-10) for out in outputs]
    spread = max(float(tf.reduce_max(tf.norm(a - b, axis=1)))
                 for i, a in enumerate(unit) for b in unit[i + 1:])
    if len(correct) > 1 or spread > tolerance:
        return (f"the model's outputs change between {repeats} identical calls (normalised "
                f"difference up to {spread:.2g}): it looks randomised, and AutoAttack's "
                f"standard version is not a reliable evaluation of it (see {FLAGS_DOC}).")
    return None


def probability_outputs(model, x, tolerance: float = 1e-5) -> str | None:
    """Warns when the outputs look like a probability distribution instead of logits."""
    out = _common.logits(model, tf.constant(x, tf.float32))
    sums = tf.reduce_sum(out, axis=-1)
    if (float(tf.reduce_max(out)) < 1 + tolerance and float(tf.reduce_min(out)) > -tolerance
            and bool(tf.reduce_all(tf.abs(sums - 1) < tolerance))):
        return ("the model's outputs are probabilities (each row in [0, 1], summing to 1), not "
                "logits: the attacks' losses flatten and robust accuracy is overestimated; "
                f"evaluate the model without its softmax (see {FLAGS_DOC}).")
    return None


def zero_gradients(model, x, y) -> str | None:
    """Warns about points whose input gradient of the cross-entropy is exactly zero."""
    x = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.keras.losses.sparse_categorical_crossentropy(
            tf.constant(y, tf.int32), _common.logits(model, x), from_logits=True)
    gradient = tape.gradient(loss, x)
    if gradient is None:  # no differentiable path from the input to the loss at all
        gradient = tf.zeros_like(x)
    zero = int(tf.reduce_sum(tf.cast(_common.lp_norm(gradient, "linf") == 0, tf.int32)))
    if zero:
        return (f"{zero} of {len(y)} checked points have a zero input gradient: "
                "gradient-based attacks cannot move them, so the robust accuracy may be "
                f"overestimated (see {FLAGS_DOC}).")
    return None


def square_beats_white_box(accuracy_after: dict, tolerance: float = 0.002) -> str | None:
    """Warns when Square lowered the robust accuracy left by the white-box attacks."""
    if "square" not in accuracy_after or len(accuracy_after) < 2:
        return None
    before = min(value for name, value in accuracy_after.items() if name != "square")
    drop = before - accuracy_after["square"]
    if drop > tolerance:
        return (f"the black-box Square attack lowered the robust accuracy by {drop:.2%} after "
                "the white-box attacks: their gradients may be masked, and the robust accuracy "
                "may be lower still; try more Square queries and restarts or an adaptive "
                f"attack (see {FLAGS_DOC}).")
    return None


def too_few_classes(num_classes: int, attacks, n_targets: int) -> str | None:
    """Warns when the targeted attacks ask for more targets than the model has classes."""
    targeted = [name for name in attacks if name in ("apgd-t", "fab-t")]
    if not targeted:
        return None
    if num_classes <= 3:
        return (f"with {num_classes} classes the targeted DLR loss is undefined; "
                f"{', '.join(targeted)} cannot run as in the standard version.")
    if n_targets > num_classes - 1:
        return (f"{n_targets} target classes were asked of {', '.join(targeted)}, but the "
                f"model has only {num_classes - 1} other classes; it uses those.")
    return None


def model_flags(model, x, y, attacks, n_targets: int) -> list[str]:
    """The checks that look at the model on one batch (run before the attacks)."""
    x, y = _common.as_arrays(x, y)
    checks = [randomized_outputs(model, x, y), probability_outputs(model, x),
              zero_gradients(model, x, y),
              too_few_classes(_common.num_classes(model, x), attacks, n_targets)]
    return [message for message in checks if message]
