"""SavedModels for TensorFlow Serving: ``export_model`` writes one version of a model.

``export_model`` writes ``BASE/NAME/VERSION/`` (integer versions, the layout TF Serving
watches) with two signatures that share the training-time preprocessing
(``data.to_model_input`` with the run's recorded ``resize`` and ``crop_fraction``):

* ``serving_default``: ``image_bytes`` (tf.string [N], JPEG/PNG/GIF/BMP/WebP bytes)
  -> decoded to RGB in the graph, resized and scaled exactly as in training;
* ``predict_images``: ``images`` (float32 [N, H, W, 3] RGB in [0, 1]) -> each prepared
  as in evaluation (``data.to_model_input``, one image at a time);

both returning ``probabilities`` [N, C], ``classes`` (top-k indices) [N, k],
``class_names`` (top-k names) [N, k] and ``logits`` [N, C]. The class names are a
constant of the graph, so they travel with the model. ``assets.extra/tftransfer.json``
records where the model came from (source, recipe, test accuracy), the pixel limit of
the signatures and the sha256 of ``saved_model.pb`` (how ``saving.load_model``
recognises the toolkit's own exports).

A server must not let one request exhaust its memory: ``serving_default`` refuses an
image whose header declares more than ``MAX_IMAGE_PIXELS`` pixels before decoding it
(``serving.image_limits``), and decodes images one at a time, so a request's peak memory is that
of one image at the limit. Both signatures refuse an image whose long side is more than
``MAX_ASPECT_RATIO`` times its short side before resizing it (resized on its short side, a
thin strip within the pixel limit grew to gigabytes). The metadata records both limits. An
empty batch returns empty outputs.

Serving lives beside this module: ``serving.server`` starts ``tensorflow_model_server`` and
``serving.client`` is the REST/gRPC client.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from tftransfer.config import PREPROCESSING_OPTIONS, recorded_load_options
from tftransfer.errors import UserError
from tftransfer.sources.export_format import (IMAGES_SIGNATURE, METADATA_FILE, SERVING_SIGNATURE,
                                      read_metadata, saved_model_sha256)
from tftransfer.serving.image_formats import MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS

# MAX_IMAGE_PIXELS, MAX_ASPECT_RATIO and read_metadata are re-exported: callers read an
# export's limits and metadata from here.
__all__ = ["BYTES_INPUT", "DEFAULT_TOP_K", "IMAGES_INPUT", "MAX_ASPECT_RATIO",
           "MAX_IMAGE_PIXELS", "OUTPUT_KEYS", "build_archive", "check_name", "existing_versions", "export_metadata",
           "export_model", "read_metadata", "version_dir"]

BYTES_INPUT = "image_bytes"     # the "_bytes" suffix is TF Serving's convention for binary input
IMAGES_INPUT = "images"
OUTPUT_KEYS = ("probabilities", "classes", "class_names", "logits")
DEFAULT_TOP_K = 5


def export_model(model_ref, name: str, base="saved_models", version: int | None = None,
                 top_k: int = DEFAULT_TOP_K, max_pixels: int = MAX_IMAGE_PIXELS,
                 trust_saved_model: bool = False,
                 max_aspect_ratio: int = MAX_ASPECT_RATIO) -> dict:
    """Exports a model as ``base/name/version/`` for TensorFlow Serving.

    Args:
      model_ref: a run or model directory, a ``.keras`` file or a registered source name.
      name: the served model's name (TF Serving's ``MODEL_NAME``).
      base: the folder holding one sub-folder per served model.
      version: integer version; None takes the next free one (1 for a new model).
      top_k: how many top classes ``classes`` / ``class_names`` return.
      max_pixels: the most pixels per image the signatures accept (see
        ``MAX_IMAGE_PIXELS``); recorded in the metadata.
      trust_saved_model: let ``model_ref`` be a SavedModel the toolkit did not write
        (see ``saving.load_model``).
      max_aspect_ratio: the most times an image's long side may exceed its short side
        (see ``MAX_ASPECT_RATIO``); recorded in the metadata.

    Returns:
      A result row: the export path, version, signatures, class count and metadata.

    Raises:
      UserError: for a bad name, version or top-k, or when the version already exists.
    """
    from tftransfer import data
    from tftransfer.sources import hub
    from tftransfer.sources import saving

    check_name(name)
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}.")
    if max_pixels < 1:
        raise UserError(f"The pixel limit must be at least 1, got {max_pixels}.")
    if max_aspect_ratio < 1:
        raise UserError(f"The aspect-ratio limit must be at least 1, got {max_aspect_ratio}.")
    model_ref = hub.model_dir(model_ref)
    model = saving.load_model(model_ref, trust_saved_model=trust_saved_model)
    config = saving.read_config(model_ref)
    class_names = _class_names(config, int(model.outputs[0].shape[-1]))
    image_size = int(config.get("image_size") or model.inputs[0].shape[1])
    # The run's own resize and crop: serving must feed the model as its evaluation did.
    recorded = recorded_load_options(config)
    preprocessing = data.Preprocessing(**{key: recorded[key] for key in PREPROCESSING_OPTIONS
                                          if key in recorded})
    top_k = min(top_k, len(class_names))
    target = version_dir(Path(base) / name, version)
    metadata = export_metadata(model_ref, config, class_names, image_size, top_k, max_pixels,
                               preprocessing, max_aspect_ratio)
    archive = build_archive(model, class_names, image_size, top_k, max_pixels, preprocessing,
                            max_aspect_ratio)
    _write_version(archive, target, metadata)
    print(f"exported {model_ref} -> {target} (signatures {SERVING_SIGNATURE}, "
          f"{IMAGES_SIGNATURE}; {len(class_names)} classes, {image_size}px, top-{top_k})",
          file=sys.stderr)
    return {"export_dir": str(target), "name": name, "version": int(target.name),
            "signatures": [SERVING_SIGNATURE, IMAGES_SIGNATURE],
            "num_classes": len(class_names), "image_size": image_size, "top_k": top_k,
            "max_image_pixels": max_pixels, "max_aspect_ratio": max_aspect_ratio,
            "test_accuracy": metadata["test_accuracy"],
            "metadata": str(target / METADATA_FILE)}


def check_name(name: str) -> None:
    """UserError unless ``name`` can be a served model's name."""
    # The name becomes a folder and a URL path segment (/v1/models/NAME).
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    if not name or name.startswith(".") or not set(name) <= allowed:
        raise UserError(f"Model name {name!r} is not usable in a path and a URL; use letters, "
                        f"digits, '.', '_' and '-' (not starting with '.').")


def _class_names(config: dict, num_classes: int) -> list[str]:
    names = config.get("class_names")
    if not names:
        return [str(i) for i in range(num_classes)]  # e.g. converted checkpoints
    if len(names) != num_classes:
        raise UserError(f"The model has {num_classes} outputs but its config.json lists "
                        f"{len(names)} class names; the model directory is inconsistent.")
    return [str(n) for n in names]


def existing_versions(model_dir) -> list[int]:
    """The integer version folders under ``model_dir`` (what TF Serving would load)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def version_dir(model_dir, version: int | None) -> Path:
    """``model_dir/<version>``: the next free version when None; never an existing one.

    Raises:
      UserError: if ``version`` is not positive or already exists.
    """
    model_dir = Path(model_dir)
    versions = existing_versions(model_dir)
    next_free = (versions[-1] + 1) if versions else 1
    if version is None:
        return model_dir / str(next_free)
    if version < 1:
        raise UserError(f"--version must be a positive integer, got {version}.")
    target = model_dir / str(version)
    if target.exists():
        raise UserError(f"Version {version} already exists at {target}; exporting never "
                        f"overwrites a version. Omit --version to write the next free one "
                        f"({next_free}), or delete that folder first.")
    return target


def export_metadata(model_ref, config: dict, class_names, image_size: int, top_k: int,
                    max_pixels: int = MAX_IMAGE_PIXELS, preprocessing=None,
                    max_aspect_ratio: int = MAX_ASPECT_RATIO) -> dict:
    """What ``assets.extra/tftransfer.json`` records: source, recipe, accuracy, signatures,
    their pixel and aspect-ratio limits and preprocessing (``data.Preprocessing``; None: the default) and, added
    by ``_write_version``, the sha256 of ``saved_model.pb``."""
    import keras
    import tensorflow as tf

    from tftransfer import runs
    from tftransfer.sources import saving

    from tftransfer import data

    source = {k: v for k, v in config.items() if k.startswith("source")}
    preprocessing = preprocessing or data.Preprocessing()
    shape_limit = f", the long side at most {max_aspect_ratio} times the short side"
    return {
        "model": str(saving.resolve_model_path(model_ref)),
        "kind": config.get("kind"), "arch": config.get("arch"), "dataset": config.get("dataset"),
        "source": source, "recipe": config.get("resolved_config"),
        "test_accuracy": config.get("test_accuracy"),
        "model_git_commit": config.get("git_commit"),
        "class_names": list(class_names), "image_size": image_size, "top_k": top_k,
        "max_image_pixels": max_pixels, "max_aspect_ratio": max_aspect_ratio,
        "preprocessing": {"resize": preprocessing.resize,
                          "crop_fraction": preprocessing.crop_fraction,
                          "downsample": preprocessing.downsample},
        "signatures": {
            SERVING_SIGNATURE: {"inputs": {BYTES_INPUT: "string [N]: JPEG/PNG/GIF/BMP/WebP "
                                                        f"bytes, at most {max_pixels} pixels "
                                                        f"each{shape_limit}"},
                                "outputs": list(OUTPUT_KEYS)},
            IMAGES_SIGNATURE: {"inputs": {IMAGES_INPUT: "float32 [N, H, W, 3] RGB in [0, 1], "
                                                        f"H x W at most {max_pixels} pixels"
                                                        f"{shape_limit}"},
                               "outputs": list(OUTPUT_KEYS)}},
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "export_git_commit": runs.git_commit(),
        "tensorflow_version": tf.__version__, "keras_version": keras.__version__,
    }


def build_archive(model, class_names, image_size: int, top_k: int,
                  max_pixels: int = MAX_IMAGE_PIXELS, preprocessing=None,
                  max_aspect_ratio: int = MAX_ASPECT_RATIO):
    """A ``keras.export.ExportArchive`` tracking ``model`` with both signatures, which
    prepare every image with ``preprocessing`` (``data.Preprocessing``; None: the default)
    once it passed the limits (``max_pixels``, ``max_aspect_ratio``).

    ExportArchive (rather than a hand-made ``tf.Module``) tracks every Keras variable,
    which the SavedModel loader of TF Serving and ``saved_model_cli`` needs.
    """
    import keras
    import tensorflow as tf

    from tftransfer import data
    from tftransfer.serving.image_limits import check_aspect_ratio, check_encoded_size

    def outputs(images):
        count = tf.shape(images)[0]
        # The network cannot run on an empty batch (its convolutions fail on 0 images), so
        # it runs on one blank image whose outputs are then dropped.
        images = tf.cond(count > 0, lambda: images,
                         lambda: tf.zeros([1, image_size, image_size, 3], tf.float32))
        logits = tf.cast(model(images, training=False), tf.float32)[:count]
        probabilities = tf.nn.softmax(logits, axis=-1)
        top = tf.math.top_k(probabilities, k=top_k)
        names = tf.constant(list(class_names), dtype=tf.string)
        return {"probabilities": probabilities, "classes": top.indices,
                "class_names": tf.gather(names, top.indices), "logits": logits}

    def decode_one(indexed):
        index, encoded = indexed
        with tf.control_dependencies([check_encoded_size(encoded, index, max_pixels)]):
            # channels=3: grayscale and RGBA become RGB as in training; animations: frame 0.
            image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        # Should a header ever be read differently from the decoder, the float32 copies of
        # the preprocessing (most of the cost) are still never made.
        shape = tf.shape(image, out_type=tf.int64)
        decoded_size = tf.debugging.Assert(shape[0] * shape[1] <= max_pixels, [
            tf.strings.format("image {} of the batch decodes to {}x{} pixels, more than the {} "
                              "this model accepts", (index, shape[1], shape[0], max_pixels))])
        # Checked on the decoded size, which the header's pixel count allows to be decoded:
        # the resize, not the decoding, is what a thin strip makes huge.
        aspect = check_aspect_ratio(shape[0], shape[1], "image {} of the batch is", (index,),
                                    max_aspect_ratio)
        with tf.control_dependencies([decoded_size, aspect]):
            return data.to_model_input(image, image_size, preprocessing)

    def serve_encoded(image_bytes):
        indices = tf.range(tf.shape(image_bytes, out_type=tf.int64)[0])
        # One image at a time (parallel_iterations=1): a request's peak memory is then one
        # image at the pixel limit, not ten of them.
        images = tf.map_fn(decode_one, (indices, image_bytes), parallel_iterations=1,
                           fn_output_signature=tf.TensorSpec((image_size, image_size, 3),
                                                             tf.float32))
        return outputs(images)

    def serve_images(images):
        shape = tf.shape(images, out_type=tf.int64)
        too_big = tf.debugging.Assert(shape[1] * shape[2] <= max_pixels, [tf.strings.format(
            "the images are {}x{} pixels, more than the {} this model accepts; downscale them",
            (shape[2], shape[1], max_pixels))])
        aspect = check_aspect_ratio(shape[1], shape[2], "the images are", (),
                                    max_aspect_ratio)
        with tf.control_dependencies([too_big, aspect]):
            # Resizing an empty batch fails too; a blank image stands in (see outputs).
            nonempty = tf.cond(shape[0] > 0, lambda: images, lambda: tf.zeros([1, 1, 1, 3]))
        # One image at a time: data.to_model_input (the evaluation crop) takes one image.
        prepared = tf.map_fn(lambda image: data.to_model_input(image, image_size, preprocessing),
                             nonempty, fn_output_signature=tf.TensorSpec(
                                 (image_size, image_size, 3), tf.float32))
        return outputs(prepared[:shape[0]])

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SERVING_SIGNATURE, serve_encoded,
                         [tf.TensorSpec((None,), tf.string, name=BYTES_INPUT)])
    archive.add_endpoint(IMAGES_SIGNATURE, serve_images,
                         [tf.TensorSpec((None, None, None, 3), tf.float32, name=IMAGES_INPUT)])
    return archive




def _write_version(archive, target: Path, metadata: dict) -> None:
    """Writes into a hidden temporary folder, then renames it to ``target``: TF Serving
    ignores non-integer folders, so it never loads a half-written version."""
    from tftransfer import runs

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    try:
        archive.write_out(str(tmp), verbose=False)
        metadata = {**metadata, "saved_model_sha256": saved_model_sha256(tmp)}
        runs.write_json(tmp / METADATA_FILE, metadata)
        os.chmod(tmp / METADATA_FILE, 0o644)  # readable by a server running as another user
        try:
            os.rename(tmp, target)
        except OSError as error:  # another export took this version meanwhile
            raise UserError(f"Could not create {target} ({error.strerror}); exporting never "
                            f"overwrites a version.") from error
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)

