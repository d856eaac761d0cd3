"""The image formats an exported model decodes, told from a file's first bytes, and the
limits on an image's size that its signatures enforce.

Plain Python, no TensorFlow: the client checks a file before sending it, and the CLI reads
the limits, without TensorFlow's start-up. The graph checks that read the sizes from the
headers inside ``serving_default`` are ``serving.image_limits``.
"""

from __future__ import annotations

# The most pixels (width x height) serving_default decodes per image. Decoding and the
# float32 preprocessing cost 15-20 bytes per pixel (measured on 2 cores: a 12000x12000 PNG
# took 2.9 GB and 10-18 s; one of 6324x6324, at this limit, 0.6 GB and 1.3 s), while every
# common camera photo (12 MP phones, 24-36 MP cameras, 8K video frames of 33 MP) still
# fits; the models see at most 224 px anyway, so a client with a larger image loses nothing
# by downscaling it first.
MAX_IMAGE_PIXELS = 40_000_000
# The most times an image's long side may exceed its short side. The pixel limit alone did
# not bound the preprocessing: it resizes the short side to about the model's input size
# before cropping the centre, so a 2,500,000 x 16 image (40 MP, within the limit) became
# 32 x 5,000,000 x 3 float32 for a 32 px model (over 4 GB and 13 s for one image). At this
# ratio a 224 px model's resized image (256 x 25,600) is 79 MB of floats, less than the
# decoded image's own budget, while panoramas (up to about 10:1) still pass.
MAX_ASPECT_RATIO = 100
# Leading bytes of the formats tf.io.decode_image reads (WebP: RIFF....WEBP).
MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"),
         (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"\xff\x0a", "JPEG XL"),
         (b"\x00\x00\x00\x0cJXL ", "JPEG XL"))


def image_format(encoded: bytes) -> str | None:
    """The image format named by the first bytes of ``encoded`` (None if unknown)."""
    if encoded[:4] == b"RIFF" and encoded[8:12] == b"WEBP":
        return "WebP"
    return next((fmt for magic, fmt in MAGIC if encoded.startswith(magic)), None)
