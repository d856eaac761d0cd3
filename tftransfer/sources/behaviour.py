"""A behavioural check of a converted ImageNet classifier: does it recognise real photos?

A checksum proves a file is the one its authors released only where they published one (the
MadryLab ``robustness`` files have none), and a random ResNet-50 converts as cleanly as a
trained one. So every published ImageNet source must also recognise three photos whose class is
known and that ship inside scikit-image (``skimage.data``, no download): for each photo, one
class of its group below must be among the model's top 5. A random model passes with a
probability of about 0.035 x 0.03 x 0.015 (5 of 1000 classes drawn per photo), far below
1 in 10,000; a trained ImageNet model has all three objects in its 1000 classes.

The groups are ImageNet-1k indices in the usual (torchvision, sorted WordNet id) order; each
holds the photo's own class and the classes a coarser, adversarially trained model may give
the same object, so that a model with ImageNet top-1 of 45-76% (the published range) passes:

* ``chelsea`` (a tabby cat's face): the five domestic cats 281-285 (tabby, tiger cat, Persian,
  Siamese, Egyptian cat) and the small wild cats cougar 286 and lynx 287.
* ``coffee`` (an espresso in a cup on a saucer): espresso 967, cup 968, coffee mug 504,
  coffeepot 505 and the cup-shaped drinks eggnog 969 and consomme 925.
* ``rocket`` (a rocket on its launch pad): missile 657, projectile 744, space shuttle 812.

The photos are cropped as ImageNet evaluation crops (the central 87.5% of the shorter side)
and resized to the model's input size, in the [0, 1] RGB input every model here takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOP_K = 5
IMAGENET_CLASSES = 1000
# The flag that converts a model although it fails (commands name it in their help and errors).
SKIP_FLAG = "--skip-behaviour-check"
# ImageNet evaluation's crop: 224 px out of the shorter side resized to 256.
_CROP_FRACTION = 224 / 256
_DEFAULT_SIZE = 224
# What ``status`` says of a model: it passed, or nothing (yet) shows it did.
CHECKED, UNVERIFIED = "checked", "unverified"


@dataclass(frozen=True)
class Photo:
    """One photo of ``skimage.data`` (``name`` is its function) and the ImageNet classes
    (index -> name) of which one must be in a model's top 5."""

    name: str
    shows: str
    classes: dict


PHOTOS = (
    Photo("chelsea", "a tabby cat", {281: "tabby", 282: "tiger cat", 283: "Persian cat",
                                     284: "Siamese cat", 285: "Egyptian cat", 286: "cougar",
                                     287: "lynx"}),
    Photo("coffee", "a cup of coffee", {967: "espresso", 968: "cup", 504: "coffee mug",
                                        505: "coffeepot", 969: "eggnog", 925: "consomme"}),
    Photo("rocket", "a rocket", {657: "missile", 744: "projectile", 812: "space shuttle"}),
)


def crop(pixels: np.ndarray, size: int, fraction: float = _CROP_FRACTION,
         offset: tuple = (0.5, 0.5)) -> np.ndarray:
    """A square crop of ``pixels`` (uint8 [H, W, 3]) resized to ``size``, as float32 in [0, 1].

    Args:
      pixels: the photo.
      size: output height and width.
      fraction: the crop's side as a fraction of the photo's shorter side.
      offset: where the crop sits, (0, 0) top left to (1, 1) bottom right; (0.5, 0.5) centres it.
    """
    from PIL import Image  # pillow ships with keras' dependencies

    height, width = pixels.shape[:2]
    side = max(1, int(round(min(height, width) * fraction)))
    top = int(round((height - side) * offset[0]))
    left = int(round((width - side) * offset[1]))
    square = Image.fromarray(pixels[top:top + side, left:left + side])
    # PIL's bilinear resize filters over the whole footprint when shrinking (no aliasing).
    resized = square.resize((size, size), Image.BILINEAR)
    return np.asarray(resized, np.float32) / 255.0


def photo_pixels(photo: Photo) -> np.ndarray:
    """The uint8 RGB pixels of ``photo``, as scikit-image ships them."""
    from skimage import data as skimage_data  # only here: it is slow to import

    return getattr(skimage_data, photo.name)()


def photos(size: int) -> np.ndarray:
    """The check's input: every photo of ``PHOTOS``, centre-cropped, shape [3, size, size, 3]."""
    return np.stack([crop(photo_pixels(photo), size) for photo in PHOTOS])


def input_size(model) -> int:
    """The model's square input size (224 when it accepts any)."""
    size = model.input_shape[1]
    return int(size) if size else _DEFAULT_SIZE


def run(model) -> dict:
    """Runs the check on a Keras classifier taking [0, 1] RGB images.

    Returns:
      The record for ``config.json``: ``status`` (``passed`` or ``failed``), ``top_k``, and
      for each photo its top classes, its group and whether they meet; a model without 1000
      outputs fails with a ``reason`` and no predictions.
    """
    classes = int(model.output_shape[-1])
    if classes != IMAGENET_CLASSES:
        return {"status": "failed", "top_k": TOP_K,
                "reason": f"it has {classes} classes, not ImageNet's {IMAGENET_CLASSES}"}
    logits = np.asarray(model(photos(input_size(model)), training=False), np.float32)
    top = np.argsort(-logits, axis=1)[:, :TOP_K]
    results = {}
    for photo, predicted in zip(PHOTOS, top.tolist()):
        results[photo.name] = {"shows": photo.shows, "top": predicted,
                               "expected": sorted(photo.classes),
                               "hit": bool(set(predicted) & set(photo.classes))}
    passed = all(result["hit"] for result in results.values())
    return {"status": "passed" if passed else "failed", "top_k": TOP_K, "photos": results}


def failure_clause(record: dict) -> str:
    """What a failed ``record`` found, as a clause without a full stop (for one sentence)."""
    if record.get("reason"):
        return record["reason"]
    misses = [f"{name} ({result['shows']}: top {record['top_k']} "
              f"{', '.join(str(c) for c in result['top'])}, none of "
              f"{', '.join(str(c) for c in result['expected'])})"
              for name, result in record["photos"].items() if not result["hit"]]
    listed = misses[0] if len(misses) == 1 else f"{', '.join(misses[:-1])} and {misses[-1]}"
    return f"it does not recognise the scikit-image photo{'s' if len(misses) > 1 else ''} {listed}"


def status(config: dict) -> str:
    """``checked`` when a converted model's ``config.json`` records a passed check, else
    ``unverified`` (failed and converted with ``SKIP_FLAG``, or converted before the check)."""
    record = config.get("behaviour_check") or {}
    return CHECKED if record.get("status") == "passed" else UNVERIFIED
