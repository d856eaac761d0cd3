"""What a checkpoint's tensor must be to be converted, checked as it is read: floating
point, finite, and for a BatchNorm running variance not negative.

Before these checks an int64 tensor was cast to float32 without a word, and an infinite
weight or a negative running variance passed the shape checks to surface only as "the
converted model disagrees with PyTorch", naming no tensor (both sides computed NaN or
inf). PyTorch is an optional extra: only the tensor's own methods are used here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tftransfer.errors import UserError

# Keys whose values are a variance (BatchNorm's running_var) or a standard deviation (the
# robustness library's input normalizer): the model divides by their square root or by them.
_VARIANCE_SUFFIX = ".running_var"
_STD_KEY = "normalizer.new_std"


def checked_array(key: str, tensor, path: Path) -> np.ndarray:
    """``tensor`` (a ``torch.Tensor`` of entry ``key``) as a float32 array, once it passed
    the checks of this module.

    Raises:
      UserError: one sentence naming the file, the tensor and its problem.
    """
    if not tensor.is_floating_point():
        raise _refused(path, key, f"holds {_dtype(tensor)} values, not floating point ones "
                                  f"(converting them would change them silently)")
    tensor = tensor.detach().cpu()
    bad = ~tensor.isfinite()
    if bool(bad.any()):
        first = bad.nonzero()[0].tolist()
        raise _refused(path, key, f"holds {int(bad.sum())} NaN or infinite value(s) (the "
                                  f"first at index {first}: {tensor[tuple(first)].item()})")
    array = tensor.float().numpy()
    if not np.isfinite(array).all():
        raise _refused(path, key, f"holds values beyond float32's range (up to "
                                  f"{tensor.abs().max().item():g}), which would become "
                                  f"infinite")
    _check_scale(key, array, path)
    return array


def _check_scale(key: str, array: np.ndarray, path: Path) -> None:
    """A running variance must be >= 0 and an input std > 0: the model takes their square
    root or divides by them."""
    if key.endswith(_VARIANCE_SUFFIX) and (array < 0).any():
        raise _refused(path, key, f"holds {int((array < 0).sum())} negative running "
                                  f"variance(s) (the smallest {array.min():g}), which no "
                                  f"variance can be")
    if key == _STD_KEY and (array <= 0).any():
        raise _refused(path, key, f"holds a standard deviation of {array.min():g}, which the "
                                  f"input normalization cannot divide by")


def _dtype(tensor) -> str:
    return str(tensor.dtype).replace("torch.", "")


def _refused(path: Path, key: str, problem: str) -> UserError:
    return UserError(f"Checkpoint {str(path)!r}: tensor {key!r} {problem}; it cannot be "
                     f"converted.")
