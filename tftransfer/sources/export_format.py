"""The on-disk format of the toolkit's SavedModel exports, shared by the exporter (``export``)
and the loader (``saving``): signature names, the metadata file and the graph's checksum.

Kept apart from ``export`` so that ``saving`` can recognise an export without importing the
exporter (which itself loads models through ``saving``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

SERVING_SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "predict_images"
METADATA_FILE = Path("assets.extra") / "tftransfer.json"
SAVED_MODEL_FILE = "saved_model.pb"


def read_metadata(export_dir) -> dict:
    """The ``tftransfer.json`` of an exported version ({} when absent or unreadable)."""
    path = Path(export_dir) / METADATA_FILE
    try:
        metadata = json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or not JSON: not (or no longer) our export
        return {}
    return metadata if isinstance(metadata, dict) else {}


def saved_model_sha256(export_dir) -> str:
    """The sha256 of ``export_dir/saved_model.pb`` (the graph, what a loader would run)."""
    digest = hashlib.sha256()
    with open(Path(export_dir) / SAVED_MODEL_FILE, "rb") as graph:
        for chunk in iter(lambda: graph.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
