"""Reading PyTorch ResNet checkpoints: the file checks, the safe (or trusted) unpickling and the
detection of the layout (robustness library, robust-models-transfer, torchvision).

Three on-disk layouts are read:

* ``robustness``: the MadryLab robustness library's ``.pt`` files, a dict whose
  ``'model'`` (legacy: ``'state_dict'``) entry holds ``module.model.*`` (the
  network), ``module.normalizer.new_mean/new_std`` (the input normalization) and
  a duplicate of both under ``module.attacker.*`` (ignored);
* ``robust-models-transfer``: Salman et al.'s ``.ckpt`` files (same layout);
* ``torchvision``: a plain ResNet state dict (``conv1.weight``, ..., ``fc.bias``).

PyTorch is an optional extra and is imported only inside this module's functions.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tftransfer.convert.tensor_checks import checked_array
from tftransfer.errors import UserError

FORMATS = ("robustness", "robust-models-transfer", "torchvision")
# torch.save's legacy (pre-1.6, non-zip) files start with this pickled magic number.
_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)[:-1]  # drop the STOP opcode
_TORCH_MISSING = ('Converting PyTorch checkpoints needs PyTorch, which is not installed; '
                  'install it with: pip install -e ".[torch]"')
_PICKLE_WARNING = (
    "warning: loading {path} with --trust-pickle: this unpickles the file with full Python "
    "pickle/dill, which can run arbitrary code hidden in it. Only do this for a file from a "
    "source you trust (ideally with a checked sha256).")


class UnsafePickleError(UserError):
    """The safe loader refused a checkpoint holding pickled Python objects.

    Attributes:
      path: the checkpoint file.
      reason: the safe unpickler's reason (e.g. the refused global).
    """

    def __init__(self, message: str, path: Path, reason: str):
        super().__init__(message)
        self.path = path
        self.reason = reason


@dataclass
class Checkpoint:
    """The network weights read from a checkpoint, in PyTorch layout.

    Attributes:
      path: the checkpoint file.
      format: one of ``FORMATS``.
      state: network weights by torchvision key (``conv1.weight``, ...), float32 arrays.
      mean, std: the input normalization stored in the checkpoint, or None.
      metadata: small facts found next to the weights (e.g. ``epoch``).
    """

    path: Path
    format: str
    state: dict
    mean: tuple | None = None
    std: tuple | None = None
    metadata: dict = field(default_factory=dict)


def import_torch():
    """Imports PyTorch, or stops with the install command for the optional extra."""
    try:
        import torch
    except ImportError as error:
        raise UserError(_TORCH_MISSING) from error
    return torch


def file_sha256(path) -> str:
    """The hex sha256 of a file, read in chunks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _looks_like_torch_file(path: Path) -> bool:
    """True for a zip archive (torch.save since 1.6) or a legacy torch.save file."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as handle:
        return handle.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC


def load_checkpoint_object(path, trust_pickle: bool = False):
    """Reads a ``torch.save`` file safely (``weights_only=True``) unless told otherwise.

    The robustness library's older files were pickled with dill and hold objects
    that the safe loader refuses; those need ``trust_pickle=True``, which warns on
    standard error because unpickling can run arbitrary code.

    Args:
      path: the checkpoint file.
      trust_pickle: allow a full (unsafe) unpickling when the safe load is refused.

    Returns:
      The unpickled object (usually a dict).
    """
    torch = import_torch()
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Checkpoint file {str(path)!r} does not exist.")
    if not _looks_like_torch_file(path):
        raise UserError(f"{str(path)!r} is not a PyTorch checkpoint (neither a torch.save zip "
                        f"archive nor a legacy torch.save file; an interrupted download looks "
                        f"like this too).")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not trust_pickle:
            reason = _refusal_reason(error)
            raise UnsafePickleError(
                f"{str(path)!r} cannot be read safely (weights_only=True): it contains pickled "
                f"Python objects ({reason}), as the robustness library's older dill-pickled "
                f"files do, and tftransfer has not checked its sha256 ({file_sha256(path)}) "
                f"against any published value, so pass --trust-pickle only if you trust where "
                f"the file comes from (unpickling can run arbitrary code).", path,
                reason) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise UserError(f"Could not read checkpoint {str(path)!r} (truncated or corrupt?): "
                        f"{_first_line(error)}") from error
    return _load_trusted(torch, path)


def _load_trusted(torch, path: Path):
    """The full-pickle load behind ``--trust-pickle``, announced on standard error."""
    print(_PICKLE_WARNING.format(path=path), file=sys.stderr)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as error:
        # dill-pickled files name dill's own helpers, so unpickling imports dill.
        raise UserError(f"Reading {str(path)!r} needs the Python module {error.name!r}; install "
                        f"it (pip install {error.name}) and retry.") from error
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError,
            AttributeError) as error:
        raise UserError(f"Could not read checkpoint {str(path)!r}: {_first_line(error)}") from error


def _refusal_reason(error: BaseException) -> str:
    """The safe unpickler's one-line reason (e.g. the refused global)."""
    match = re.search(r"WeightsUnpickler error: ([^\n]*?)(?:\. Please|\n|$)", str(error))
    return f"the safe loader says: {match.group(1)}" if match else "the safe loader refused it"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _inner_state_dict(obj, path: Path) -> tuple[Mapping, dict]:
    """The state dict inside a checkpoint object, plus metadata such as the epoch."""
    if not isinstance(obj, Mapping):
        raise UserError(f"{str(path)!r} holds a {type(obj).__name__}, not a state dict or a "
                        f"checkpoint dict with a 'model' or 'state_dict' entry.")
    metadata = {}
    if isinstance(obj.get("epoch"), int):
        metadata["epoch"] = obj["epoch"]
    for entry in ("model", "state_dict"):  # 'state_dict': the robustness library's legacy files
        if isinstance(obj.get(entry), Mapping):
            return obj[entry], metadata
    return obj, metadata


def _strip_data_parallel(state: Mapping) -> dict:
    """Removes the ``module.`` prefix that ``torch.nn.DataParallel`` puts on every key."""
    if state and all(str(key).startswith("module.") for key in state):
        return {key[len("module."):]: value for key, value in state.items()}
    return dict(state)


def _is_robustness_layout(state: Mapping) -> bool:
    return any(key.startswith(("model.", "normalizer.")) for key in state)


def _to_numpy(torch, key: str, value, path: Path) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        raise UserError(f"Checkpoint {str(path)!r}: entry {key!r} is a {type(value).__name__}, "
                        f"not a tensor.")
    return checked_array(key, value, path)  # floating point, finite, variances >= 0


def _split_robustness(torch, state: Mapping, path: Path) -> tuple[dict, tuple, tuple]:
    """Network weights and normalization from a robustness-library state dict."""
    network, normalizer = {}, {}
    for key, value in state.items():
        if key.startswith("attacker."):
            continue  # the attacker holds a second reference to the same network
        if key.startswith("model."):
            network[key[len("model."):]] = value
        elif key in ("normalizer.new_mean", "normalizer.new_std"):
            normalizer[key] = _to_numpy(torch, key, value, path).reshape(-1)
        else:
            raise UserError(f"Checkpoint {str(path)!r} has an unexpected key {key!r}: a "
                            f"robustness-library checkpoint holds only model.*, normalizer.* "
                            f"and attacker.* entries.")
    for key in ("normalizer.new_mean", "normalizer.new_std"):
        if key not in normalizer:
            raise UserError(f"Checkpoint {str(path)!r} is missing the key {key!r} (the input "
                            f"normalization of a robustness-library checkpoint).")
        if normalizer[key].shape != (3,):
            raise UserError(f"Checkpoint {str(path)!r}: {key!r} has {normalizer[key].size} "
                            f"values, expected 3 (one per RGB channel).")
    # str() of a float32 is its shortest round-trip form: 0.4, not 0.4000000059604645.
    return (network, tuple(float(str(v)) for v in normalizer["normalizer.new_mean"]),
            tuple(float(str(v)) for v in normalizer["normalizer.new_std"]))


def read_checkpoint(path, trust_pickle: bool = False) -> Checkpoint:
    """Reads any of the supported checkpoint layouts into a ``Checkpoint``.

    Args:
      path: a robustness ``.pt``, a robust-models-transfer ``.ckpt`` or a torchvision state dict.
      trust_pickle: see ``load_checkpoint_object``.

    Returns:
      The network weights (PyTorch layout, ``num_batches_tracked`` dropped), the
      normalization if the checkpoint has one, and the detected format.
    """
    torch = import_torch()
    path = Path(path)
    inner, metadata = _inner_state_dict(load_checkpoint_object(path, trust_pickle), path)
    state = _strip_data_parallel(inner)
    if _is_robustness_layout(state):
        network, mean, std = _split_robustness(torch, state, path)
        fmt = "robust-models-transfer" if path.suffix == ".ckpt" else "robustness"
    else:
        network, mean, std, fmt = state, None, None, "torchvision"
    arrays = {key: _to_numpy(torch, key, value, path) for key, value in network.items()
              # a BatchNorm step counter, not a weight
              if not key.endswith(".num_batches_tracked")}
    if not arrays:
        raise UserError(f"Checkpoint {str(path)!r} holds no network weights.")
    return Checkpoint(path=path, format=fmt, state=arrays, mean=mean, std=std, metadata=metadata)
