"""The paper's fixed per-dataset normalisation constants (``--normalization target``)."""

from __future__ import annotations

from tftransfer.errors import UserError

# Per-dataset (mean, std) of the paper's code (tools/custom_datasets.py name_to_dataset), used
# by ``--normalization target``. Its Fashion-MNIST and KMNIST entries are a placeholder there (its
# comment says the Fashion-MNIST values were still to be computed; the training split's own are
# 0.2860 / 0.3530, measured on ../shared/tfds): they are kept, since they are what the paper ran.
_IMAGENET_STATISTICS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_CIFAR_STATISTICS = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
TARGET_STATISTICS = {
    "mnist": ((0.1307,) * 3, (0.3081,) * 3),
    "fashion_mnist": ((0.1801,) * 3, (0.3421,) * 3),
    "kmnist": ((0.1801,) * 3, (0.3421,) * 3),
    "cifar10": _CIFAR_STATISTICS,
    "cifar100": _CIFAR_STATISTICS,
    "svhn_cropped": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "food101": ((0.5493, 0.4450, 0.3435), (0.2730, 0.2759, 0.2800)),
    "caltech101": _IMAGENET_STATISTICS,
}


def target_statistics(name: str) -> tuple[tuple, tuple]:
    """The paper's fixed (mean, std) for the TFDS dataset ``name`` (``TARGET_STATISTICS``)."""
    base = name.split(":")[0].split("/")[0]
    if base not in TARGET_STATISTICS:
        raise UserError(f"No recorded normalisation statistics for {name!r} (known: "
                        f"{', '.join(sorted(TARGET_STATISTICS))}); use --normalization subset "
                        f"(computed from the training images) or source.")
    return TARGET_STATISTICS[base]
