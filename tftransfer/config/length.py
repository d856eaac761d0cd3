"""How long a fine-tuning run trains: ``TransferConfig.epochs`` as a number, ``steps`` (at
least N SGD steps), or ``auto``, the default: a step budget that converges on a 100-image
subset and on a full dataset alike, where a fixed number of epochs is 10 SGD steps on the
one and thousands on the other.

Every form is resolved to whole epochs before training (``training_length``), so that the
learning-rate schedule (x0.1 every epochs/3) is defined and ``config.json`` records a number.
No TensorFlow here: the CLI's help shows the constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The value of ``TransferConfig.epochs`` (and ``--epochs``) that asks for the rule below.
EPOCHS_AUTO = "auto"

# The ``auto`` rule: at least AUTO_MIN_STEPS SGD steps and at least AUTO_MIN_EPOCHS epochs,
# at most AUTO_MAX_EPOCHS epochs. The values are measured in results/photo/README.md (the
# default's accuracy against a long, converged run's at N = 100 and at a folder's full size);
# change them there and here together.
# - 500 steps: on a 250-photo folder, 10 epochs were 20 steps and every source scored at
#   chance, while --steps 500 separated a robust source from a natural one.
AUTO_MIN_STEPS = 500
# - 8,000 steps with the head alone: on cached features a step is nearly free (8,000 took
#   about 20 s at N = 100), and at N = 100 (robust source, 3 seeds) 8,000 is within 1 point of
#   32,000 on flowers12, MNIST and Fashion-MNIST, where 500 was 2-6 points short and 2,000
#   1.8 points short on MNIST (results/photo/length/length.md).
AUTO_MIN_STEPS_HEAD_ONLY = 8000
# - 10 epochs (the earlier fixed default) on a large target, where 500 steps are one or two
#   epochs: every image is seen several times and the schedule has three stages.
AUTO_MIN_EPOCHS = 10
# - A bound on the per-epoch work (an evaluation, a checkpoint) when epochs are one step each;
#   with 8,000 head-only steps and one step an epoch it is not reached.
AUTO_MAX_EPOCHS = 8000


@dataclass(frozen=True)
class Length:
    """A resolved training length.

    Attributes:
      epochs: the epochs the run trains.
      kind: how they were asked for: ``auto``, ``steps`` or ``epochs``.
      detail: why that many, in words (``>= 500 steps of batch 64 over 503 images``).
    """

    epochs: int
    kind: str
    detail: str

    @property
    def rule(self) -> str:
        """The result's ``epochs_rule`` column: ``auto: >= 500 steps of batch 64 over 503
        images``."""
        return f"{self.kind}: {self.detail}"

    def describe(self) -> str:
        """The length as a run's first lines say it: ``auto = 63 epochs (>= 500 steps ...)``,
        or ``10 epochs (20 steps ...)`` for epochs given as a number."""
        epochs = f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        if self.kind == "epochs":
            return f"{epochs} ({self.detail})"
        return f"{self.kind} = {epochs} ({self.detail})"


def training_length(epochs: int | str, steps: int | None, images: int,
                    batch_size: int, head_only: bool = False) -> Length:
    """The epochs a run of ``images`` training images in batches of ``batch_size`` trains.

    Args:
      epochs: ``TransferConfig.epochs``: a number, or ``EPOCHS_AUTO``.
      steps: ``TransferConfig.steps``: at least this many SGD steps (it wins over
        ``epochs``), or None.
      images: the run's training images (the selected subset).
      batch_size: the training batch size.
      head_only: whether only the new head trains (``auto`` then takes
        ``AUTO_MIN_STEPS_HEAD_ONLY`` steps).

    Returns:
      The ``Length``: ``ceil(steps / steps per epoch)`` epochs for ``steps``; for ``auto``
      that for ``AUTO_MIN_STEPS``, at least ``AUTO_MIN_EPOCHS`` and at most
      ``AUTO_MAX_EPOCHS``; ``epochs`` itself otherwise.
    """
    per_epoch = math.ceil(images / batch_size)
    over = f"of batch {batch_size} over {images} images"
    if steps is not None:
        return Length(math.ceil(steps / per_epoch), "steps", f">= {steps} steps {over}")
    if epochs != EPOCHS_AUTO:
        return Length(int(epochs), "epochs", f"{int(epochs) * per_epoch} steps {over}")
    budget = AUTO_MIN_STEPS_HEAD_ONLY if head_only else AUTO_MIN_STEPS
    by_steps = math.ceil(budget / per_epoch)
    chosen = min(max(by_steps, AUTO_MIN_EPOCHS), AUTO_MAX_EPOCHS)
    if chosen == by_steps:
        detail = f">= {budget} steps {over}"
    elif chosen == AUTO_MIN_EPOCHS:
        detail = f"at least {AUTO_MIN_EPOCHS} epochs: {chosen * per_epoch} steps {over}"
    else:
        detail = f"at most {AUTO_MAX_EPOCHS} epochs: {chosen * per_epoch} steps {over}"
    return Length(chosen, EPOCHS_AUTO, detail)


# With ``auto`` epochs the default curve (``eval_every`` 1) is thinned to at most this many
# points: at one SGD step an epoch (a 100-image subset), 500 evaluations of a 10,000-image
# test set would cost several times the training.
AUTO_CURVE_POINTS = 20


def auto_eval_every(eval_every: int, length: Length) -> int:
    """``eval_every`` for a run of ``length``: the default 1 under ``auto`` epochs becomes
    ``ceil(epochs / AUTO_CURVE_POINTS)``; any other value (0, or one given with numeric
    epochs or ``--steps``) stays as it is."""
    if length.kind != EPOCHS_AUTO or eval_every != 1:
        return eval_every
    return max(1, math.ceil(length.epochs / AUTO_CURVE_POINTS))


def parse_epochs(text: str) -> int | str:
    """``--epochs`` / ``--set epochs=`` text: ``auto`` or a whole number (argparse type)."""
    if str(text).strip().lower() == EPOCHS_AUTO:
        return EPOCHS_AUTO
    return int(text)
