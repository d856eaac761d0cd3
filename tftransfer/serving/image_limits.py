"""How many pixels an encoded image declares, read from its header in the graph.

Graph code (it runs inside the ``serving_default`` signature, in TF Serving): reads an
encoded image's width and height from its header (PNG IHDR, JPEG SOF, BMP DIB header, WebP
VP8/VP8L/VP8X, every GIF frame descriptor) so that a decompression bomb is refused before
the decoder allocates its pixels; JPEG XL, whose size cannot be read this cheaply, is
refused. The formats' magic numbers and the limits are ``serving.image_formats`` (no
TensorFlow, for the client); this module imports TensorFlow, so ``serving.export`` imports it
only when it builds the signatures.
"""

from __future__ import annotations

import tensorflow as tf

from tftransfer.serving.image_formats import MAGIC, MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS

# A GIF's size is the union of its frames, found by walking its data sub-blocks (255
# bytes each as encoders write them); this many steps cover a 25 MB GIF, and a file needing
# more is refused after 0.6-1.1 s of walking rather than walked for longer.
MAX_GIF_BLOCKS = 100_000
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


def check_aspect_ratio(height, width, subject: str, subject_values=(),
                       max_ratio: int = MAX_ASPECT_RATIO):
    """An assertion op: an image of ``height`` x ``width`` pixels is at most ``max_ratio``
    times as long as it is wide, or as wide as it is long (see ``MAX_ASPECT_RATIO``).

    Args:
      height, width: int64 scalars.
      subject: the start of the error, naming the image(s): "image {} of the batch is",
        its ``{}`` filled with ``subject_values`` (tensors).
      max_ratio: the limit.

    Returns:
      An op raising InvalidArgumentError when the image is refused; run the resize under a
      control dependency on it.
    """
    short, long = tf.minimum(height, width), tf.maximum(height, width)
    message = tf.strings.format(
        subject + " {}x{} pixels, whose long side is more than " + str(max_ratio) + " times "
        "its short side, the most this model accepts (resizing its short side for the model "
        "would make it too large); crop it nearer to square",
        (*subject_values, width, height))
    return tf.debugging.Assert(long <= max_ratio * short, [message])


def declared_pixels(encoded, header=None, kind=None):
    """The pixels the decoder would allocate for ``encoded``, read from its header.

    Returns:
      ``(pixels, walked)``: an int64 scalar (0 for a format without a size field read
      here) and False only for a GIF too long to walk (``MAX_GIF_BLOCKS``).
    """
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
    if size is not None:
        encoded = tf.strings.substr(encoded, 0, size)  # shorter files: all their bytes
    raw = tf.io.decode_raw(encoded, tf.uint8)
    return tf.concat([raw, tf.zeros([_HEADER_PAD], tf.uint8)], axis=0)


def _byte(header, position):
    """``header[position]`` as int64 (0 past the end)."""
    last = tf.size(header, out_type=tf.int64) - 1
    return tf.cast(tf.gather(header, tf.minimum(tf.cast(position, tf.int64), last)), tf.int64)


def _little_endian(header, position, size: int):
    return tf.add_n([_byte(header, position + k) * 256 ** k for k in range(size)])


def _big_endian(header, position, size: int):
    return tf.add_n([_byte(header, position + k) * 256 ** (size - 1 - k) for k in range(size)])


def _starts_with(header, magic: bytes, position: int = 0):
    expected = tf.constant(list(magic), tf.uint8)
    return tf.reduce_all(tf.equal(header[position:position + len(magic)], expected))


def _image_kind(header):
    """Which decoder ``tf.io.decode_image`` would pick (its magic numbers, see ``MAGIC``)."""
    kinds = {"JPEG": _JPEG, "PNG": _PNG, "GIF": _GIF, "BMP": _BMP, "JPEG XL": _JPEG_XL}
    kind = tf.constant(_UNKNOWN)
    for magic, name in MAGIC:
        kind = tf.where(_starts_with(header, magic), kinds[name], kind)
    webp = tf.logical_and(_starts_with(header, b"RIFF"), _starts_with(header, b"WEBP", 8))
    return tf.where(webp, _WEBP, kind)


def _png_pixels(header):
    # IHDR is the first chunk: width and height, big-endian, at bytes 16 and 20.
    return _big_endian(header, 16, 4) * _big_endian(header, 20, 4)


def _bmp_pixels(header):
    # A 12-byte BITMAPCOREHEADER has 16-bit sizes; the others signed 32-bit ones (a negative
    # height is a top-down bitmap).
    core = tf.equal(_little_endian(header, 14, 4), 12)
    width = tf.where(core, _little_endian(header, 18, 2), _little_endian(header, 18, 4))
    height = tf.where(core, _little_endian(header, 20, 2), _little_endian(header, 22, 4))
    width = tf.where(width >= 2 ** 31, 2 ** 32 - width, width)
    height = tf.where(height >= 2 ** 31, 2 ** 32 - height, height)
    return width * height


def _webp_pixels(header):
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
    size = 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), tf.bitwise.bitwise_and(flags, 7))
    return tf.where(tf.bitwise.bitwise_and(flags, 0x80) != 0, size, tf.constant(0, tf.int64))


def _gif_pixels(encoded):
    """``(pixels, walked)`` of a GIF: the larger of its canvas (the logical screen and every
    frame's extent) and the sum of its frames' areas (giflib keeps every frame), walking
    its blocks; walked is False when ``MAX_GIF_BLOCKS`` ran out first."""
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
    def more(position, budget):
        return tf.logical_and(tf.logical_and(position < length, budget > 0),
                              tf.not_equal(_byte(header, position), 0))

    def step(position, budget):
        return position + _byte(header, position) + 1, budget - 1

    position, budget = tf.while_loop(more, step, (position, budget))
    return position + 1, budget
