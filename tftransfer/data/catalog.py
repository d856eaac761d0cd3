"""The transfer datasets of microsoft/robust-models-transfer (Salman et al. 2020) by their names
there, mapped to TFDS names; the two that TFDS lacks stop with what to do instead."""

from __future__ import annotations

from tftransfer.errors import UserError

# robust-models-transfer's --dataset names -> TFDS names (the same name where TFDS uses it).
TRANSFER_DATASETS = {
    "birds": "caltech_birds2011", "caltech101": "caltech101", "cifar10": "cifar10",
    "cifar100": "cifar100", "dtd": "dtd", "flowers": "oxford_flowers102", "food": "food101",
    "pets": "oxford_iiit_pet", "stanford_cars": "cars196", "SUN397": "sun397",
}
NOT_IN_TFDS = {"aircraft": "FGVC-Aircraft", "caltech256": "Caltech-256"}


def tfds_name(name: str) -> str:
    """The TFDS name of ``name``: itself, or the TFDS name of a robust-models-transfer name."""
    if name in NOT_IN_TFDS:
        raise UserError(f"{name!r} ({NOT_IN_TFDS[name]}) is not in TensorFlow Datasets; download "
                        f"it, arrange it as train/ and test/ folders of class folders, and pass "
                        f"that folder as the target.")
    return TRANSFER_DATASETS.get(name, name)
