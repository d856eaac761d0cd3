"""Which features and splits of a TFDS builder are the images, the labels, the training and the
test examples: the builder's own declaration where it has one, the caller's choice otherwise,
and one sentence naming what is available when a choice does not fit."""

from __future__ import annotations

from dataclasses import dataclass

from tftransfer.errors import UserError

_TEST_SPLIT_NAMES = ("test", "validation")


@dataclass(frozen=True)
class Layout:
    """The feature keys and split names a TFDS dataset is read with."""

    image_key: str
    label_key: str
    train_split: str
    test_split: str


def layout(builder, name: str, image_key: str | None = None, label_key: str | None = None,
           train_split: str | None = None, test_split: str | None = None) -> Layout:
    """The ``Layout`` of ``builder``: given keys and splits, checked, or the defaults.

    Keys default to the builder's supervised keys, else to its only image feature and its
    only class-label feature (``dtd`` and ``sun397`` declare no supervised keys). Splits
    default to ``train`` and the first of ``test``, ``validation`` that exists.
    """
    image_key, label_key = feature_keys(builder, name, image_key, label_key)
    train_split, test_split = splits(builder, name, train_split, test_split)
    return Layout(image_key, label_key, train_split, test_split)


def _features_of(builder, kind: str) -> list[str]:
    import tensorflow_datasets as tfds

    cls = {"image": tfds.features.Image, "label": tfds.features.ClassLabel}[kind]
    return [key for key, feature in builder.info.features.items() if isinstance(feature, cls)]


def feature_keys(builder, name: str, image_key: str | None = None,
                 label_key: str | None = None) -> tuple[str, str]:
    """(image key, label key) of ``builder``; see ``layout``."""
    supervised = builder.info.supervised_keys
    declared = (tuple(supervised) if supervised and len(supervised) == 2
                and all(isinstance(k, str) for k in supervised) else (None, None))
    return (_key(builder, name, "image", image_key, declared[0]),
            _key(builder, name, "label", label_key, declared[1]))


def _key(builder, name: str, kind: str, given: str | None, declared: str | None) -> str:
    candidates = _features_of(builder, kind)
    flag = f"--{kind}-key"
    what = "image" if kind == "image" else "class-label (ClassLabel)"
    chosen = given or declared
    if chosen is None:
        if len(candidates) == 1:
            return candidates[0]
        listed = ", ".join(candidates) or "none"
        raise UserError(f"Dataset {name!r} declares no supervised keys and has "
                        f"{len(candidates)} {what} features ({listed}); name the one to use "
                        f"with {flag}.")
    if chosen not in candidates:
        everything = ", ".join(builder.info.features.keys())
        named = f"{flag} {chosen!r}" if given else f"The supervised {kind} key {chosen!r}"
        raise UserError(f"{named} is not {'an' if kind == 'image' else 'a'} {what} feature of "
                        f"{name!r}; its {what} features are {', '.join(candidates) or 'none'} "
                        f"(all features: {everything}); name one with {flag}.")
    return chosen


def splits(builder, name: str, train_split: str | None = None,
           test_split: str | None = None) -> tuple[str, str]:
    """(training split, test split) of ``builder``; see ``layout``."""
    # An empty split list means the metadata is not known in advance (tfds mock data).
    available = list(builder.info.splits) or ["train", "test"]
    if test_split is None:
        test_split = next((s for s in _TEST_SPLIT_NAMES if s in available), None)
        if test_split is None:
            raise UserError(
                f"Dataset {name!r} has no 'test' or 'validation' split (its splits: "
                f"{', '.join(available)}); name one with --test-split, e.g. --train-split "
                f"'train[:80%]' --test-split 'train[80%:]'.")
    train_split = train_split or "train"
    for flag, split in (("--train-split", train_split), ("--test-split", test_split)):
        _check_split(name, flag, split, available)
    if train_split == test_split:
        raise UserError(f"--train-split and --test-split are both {train_split!r}; the test "
                        f"images must not be training images.")
    return train_split, test_split


def _check_split(name: str, flag: str, split: str, available: list[str]) -> None:
    """Every part of a TFDS split expression (``train[:80%]+validation``) must name a split."""
    for part in split.split("+"):
        base = part.split("[")[0].strip()
        if base not in available:
            raise UserError(f"{flag} {split!r}: dataset {name!r} has no split {base!r}; its "
                            f"splits are {', '.join(available)} (slices such as "
                            f"'train[:80%]' work too).")
