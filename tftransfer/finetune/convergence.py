"""Whether a run's training loss was still falling when it ended: the decision behind a
result's "not converged" warning.

Training accuracy says nothing about convergence: a head-only run on hard photos can
settle at 80% training accuracy (a loss of 0.418 that moved to 0.413 over 350 epochs is
converged, not short of training), and a run stopped early can pass 95% while its loss
still drops. So the decision is made on the per-epoch training losses: a straight line fitted
by least squares to the last stretch of them; the run is still falling when that line's
drop over the stretch is larger than a stated tolerance and larger than the noise of the
stretch (the standard error of the fitted drop).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

# The last stretch: this share of the run's epochs, at least MIN_STRETCH of them (a
# shorter run is one stretch). A quarter of the run sees the end of the step schedule's
# last third (lr x0.01) and is long enough for a fitted line to average the noise.
STRETCH_SHARE = 0.25
MIN_STRETCH = 5
# Still falling: the fitted drop over the stretch exceeds this share of the stretch's mean
# loss (1%: a head-only run's 0.418 -> 0.413 over 350 epochs is ~0.3% over its last quarter) ...
RELATIVE_TOLERANCE = 0.01
# ... and this many nats: a loss near zero that halves again gains nothing to train for ...
ABSOLUTE_TOLERANCE = 0.005
# ... and this many standard errors of the drop: a minibatch-noisy stretch with a slope
# that is noise is flat.
NOISE_MULTIPLE = 2.0


@dataclass(frozen=True)
class LossTrend:
    """The last stretch's fitted line and the decision, as ``metrics.json`` records them.

    Attributes:
      stretch_epochs: epochs in the last stretch.
      first_epoch: the stretch's first epoch (1-based).
      mean_loss: the stretch's mean training loss.
      fitted_drop: how much the least-squares line falls from the stretch's first epoch
        to its last (negative when it rises).
      drop_stderr: the standard error of ``fitted_drop`` (0 with fewer than 3 epochs: no
        noise can be told from two points).
      relative_drop: ``fitted_drop / mean_loss``.
      still_falling: the decision (see the module docstring); True for a run of one
        epoch, whose loss cannot show that it has stopped falling.
    """

    stretch_epochs: int
    first_epoch: int
    mean_loss: float
    fitted_drop: float
    drop_stderr: float
    relative_drop: float
    still_falling: bool

    def record(self) -> dict:
        """The trend with the rule's tolerances, for ``metrics.json``."""
        return {**asdict(self), "relative_tolerance": RELATIVE_TOLERANCE,
                "absolute_tolerance": ABSOLUTE_TOLERANCE, "noise_multiple": NOISE_MULTIPLE,
                "stretch_share": STRETCH_SHARE}

    def describe(self) -> str:
        """The reason a still-falling run is warned about, as a clause."""
        if self.stretch_epochs < 2:
            return "one epoch cannot show whether the training loss has stopped falling"
        return (f"the training loss was still falling over the last {self.stretch_epochs} "
                f"epochs (fitted drop {self.fitted_drop:.3g}, {self.relative_drop:.1%} of "
                f"its mean {self.mean_loss:.3g}; tolerance {RELATIVE_TOLERANCE:.0%} and "
                f"{NOISE_MULTIPLE:g} standard errors, {self.drop_stderr:.2g} each)")


def stretch_length(epochs: int) -> int:
    """Epochs in the last stretch of a run of ``epochs`` epochs."""
    return min(epochs, max(MIN_STRETCH, math.ceil(STRETCH_SHARE * epochs)))


def loss_trend(losses) -> LossTrend:
    """The fitted trend of the last stretch of per-epoch training ``losses`` and whether
    the loss was still falling there (the module docstring's rule).

    Args:
      losses: the training loss of every epoch, in order (at least one).
    """
    losses = np.asarray(losses, dtype=np.float64)
    count = stretch_length(len(losses))
    stretch = losses[-count:]
    mean = float(np.mean(stretch))
    if count < 2:
        return LossTrend(count, len(losses), mean, math.nan, math.nan, math.nan, True)
    slope, stderr = _fitted_slope(stretch)
    drop, drop_stderr = -slope * (count - 1), stderr * (count - 1)
    relative = drop / mean if mean > 0 else 0.0
    falling = (drop > max(RELATIVE_TOLERANCE * mean, ABSOLUTE_TOLERANCE)
               and drop > NOISE_MULTIPLE * drop_stderr)
    return LossTrend(count, len(losses) - count + 1, mean, float(drop), float(drop_stderr),
                     float(relative), bool(falling))


def _fitted_slope(values: np.ndarray) -> tuple[float, float]:
    """(slope, its standard error) of the least-squares line through ``values`` over
    0, 1, ...; the error is 0 for two points (no residual to estimate noise from)."""
    x = np.arange(len(values), dtype=np.float64)
    centred = x - x.mean()
    slope = float(np.sum(centred * (values - values.mean())) / np.sum(centred ** 2))
    if len(values) < 3:
        return slope, 0.0
    residuals = values - (values.mean() + slope * centred)
    variance = np.sum(residuals ** 2) / (len(values) - 2)
    return slope, float(math.sqrt(variance / np.sum(centred ** 2)))
