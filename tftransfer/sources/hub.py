"""Model references -> model directories: the one place a source *name* becomes a *path*.

A reference is a path (a model directory, a ``.keras`` file, a SavedModel directory) or the
name of a source (one ``tftransfer.sources.registry.Source`` record type for both kinds): a local one,
a model directory in a models folder (``sources.models_dirs``), or a published ImageNet model
(``tftransfer.sources.published``: downloaded and converted into the cache on first use). ``saving``
knows files only; commands that accept names resolve them here first.
"""

from __future__ import annotations

import sys
from pathlib import Path

import keras

from tftransfer.sources import published
from tftransfer.sources import saving
from tftransfer.sources import registry as sources
from tftransfer.errors import UserError
from tftransfer.sources.registry import Source


def catalogue() -> list[Source]:
    """Every source a user can name: the local ones (by name), then the published ones
    (a local source shadows a published one of the same name)."""
    local = sources.local_sources()
    taken = {source.name for source in local}
    return local + [entry for entry in published.REGISTRY.values() if entry.name not in taken]


def names() -> list[str]:
    """The names of ``catalogue()``."""
    return [source.name for source in catalogue()]


def get(name: str) -> Source | None:
    """The source called ``name`` (local first, then published), or None."""
    return sources.get(name) or published.get(name)


def on_disk(source: Source) -> bool:
    """Whether the model is there to load now (local: ``model.keras``; published: converted
    in the cache), i.e. using it needs no training, download or conversion."""
    if source.published:
        return published.is_cached(source)
    return (Path(source.directory) / saving.MODEL_FILE).is_file()


def describe(source: Source) -> dict:
    """One ``sources`` listing row: the record's facts, its clean accuracy as a fraction,
    ``on_disk`` in words (what using it would need first) and, for a published model,
    ``behaviour_check``: ``checked`` or ``unverified`` (``published.behaviour_status``)."""
    ready = on_disk(source)
    if source.published:
        status = "cached" if ready else "no (downloaded on first use)"
    else:
        status = "yes" if ready else "no (not trained yet)"
    check = published.behaviour_status(source) if source.published else None
    return {"name": source.name, "kind": "published" if source.published else "local",
            "arch": source.arch, "dataset": source.dataset, "image_size": source.image_size,
            "attack": source.attack, "eps": source.eps,
            "eps_label": source.eps_label or f"{source.eps:g}",
            "clean_accuracy": source.clean_accuracy, "metrics": source.metrics,
            "available": ready, "on_disk": status,
            "directory": source.directory or str(published.model_dir(source)),
            "description": source.description, "command": source.command,
            "file_name": source.file_name or None, "behaviour_check": check}


def model_dir(reference, progress: bool = True) -> Path:
    """The path behind ``reference``: itself when it exists, else the directory of the source
    of that name (a published one is downloaded and converted once, with ``progress`` on
    stderr)."""
    path = Path(reference)
    if path.exists():
        return path
    source = get(str(reference))
    if source is None:
        raise _unknown(str(reference))
    if source.published:
        return published.ensure_converted(source, progress=progress)
    if not on_disk(source):
        how = f"create it with: {source.command}" if source.command else \
            "it is probably still being trained"
        raise UserError(f"Source {source.name!r} has no {saving.MODEL_FILE} in "
                        f"{source.directory} yet; {how}")
    _say_where(source)
    return Path(source.directory)


_WARNED: set[str] = set()  # local names already warned about in this process
_PATH_SAID: set[str] = set()  # local names whose path this process has already said


def _say_where(source: Source) -> None:
    """Once per name and process, on stderr: a warning naming every models folder that holds
    the name when there are several, and the path a name the package ships (or publishes)
    resolved to when that is not the package's own model."""
    if source.name not in _WARNED:
        _WARNED.add(source.name)
        folders = sources.holders(source.name)
        if len(folders) > 1:
            print(f"warning: source {source.name!r} is in {len(folders)} models folders "
                  f"({', '.join(str(folder) for folder in folders)}); using "
                  f"{source.directory}, the first in the search order", file=sys.stderr)
    if source.name not in _PATH_SAID and _shipped_name(source.name) \
            and not sources.is_shipped(source.directory):
        _PATH_SAID.add(source.name)
        print(f"source {source.name!r}: using the model at {source.directory}, not the "
              f"package's own", file=sys.stderr)


def _shipped_name(name: str) -> bool:
    """Whether the package ships or publishes a model of that name (the default source, a
    model directory in the checkout's ``saved_models/``, a published model)."""
    return (name == sources.DEFAULT_SOURCE or name in published.REGISTRY
            or (sources.CHECKOUT_MODELS / name).is_dir())


def _unknown(reference: str) -> UserError:
    if reference == sources.DEFAULT_SOURCE:
        searched = ", ".join(str(p) for p in sources.models_dirs()) or "no models folder"
        return UserError(f"The default source {reference!r} is not in any models folder "
                         f"(searched: {searched}); {sources.where_to_put(reference)}.")
    return UserError(f"No model at {reference!r} and no source of that name: pass a model "
                     f"directory, a .keras file or a SavedModel directory, or a name that "
                     f"`python main.py sources` lists.")


def load_model(reference, trust_saved_model: bool = False) -> keras.Model:
    """``saving.load_model`` of ``model_dir(reference)``."""
    return saving.load_model(model_dir(reference), trust_saved_model=trust_saved_model)


def read_config(reference) -> dict:
    """``saving.read_config`` of ``model_dir(reference)``."""
    return saving.read_config(model_dir(reference))


# ----------------------------------------------------------------------------- the default source

def default_source(target: str, data_dir: str | None = None, image_size: int | None = None,
                   verbose: bool = True) -> str:
    """The source a run without ``--source`` uses (``sources.default_for``), said on stderr.

    Args:
      target: the TFDS name or image folder.
      data_dir: the TFDS data directory.
      image_size: the ``--image-size`` asked for, which decides instead of the target's own.
      verbose: print which source was chosen and why.

    Returns:
      The source's name.
    """
    try:
        name, reason = sources.default_for(target, image_size or native_image_size(target,
                                                                                   data_dir))
    except LookupError:  # not a dataset we can inspect: its loader stops the run with why
        name, reason = sources.DEFAULT_SOURCE, (f"{target}'s image size cannot be read, so "
                                                f"the shipped 32 px source")
    local = sources.get(name)
    if local is not None and not sources.is_shipped(local.directory):
        reason = reason.replace("the shipped ", f"the model at {local.directory}, not the "
                                                f"shipped ")
        if verbose:  # said here, so model_dir only warns of other folders holding it
            _PATH_SAID.add(name)
    if verbose:
        print(f"source: {name} (no --source given; {reason}; `python main.py sources` lists "
              f"the others)", file=sys.stderr)
    return name


def native_image_size(target: str, data_dir: str | None = None):
    """The longer side of a target's images in pixels: a TFDS dataset's fixed image shape;
    None when they vary; for an image folder, the sizes of a sample of its files spread over
    its classes (``data.image_sizes.SizeSample``, which ``sources.default_for`` reads).

    Raises:
      LookupError: for a name TFDS does not know (or without an image feature), and a folder
        without a readable image; loading the target then says what is wrong.
    """
    folder = Path(target).expanduser()
    if folder.is_dir():
        from tftransfer.data.image_sizes import folder_sample

        sample = folder_sample(folder)
        if sample is None:
            raise LookupError(str(folder))
        return sample
    import tensorflow_datasets as tfds  # only for TFDS targets: it is slow to import

    try:
        builder = tfds.builder(target, data_dir=data_dir)
        image_key = (builder.info.supervised_keys or ("image",))[0]
        shape = builder.info.features[image_key].shape
    except (ValueError, KeyError, AttributeError, TypeError, OSError) as error:
        # an unknown name (DatasetNotFoundError is a ValueError), no such config, no image
        # feature: the data loader says which, in its own sentence
        raise LookupError(target) from error
    return None if None in shape[:2] else max(shape[:2])
