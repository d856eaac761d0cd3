"""SavedModels for TensorFlow Serving: export, start a model server, and a REST/gRPC client.

``export_model`` writes ``BASE/NAME/VERSION/`` (integer versions, the layout TF Serving
watches) with two signatures that share the training-time preprocessing
(``data.to_model_input``):

* ``serving_default``: ``image_bytes`` (tf.string [N], JPEG/PNG/GIF/BMP/WebP bytes)
  -> decoded to RGB in the graph, resized and scaled exactly as in training;
* ``predict_images``: ``images`` (float32 [N, H, W, 3] RGB in [0, 1]) -> resized;

both returning ``probabilities`` [N, C], ``classes`` (top-k indices) [N, k],
``class_names`` (top-k names) [N, k] and ``logits`` [N, C]. The class names are a
constant of the graph, so they travel with the model. ``assets.extra/tftransfer.json``
records where the model came from (source, recipe, test accuracy), the pixel limit of
the signatures and the sha256 of ``saved_model.pb`` (how ``saving.load_model``
recognises the toolkit's own exports).

A server must not let one request exhaust its memory: ``serving_default`` reads each
image's width and height from its header (PNG IHDR, JPEG SOF, BMP DIB header, WebP
VP8/VP8L/VP8X, every GIF frame descriptor) *before* decoding it and refuses one of
more than ``MAX_IMAGE_PIXELS`` pixels, naming its index in the batch; JPEG XL, whose
size cannot be read this cheaply, is refused. Images are decoded one at a time, so a
request's peak memory is that of one image at the limit. An empty batch returns
empty outputs.

The client half (``predict_rest``, ``predict_grpc``, ``model_status``) uses only the
standard library for REST and imports TensorFlow lazily, so ``predict`` starts fast.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tftransfer.errors import UserError
from tftransfer.export_format import (IMAGES_SIGNATURE, METADATA_FILE, SAVED_MODEL_FILE,
                                      SERVING_SIGNATURE, read_metadata, saved_model_sha256)

BYTES_INPUT = "image_bytes"     # the "_bytes" suffix is TF Serving's convention for binary input
IMAGES_INPUT = "images"
OUTPUT_KEYS = ("probabilities", "classes", "class_names", "logits")
DEFAULT_TOP_K = 5
SERVER_BINARY = "tensorflow_model_server"
# The most pixels (width x height) serving_default decodes per image. Decoding and the
# float32 preprocessing cost 15-20 bytes per pixel (measured on 2 cores: a 12000x12000 PNG
# took 2.9 GB and 10-18 s; one of 6324x6324, at this limit, 0.6 GB and 1.3 s), while every
# common camera photo (12 MP phones, 24-36 MP cameras, 8K video frames of 33 MP) still
# fits; the models see at most 224 px anyway, so a client with a larger image loses nothing
# by downscaling it first.
MAX_IMAGE_PIXELS = 40_000_000
# A GIF's size is the union of its frames, found by walking its data sub-blocks (255
# bytes each as encoders write them); this many steps cover a 25 MB GIF, and a file needing
# more is refused after 0.6-1.1 s of walking rather than walked for longer.
MAX_GIF_BLOCKS = 100_000
# Leading bytes of the formats tf.io.decode_image reads (WebP: RIFF....WEBP).
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"),
          (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"\xff\x0a", "JPEG XL"),
          (b"\x00\x00\x00\x0cJXL ", "JPEG XL"))


# ============================================================================= export

def export_model(model_ref, name: str, base="saved_models", version: int | None = None,
                 top_k: int = DEFAULT_TOP_K, max_pixels: int = MAX_IMAGE_PIXELS,
                 trust_saved_model: bool = False) -> dict:
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

    Returns:
      A result row: the export path, version, signatures, class count and metadata.

    Raises:
      UserError: for a bad name, version or top-k, or when the version already exists.
    """
    from tftransfer import hub, saving

    _check_name(name)
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}.")
    if max_pixels < 1:
        raise UserError(f"The pixel limit must be at least 1, got {max_pixels}.")
    model_ref = hub.model_dir(model_ref)
    model = saving.load_model(model_ref, trust_saved_model=trust_saved_model)
    config = saving.read_config(model_ref)
    class_names = _class_names(config, int(model.outputs[0].shape[-1]))
    image_size = int(config.get("image_size") or model.inputs[0].shape[1])
    top_k = min(top_k, len(class_names))
    target = version_dir(Path(base) / name, version)
    metadata = export_metadata(model_ref, config, class_names, image_size, top_k, max_pixels)
    _write_version(build_archive(model, class_names, image_size, top_k, max_pixels), target,
                   metadata)
    print(f"exported {model_ref} -> {target} (signatures {SERVING_SIGNATURE}, "
          f"{IMAGES_SIGNATURE}; {len(class_names)} classes, {image_size}px, top-{top_k})",
          file=sys.stderr)
    return {"export_dir": str(target), "name": name, "version": int(target.name),
            "signatures": [SERVING_SIGNATURE, IMAGES_SIGNATURE],
            "num_classes": len(class_names), "image_size": image_size, "top_k": top_k,
            "max_image_pixels": max_pixels, "test_accuracy": metadata["test_accuracy"],
            "metadata": str(target / METADATA_FILE)}


def _check_name(name: str) -> None:
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
                    max_pixels: int = MAX_IMAGE_PIXELS) -> dict:
    """What ``assets.extra/tftransfer.json`` records: source, recipe, accuracy, signatures
    and their pixel limit (``_write_version`` adds the sha256 of ``saved_model.pb``)."""
    import keras
    import tensorflow as tf

    from tftransfer import runs, saving

    source = {k: v for k, v in config.items() if k.startswith("source")}
    return {
        "model": str(saving.resolve_model_path(model_ref)),
        "kind": config.get("kind"), "arch": config.get("arch"), "dataset": config.get("dataset"),
        "source": source, "recipe": config.get("resolved_config"),
        "test_accuracy": config.get("test_accuracy"),
        "model_git_commit": config.get("git_commit"),
        "class_names": list(class_names), "image_size": image_size, "top_k": top_k,
        "max_image_pixels": max_pixels,
        "signatures": {
            SERVING_SIGNATURE: {"inputs": {BYTES_INPUT: "string [N]: JPEG/PNG/GIF/BMP/WebP "
                                                        f"bytes, at most {max_pixels} pixels "
                                                        "each"},
                                "outputs": list(OUTPUT_KEYS)},
            IMAGES_SIGNATURE: {"inputs": {IMAGES_INPUT: "float32 [N, H, W, 3] RGB in [0, 1]"},
                               "outputs": list(OUTPUT_KEYS)}},
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "export_git_commit": runs.git_commit(),
        "tensorflow_version": tf.__version__, "keras_version": keras.__version__,
    }


def build_archive(model, class_names, image_size: int, top_k: int,
                  max_pixels: int = MAX_IMAGE_PIXELS):
    """A ``keras.export.ExportArchive`` tracking ``model`` with both signatures.

    ExportArchive (rather than a hand-made ``tf.Module``) tracks every Keras variable,
    which the SavedModel loader of TF Serving and ``saved_model_cli`` needs.
    """
    import keras
    import tensorflow as tf

    from tftransfer import data

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
        with tf.control_dependencies([decoded_size]):
            return data.to_model_input(image, image_size)

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
        with tf.control_dependencies([too_big]):
            # Resizing an empty batch fails too; a blank image stands in (see outputs).
            nonempty = tf.cond(shape[0] > 0, lambda: images, lambda: tf.zeros([1, 1, 1, 3]))
        return outputs(data.to_model_input(nonempty, image_size)[:shape[0]])

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SERVING_SIGNATURE, serve_encoded,
                         [tf.TensorSpec((None,), tf.string, name=BYTES_INPUT)])
    archive.add_endpoint(IMAGES_SIGNATURE, serve_images,
                         [tf.TensorSpec((None, None, None, 3), tf.float32, name=IMAGES_INPUT)])
    return archive


# ============================================================================= image sizes
# Graph code (it runs inside the serving signature, in TF Serving): reads an encoded
# image's width and height from its header so that a decompression bomb is refused before
# the decoder allocates its pixels.

_UNKNOWN, _JPEG, _PNG, _GIF, _BMP, _WEBP, _JPEG_XL = range(7)
_HEADER_SIZE = 64  # bytes holding every size field read here, except a GIF's frames
_HEADER_PAD = 32  # zero bytes appended so that header fields past a short file read as 0


def check_encoded_size(encoded, index, max_pixels: int = MAX_IMAGE_PIXELS):
    """An assertion op: ``encoded`` is a format ``serving_default`` decodes and declares at
    most ``max_pixels`` pixels.

    Args:
      encoded: scalar tf.string, the image file's bytes.
      index: its position in the request's batch (named in the error).
      max_pixels: the limit.

    Returns:
      An op raising InvalidArgumentError ("image I of the batch ...") when the image is
      refused; run the decoder under a control dependency on it.
    """
    import tensorflow as tf

    header = _header_bytes(encoded)
    kind = _image_kind(header)
    pixels, walked = declared_pixels(encoded, header, kind)
    problems = [
        (tf.not_equal(kind, _UNKNOWN), "is not an image the model can decode (Unknown image "
                                       "file format; expected JPEG, PNG, GIF, BMP or WebP)"),
        (tf.not_equal(kind, _JPEG_XL), "is JPEG XL, which is refused because its size cannot "
                                       "be checked before decoding; convert it to PNG or JPEG"),
        (walked, f"is a GIF with more than {MAX_GIF_BLOCKS} data blocks, too many to check "
                 f"its size before decoding"),
        (pixels <= max_pixels, f"declares {{}} pixels, more than the {max_pixels} this model "
                               f"accepts (a decompression bomb, or a photo to downscale "
                               f"before sending)"),
    ]
    asserts = []
    for ok, text in problems:
        # The index is formatted in: the client names the file from it.
        values = (index, pixels) if "{}" in text else (index,)
        message = tf.strings.format("image {} of the batch " + text, values)
        asserts.append(tf.debugging.Assert(ok, [message]))
    return tf.group(asserts)


def declared_pixels(encoded, header=None, kind=None):
    """The pixels the decoder would allocate for ``encoded``, read from its header.

    Returns:
      ``(pixels, walked)``: an int64 scalar (0 for a format without a size field read
      here) and False only for a GIF too long to walk (``MAX_GIF_BLOCKS``).
    """
    import tensorflow as tf

    header = _header_bytes(encoded) if header is None else header
    kind = _image_kind(header) if kind is None else kind
    zero = tf.constant(0, tf.int64)

    def jpeg():  # the TF op reads the SOF marker only (libjpeg's jpeg_read_header)
        height_width = tf.cast(tf.image.extract_jpeg_shape(encoded)[:2], tf.int64)
        return height_width[0] * height_width[1], tf.constant(True)

    branches = [lambda: (zero, tf.constant(True)), jpeg,
                lambda: (_png_pixels(header), tf.constant(True)),
                lambda: _gif_pixels(encoded),
                lambda: (_bmp_pixels(header), tf.constant(True)),
                lambda: (_webp_pixels(header), tf.constant(True)),
                lambda: (zero, tf.constant(True))]
    return tf.switch_case(tf.cast(kind, tf.int32), branches)


def _header_bytes(encoded, size: int | None = _HEADER_SIZE):
    """The first ``size`` bytes of the file (all of them for None) as a uint8 vector,
    zero-padded (see ``_HEADER_PAD``)."""
    import tensorflow as tf

    if size is not None:
        encoded = tf.strings.substr(encoded, 0, size)  # shorter files: all their bytes
    raw = tf.io.decode_raw(encoded, tf.uint8)
    return tf.concat([raw, tf.zeros([_HEADER_PAD], tf.uint8)], axis=0)


def _byte(header, position):
    """``header[position]`` as int64 (0 past the end)."""
    import tensorflow as tf

    last = tf.size(header, out_type=tf.int64) - 1
    return tf.cast(tf.gather(header, tf.minimum(tf.cast(position, tf.int64), last)), tf.int64)


def _little_endian(header, position, size: int):
    import tensorflow as tf

    return tf.add_n([_byte(header, position + k) * 256 ** k for k in range(size)])


def _big_endian(header, position, size: int):
    import tensorflow as tf

    return tf.add_n([_byte(header, position + k) * 256 ** (size - 1 - k) for k in range(size)])


def _starts_with(header, magic: bytes, position: int = 0):
    import tensorflow as tf

    expected = tf.constant(list(magic), tf.uint8)
    return tf.reduce_all(tf.equal(header[position:position + len(magic)], expected))


def _image_kind(header):
    """Which decoder ``tf.io.decode_image`` would pick (its magic numbers, see ``_MAGIC``)."""
    import tensorflow as tf

    kinds = {"JPEG": _JPEG, "PNG": _PNG, "GIF": _GIF, "BMP": _BMP, "JPEG XL": _JPEG_XL}
    kind = tf.constant(_UNKNOWN)
    for magic, name in _MAGIC:
        kind = tf.where(_starts_with(header, magic), kinds[name], kind)
    webp = tf.logical_and(_starts_with(header, b"RIFF"), _starts_with(header, b"WEBP", 8))
    return tf.where(webp, _WEBP, kind)


def _png_pixels(header):
    # IHDR is the first chunk: width and height, big-endian, at bytes 16 and 20.
    return _big_endian(header, 16, 4) * _big_endian(header, 20, 4)


def _bmp_pixels(header):
    import tensorflow as tf

    # A 12-byte BITMAPCOREHEADER has 16-bit sizes; the others signed 32-bit ones (a negative
    # height is a top-down bitmap).
    core = tf.equal(_little_endian(header, 14, 4), 12)
    width = tf.where(core, _little_endian(header, 18, 2), _little_endian(header, 18, 4))
    height = tf.where(core, _little_endian(header, 20, 2), _little_endian(header, 22, 4))
    width = tf.where(width >= 2 ** 31, 2 ** 32 - width, width)
    height = tf.where(height >= 2 ** 31, 2 ** 32 - height, height)
    return width * height


def _webp_pixels(header):
    import tensorflow as tf

    chunk = _big_endian(header, 12, 4)
    # VP8 (lossy): 14-bit sizes after the frame tag and start code.
    lossy = (tf.bitwise.bitwise_and(_little_endian(header, 26, 2), 0x3FFF)
             * tf.bitwise.bitwise_and(_little_endian(header, 28, 2), 0x3FFF))
    # VP8L (lossless): 14-bit width-1 and height-1 after the 0x2f signature byte.
    bits = _little_endian(header, 21, 4)
    lossless = ((tf.bitwise.bitwise_and(bits, 0x3FFF) + 1)
                * (tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 14), 0x3FFF) + 1))
    # VP8X (extended, e.g. animations): the 24-bit canvas width-1 and height-1.
    extended = (_little_endian(header, 24, 3) + 1) * (_little_endian(header, 27, 3) + 1)
    return tf.where(tf.equal(chunk, int.from_bytes(b"VP8L", "big")), lossless,
                    tf.where(tf.equal(chunk, int.from_bytes(b"VP8X", "big")), extended, lossy))


def _gif_color_table(flags):
    """Bytes of the colour table a GIF screen or image descriptor's flags announce."""
    import tensorflow as tf

    size = 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), tf.bitwise.bitwise_and(flags, 7))
    return tf.where(tf.bitwise.bitwise_and(flags, 0x80) != 0, size, tf.constant(0, tf.int64))


def _gif_pixels(encoded):
    """``(pixels, walked)`` of a GIF: the larger of its canvas (the logical screen and every
    frame's extent) and the sum of its frames' areas (giflib keeps every frame), walking
    its blocks; walked is False when ``MAX_GIF_BLOCKS`` ran out first."""
    import tensorflow as tf

    header = _header_bytes(encoded, None)  # the frame descriptors are anywhere in the file
    length = tf.cast(tf.strings.length(encoded), tf.int64)

    def more(position, width, height, area, budget, done):
        return tf.logical_and(tf.logical_not(done),
                              tf.logical_and(position < length, budget > 0))

    def block(position, width, height, area, budget, done):
        introducer = _byte(header, position)
        is_frame, is_extension = tf.equal(introducer, 0x2C), tf.equal(introducer, 0x21)
        frame_width = _little_endian(header, position + 5, 2)
        frame_height = _little_endian(header, position + 7, 2)
        width = tf.where(is_frame, tf.maximum(
            width, _little_endian(header, position + 1, 2) + frame_width), width)
        height = tf.where(is_frame, tf.maximum(
            height, _little_endian(header, position + 3, 2) + frame_height), height)
        area = tf.where(is_frame, area + frame_width * frame_height, area)
        # A frame: 10-byte descriptor, local colour table, LZW code size byte, sub-blocks;
        # an extension: introducer, label, sub-blocks; anything else (the trailer) ends it.
        data = tf.where(is_frame, position + 11 + _gif_color_table(_byte(header, position + 9)),
                        position + 2)
        position, budget = _skip_gif_sub_blocks(header, data, length, budget - 1)
        return (position, width, height, area, budget,
                tf.logical_not(tf.logical_or(is_frame, is_extension)))

    start = 13 + _gif_color_table(_byte(header, 10))
    initial = (start, _little_endian(header, 6, 2), _little_endian(header, 8, 2),
               tf.constant(0, tf.int64), tf.constant(MAX_GIF_BLOCKS, tf.int64),
               tf.constant(False))
    position, width, height, area, budget, done = tf.while_loop(more, block, initial)
    walked = tf.logical_or(tf.logical_or(done, position >= length), budget > 0)
    return tf.maximum(width * height, area), walked


def _skip_gif_sub_blocks(header, position, length, budget):
    """The position after the data sub-blocks at ``position`` (a length byte, that many
    bytes, ...; a zero length ends them) and the step budget left."""
    import tensorflow as tf

    def more(position, budget):
        return tf.logical_and(tf.logical_and(position < length, budget > 0),
                              tf.not_equal(_byte(header, position), 0))

    def step(position, budget):
        return position + _byte(header, position) + 1, budget - 1

    position, budget = tf.while_loop(more, step, (position, budget))
    return position + 1, budget


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


# ============================================================================= serve

def check_base(base) -> tuple[Path, list[int]]:
    """The absolute model base path and its versions; UserError unless TF Serving could load it."""
    base = Path(base).resolve()
    if not base.is_dir():
        raise UserError(f"--base {str(base)!r} is not a folder; pass the folder that holds the "
                        f"integer version folders (e.g. saved_models/NAME).")
    versions = [v for v in existing_versions(base) if (base / str(v) / SAVED_MODEL_FILE).exists()]
    if not versions:
        raise UserError(f"--base {str(base)!r} has no version folder (1/, 2/, ...) with a "
                        f"saved_model.pb; export one with `python main.py export`.")
    return base, versions


def server_command(base: Path, name: str, rest_port: int, grpc_port: int) -> list[str]:
    """The ``tensorflow_model_server`` command line for ``base``."""
    return [SERVER_BINARY, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
            f"--model_name={name}", f"--model_base_path={base}"]


def install_instructions(base: Path, name: str, rest_port: int, grpc_port: int) -> str:
    """How to serve ``base`` without a local ``tensorflow_model_server``."""
    return (f"{SERVER_BINARY} is not installed (not on PATH). Serve the model with Docker:\n"
            f"  docker run -p {rest_port}:8501 -p {grpc_port}:8500 "
            f"--mount type=bind,source={base},target=/models/{name} "
            f"-e MODEL_NAME={name} -t tensorflow/serving\n"
            f"or install tensorflow-model-server from TF Serving's apt repository "
            f"(https://www.tensorflow.org/tfx/serving/setup) and run:\n"
            f"  {' '.join(server_command(base, name, rest_port, grpc_port))}")


@dataclass
class ModelServer:
    """A running ``tensorflow_model_server`` (see ``start_model_server``)."""

    process: subprocess.Popen
    status: dict
    log_path: Path

    def available_versions(self) -> list[int]:
        """The versions the server reported AVAILABLE."""
        return [int(v["version"]) for v in self.status.get("model_version_status", [])
                if v.get("state") == "AVAILABLE"]

    def stop(self, grace: float = 10.0) -> int:
        """Terminates the server (kills it after ``grace`` seconds); returns its exit code."""
        _stop(self.process, grace)
        return self.process.returncode


def start_model_server(base, name: str, rest_port: int = 8501, grpc_port: int = 8500,
                       timeout: float = 120.0, log_path=None) -> ModelServer:
    """Starts ``tensorflow_model_server`` on ``base`` and waits until ``name`` is AVAILABLE.

    Args:
      base: the model's folder of integer versions.
      name: the model name clients use in ``/v1/models/NAME``.
      rest_port, grpc_port: ports of the REST and gRPC APIs.
      timeout: seconds to wait for the model to load.
      log_path: where the server's output goes (default: a temporary file).

    Returns:
      The running server, the model status it reported and its log file.

    Raises:
      UserError: when the binary is missing (with instructions), a port is taken, the
        server exits, or the model does not become available in time.
    """
    base, _ = check_base(base)
    _check_name(name)
    if shutil.which(SERVER_BINARY) is None:
        raise UserError(install_instructions(base, name, rest_port, grpc_port))
    for port, flag in ((rest_port, "--rest-port"), (grpc_port, "--grpc-port")):
        if _port_in_use(port):
            raise UserError(f"Port {port} is already in use on this machine; choose another "
                            f"{flag}.")
    log_path = Path(log_path) if log_path else _temp_log(name)
    with open(log_path, "w") as log:
        process = subprocess.Popen(server_command(base, name, rest_port, grpc_port),
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        status = wait_until_available(f"http://127.0.0.1:{rest_port}", name, timeout, process,
                                      log_path)
    except BaseException:
        _stop(process)
        raise
    return ModelServer(process, status, log_path)


def _temp_log(name: str) -> Path:
    import tempfile

    handle, path = tempfile.mkstemp(prefix=f"tf_serving_{name}_", suffix=".log")
    os.close(handle)
    return Path(path)


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop(process: subprocess.Popen, grace: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_available(server: str, name: str, timeout: float, process=None,
                         log_path=None, interval: float = 0.5) -> dict:
    """Polls ``GET /v1/models/NAME`` until a version is AVAILABLE.

    Returns:
      The status JSON of the model.

    Raises:
      UserError: when ``process`` exits first or ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise UserError(f"{SERVER_BINARY} exited with code {process.returncode} before "
                            f"{name!r} was available: {_log_tail(log_path)}")
        try:
            status = model_status(server, name)
            if any(v.get("state") == "AVAILABLE" for v in status.get("model_version_status", [])):
                return status
            last = json.dumps(status)
        except UserError as error:
            last = str(error)
        time.sleep(interval)
    raise UserError(f"Model {name!r} was not AVAILABLE at {server} after {timeout:g}s "
                    f"(last status: {last}); server log: {_log_tail(log_path)}")


def _log_tail(log_path, lines: int = 5) -> str:
    if not log_path or not Path(log_path).exists():
        return "(no log)"
    tail = Path(log_path).read_text(errors="replace").strip().splitlines()[-lines:]
    return " | ".join(tail) or "(empty log)"


# ============================================================================= client

def read_images(paths) -> list[bytes]:
    """Reads image files for ``predict``; UserError for a missing or non-image file."""
    images = []
    for path in paths:
        try:
            encoded = Path(path).read_bytes()
        except OSError as error:
            raise UserError(f"Cannot read image {str(path)!r}: {error.strerror}.") from error
        if image_format(encoded) is None:
            raise UserError(f"{str(path)!r} is not an image the model can decode (expected "
                            f"JPEG, PNG, GIF, BMP, WebP or JPEG XL bytes).")
        images.append(encoded)
    return images


def image_format(encoded: bytes) -> str | None:
    """The image format named by the first bytes of ``encoded`` (None if unknown)."""
    if encoded[:4] == b"RIFF" and encoded[8:12] == b"WEBP":
        return "WebP"
    return next((fmt for magic, fmt in _MAGIC if encoded.startswith(magic)), None)


def rest_url(server: str, name: str, version: int | None = None, verb: str = "") -> str:
    """``SERVER/v1/models/NAME[/versions/N][:verb]``; ``server`` may omit ``http://``."""
    server = server.rstrip("/")
    if "://" not in server:
        server = f"http://{server}"
    path = f"/v1/models/{urllib.parse.quote(name)}"
    if version is not None:
        path += f"/versions/{int(version)}"
    return server + path + (f":{verb}" if verb else "")


def model_status(server: str, name: str, version: int | None = None,
                 timeout: float = 10.0) -> dict:
    """TF Serving's model status (``GET /v1/models/NAME[/versions/N]``)."""
    return _http_json(rest_url(server, name, version), None, name, version, timeout)


def predict_rest(server: str, name: str, images: list[bytes], version: int | None = None,
                 signature: str = SERVING_SIGNATURE, timeout: float = 60.0) -> list[dict]:
    """Classifies encoded images through TF Serving's REST predict API.

    The request uses the row ("instances") format; with one named input each instance
    is the input's value, and binary strings are sent as ``{"b64": ...}``.

    Returns:
      One dict of outputs per image (``probabilities``, ``classes``, ``class_names``, ...).

    Raises:
      UserError: server down, model not loaded, an image it cannot decode, or an answer
        that is not TF Serving's.
    """
    body = {"signature_name": signature,
            "instances": [{"b64": base64.b64encode(image).decode("ascii")} for image in images]}
    answer = _http_json(rest_url(server, name, version, "predict"), body, name, version, timeout)
    predictions = answer.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != len(images):
        raise UserError(f"{server} answered without one prediction per image: "
                        f"{json.dumps(answer)[:200]}")
    return [_check_outputs(p, signature) for p in predictions]


def _check_outputs(prediction, signature: str) -> dict:
    if not isinstance(prediction, dict) or not {"probabilities", "classes",
                                                "class_names"} <= set(prediction):
        raise UserError(f"The {signature!r} signature does not return probabilities, classes "
                        f"and class_names; serve a model exported by `python main.py export`.")
    return prediction


def _http_json(url: str, body, name: str, version, timeout: float) -> dict:
    """GET (``body`` None) or POST JSON to TF Serving; its failures become UserErrors."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        raise _http_error(error, url, name, version) from None
    except urllib.error.URLError as error:
        raise UserError(f"Cannot reach TF Serving at {url} ({_reason(error.reason)}); is the "
                        f"server running? Start it with `python main.py serve --base "
                        f"saved_models/{name}`.") from None
    except (TimeoutError, socket.timeout):
        raise UserError(f"TF Serving at {url} did not answer within {timeout:g}s.") from None
    return _parse_json(raw, url)


def _reason(reason) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    return str(getattr(reason, "strerror", None) or reason)


def _parse_json(raw: bytes, url: str) -> dict:
    try:
        answer = json.loads(raw)
    except ValueError:
        raise UserError(f"{url} did not answer with JSON, so it is probably not TF Serving's "
                        f"REST API: {raw[:120]!r}") from None
    if not isinstance(answer, dict):
        raise UserError(f"{url} answered {raw[:120]!r}, not a JSON object.")
    return answer


def _http_error(error: urllib.error.HTTPError, url: str, name: str, version) -> UserError:
    """A UserError from TF Serving's error answer (``{"error": message}``)."""
    raw = error.read()
    try:
        message = json.loads(raw).get("error", raw.decode(errors="replace"))
    except (ValueError, AttributeError):
        message = raw.decode(errors="replace")[:300]
    which = f"{name!r}" + (f" version {version}" if version is not None else "")
    if error.code == 404:
        return UserError(f"Model {which} is not loaded on the server ({url}: HTTP 404: "
                         f"{message}); check --model/--version against the served models.")
    return _request_error(message, f"{url}: HTTP {error.code}")


# Substrings of TensorFlow's image-decoding errors (the op is DecodeImage / decode_image)
# and of serving_default's own size and format checks ("image I of the batch ...").
_DECODE_ERRORS = ("decode", "image file format", "invalid png", "invalid jpeg", "jpeg::",
                  "of the batch")
_BATCH_INDEX = re.compile(r"\bimage (\d+) of the batch\b")


class ImageRefused(UserError):
    """The server refused an image of the request (undecodable, too large, unknown format).

    Attributes:
      reason: the server's explanation, one line.
      index: the image's position in the batch when the server named it, else None.
    """

    def __init__(self, message: str, reason: str, index: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.index = index


def _request_error(message: str, where: str) -> UserError:
    reason = _first_line(message)
    if any(part in message.lower() for part in _DECODE_ERRORS):
        match = _BATCH_INDEX.search(reason)
        return ImageRefused(f"The server could not decode an image ({where}): {reason}", reason,
                            int(match.group(1)) if match else None)
    return UserError(f"TF Serving rejected the request ({where}): {reason}")


def _first_line(message: str) -> str:
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    # TF errors start with "Graph execution error:"; the useful line comes later.
    useful = [line for line in lines if not line.startswith(("Graph execution error",
                                                             "Detected at node", "<stack"))]
    line = (useful or lines or [""])[0]
    if line.startswith("assertion failed: [") and line.endswith("]"):  # tf.debugging.Assert's
        line = line[len("assertion failed: ["):-1]
    return line[:300]


def predict_files(paths, server: str, name: str, version: int | None = None,
                  timeout: float = 60.0, grpc: bool = False) -> list[dict]:
    """Reads image files and classifies them in one request, naming the file refused.

    TF Serving fails a whole request for one bad image. ``serving_default``'s own checks
    name the image's index in the batch; for a decoder error, which does not, each image
    is sent alone until the one that fails is found (only after a failure).

    Returns:
      One dict of outputs per file, as ``predict_rest``.

    Raises:
      UserError: naming the file and its index for a refused image; as the clients do
        otherwise.
    """
    paths = [str(path) for path in paths]
    images = read_images(paths)
    client = predict_grpc if grpc else predict_rest
    try:
        return client(server, name, images, version=version, timeout=timeout)
    except ImageRefused as error:
        index, reason = error.index, error.reason
        if index is None or not 0 <= index < len(paths):
            index, reason = _first_refused(client, server, name, images, version, timeout,
                                           error)
        raise UserError(f"The server refused {paths[index]!r} (image {index} of the "
                        f"{len(paths)} sent, counting from 0): {reason}") from None


def _first_refused(client, server, name, images, version, timeout, error: ImageRefused):
    """``(index, reason)`` of the first image the server refuses on its own; re-raises
    ``error`` when each image passes alone (the batch as a whole was the problem)."""
    if len(images) == 1:
        return 0, error.reason
    for index, image in enumerate(images):
        try:
            client(server, name, [image], version=version, timeout=timeout)
        except ImageRefused as alone:
            return index, alone.reason
    raise error


def predict_grpc(server: str, name: str, images: list[bytes], version: int | None = None,
                 signature: str = SERVING_SIGNATURE, timeout: float = 60.0) -> list[dict]:
    """Classifies encoded images through TF Serving's gRPC ``PredictionService.Predict``.

    Needs the optional ``tensorflow-serving-api`` stubs (see ``_grpc_modules``).

    Returns:
      One dict of outputs per image, as ``predict_rest``.
    """
    grpc, predict_pb2, service_pb2_grpc, tf = _grpc_modules()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs[BYTES_INPUT].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string,
                                                               shape=[len(images)]))
    target = server.split("://", 1)[-1].rstrip("/")
    with grpc.insecure_channel(target) as channel:
        stub = service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as error:
            raise _grpc_error(error, grpc, target, name, version) from None
    outputs = {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}
    return [_check_outputs(_row(outputs, i), signature) for i in range(len(images))]


def _grpc_modules():
    try:
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError as error:
        raise UserError(f"--grpc needs the TF Serving gRPC stubs ({error.name} is missing): "
                        f"pip install grpcio && pip install --no-deps 'tensorflow-serving-api"
                        f"==2.21.*' (without --no-deps it pulls in the full tensorflow "
                        f"package), or use the REST API (drop --grpc).") from None
    import tensorflow as tf

    return grpc, predict_pb2, prediction_service_pb2_grpc, tf


def _row(outputs: dict, index: int) -> dict:
    row = {}
    for key, values in outputs.items():
        value = values[index].tolist()
        if key == "class_names":
            value = [v.decode() if isinstance(v, bytes) else v for v in value]
        row[key] = value
    return row


def _grpc_error(error, grpc, target: str, name: str, version) -> UserError:
    code, details = error.code(), error.details() or ""
    which = f"{name!r}" + (f" version {version}" if version is not None else "")
    if code == grpc.StatusCode.UNAVAILABLE:
        return UserError(f"Cannot reach TF Serving's gRPC API at {target} ({details}); is the "
                         f"server running with --grpc-port?")
    if code == grpc.StatusCode.NOT_FOUND:
        return UserError(f"Model {which} is not loaded on the server ({target}: {details}).")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return UserError(f"TF Serving at {target} did not answer in time.")
    return _request_error(details, f"{target}: gRPC {code.name}")


def top_k(prediction: dict, k: int | None = None) -> list[dict]:
    """The first ``k`` (default: all exported) classes of one prediction, best first."""
    classes, names = prediction["classes"], prediction["class_names"]
    probabilities = prediction["probabilities"]
    count = len(classes) if k is None else min(k, len(classes))
    return [{"class": int(c), "name": str(n), "probability": float(probabilities[int(c)])}
            for c, n in zip(classes[:count], names[:count])]
