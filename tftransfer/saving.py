"""Where models live on disk and how any of them is loaded back.

A *model directory* (written by ``pretrain``, ``transfer`` and ``convert``) holds
``model.keras`` (the Keras model, RGB [0, 1] input) and ``config.json`` (how it
was made, the class names, the git commit). ``load_model`` also accepts a bare
``.keras`` file and a SavedModel directory: files only (names are ``tftransfer.hub``'s).

A SavedModel is a program, not data: loading it runs its graph's ops (its resource
initialisers on load, its signature on every call) with the user's permissions, and
``tf.io.write_file`` or ``ReadFile`` are ops like any other. So ``load_model`` loads,
without being told to trust it, only a SavedModel that

1. the toolkit wrote: ``export`` records the sha256 of ``saved_model.pb`` in
   ``assets.extra/tftransfer.json``, and the file still has that sha256 (so the graph is
   the one ``export`` wrote, not one swapped in beside its metadata); and
2. whose every op is pure tensor computation (``SAFE_OPS``: no file, network or process
   access; the checkpoint ops ``SaveV2``/``RestoreV2`` only inside the save and restore
   functions that the SavedModel's ``saver_def`` names and nothing else calls).

Anyone can copy the metadata format, so (1) alone proves nothing about a hostile file;
(2) is what makes loading safe, and (1) keeps every SavedModel from elsewhere behind
the explicit ``trust_saved_model`` flag (``--trust-saved-model``). Both are read from
the protocol buffer before TensorFlow loads anything.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import keras

from tftransfer import export_format, runs
from tftransfer.errors import UserError
from tftransfer.resnet import Normalize  # noqa: F401  (registers the custom layer)

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
TRUST_FLAG = "--trust-saved-model"
SAVED_MODEL_FILE = "saved_model.pb"
# Ops of pure tensor computation: the ops the toolkit's exports contain (every ResNet, both
# signatures, the header checks of serving_default) and close relatives a Keras or
# TensorFlow upgrade may emit instead. Nothing here reads or writes files, talks to the
# network or runs Python; an op missing from the list makes a genuine export need the
# trust flag, never the other way round.
SAFE_OPS = frozenset({
    # variables and plumbing
    "AssignVariableOp", "Const", "DisableCopyOnRead", "Identity", "IdentityN", "NoOp",
    "Placeholder", "PlaceholderWithDefault", "ReadVariableOp", "VarHandleOp",
    "VarIsInitializedOp", "StopGradient", "Snapshot",
    # calls and control flow (their functions are checked too)
    "StatefulPartitionedCall", "PartitionedCall", "If", "StatelessIf", "While",
    "StatelessWhile", "Case", "StatelessCase", "Switch", "Merge", "Enter", "Exit",
    "NextIteration", "LoopCond",
    # errors and TensorList (tf.map_fn)
    "Assert", "TensorListFromTensor", "TensorListGetItem", "TensorListReserve",
    "TensorListSetItem", "TensorListStack", "TensorListLength", "TensorListElementShape",
    # arithmetic and comparisons
    "Abs", "Add", "AddN", "AddV2", "BiasAdd", "Cast", "Ceil", "Equal", "Erf", "Exp", "Floor",
    "FloorDiv", "FloorMod", "Greater", "GreaterEqual", "Less", "LessEqual", "Log",
    "LogicalAnd", "LogicalNot", "LogicalOr", "MatMul", "BatchMatMulV2", "Maximum", "Minimum",
    "Mul", "Neg", "NotEqual", "Pow", "RealDiv", "Reciprocal", "Round", "Rsqrt", "Select",
    "SelectV2", "Sigmoid", "Sign", "Sqrt", "Square", "SquaredDifference", "Sub", "Tanh",
    "BitwiseAnd", "BitwiseOr", "LeftShift", "RightShift", "ClipByValue",
    # reductions, shapes and indexing
    "All", "Any", "ArgMax", "ArgMin", "Max", "Mean", "Min", "Prod", "Sum", "BroadcastTo",
    "ConcatV2", "ExpandDims", "Fill", "GatherV2", "Pack", "Pad", "PadV2", "Range", "Rank",
    "Reshape", "Shape", "ShapeN", "Size", "Slice", "Split", "SplitV", "Squeeze",
    "StridedSlice", "Tile", "Transpose", "Unpack", "ZerosLike", "OnesLike", "TopKV2",
    # network layers
    "Conv2D", "DepthwiseConv2dNative", "FusedBatchNormV3", "AvgPool", "MaxPool", "Relu",
    "Relu6", "Elu", "Selu", "Softmax", "LogSoftmax",
    # images and strings (decoding and its header checks in serving_default)
    "DecodeImage", "DecodeRaw", "ExtractJpegShape", "ScaleAndTranslate", "ResizeBilinear",
    "StringFormat", "StringJoin", "StringLength", "Substr",
})
# The checkpoint ops every SavedModel carries in its saver functions (which the loader in
# this process never calls: it restores the variables itself).
SAVER_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename",
                       "StringJoin", "StaticRegexFullMatch"})


def save_model_dir(model: keras.Model, out_dir, config: dict) -> Path:
    """Saves ``model`` and its ``config`` (plus the git commit) into ``out_dir``.

    Returns:
      The path of the written ``model.keras``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    config.setdefault("git_commit", runs.git_commit())
    model_path = out_dir / MODEL_FILE
    tmp_path = out_dir / f".tmp-{MODEL_FILE}"
    model.save(tmp_path)
    tmp_path.replace(model_path)  # atomic: a killed save never leaves a broken model.keras
    runs.write_json(out_dir / CONFIG_FILE, config)
    return model_path


def resolve_model_path(path) -> Path:
    """The ``.keras`` file or SavedModel directory behind a model reference."""
    candidate = Path(path)
    if candidate.is_dir() and (candidate / MODEL_FILE).exists():
        return candidate / MODEL_FILE
    if candidate.is_file() and candidate.suffix in (".keras", ".h5"):
        return candidate
    if candidate.is_dir() and (candidate / SAVED_MODEL_FILE).exists():
        return candidate
    raise UserError(
        f"No model at {str(path)!r}: expected a model directory with {MODEL_FILE}, a .keras "
        f"file or a SavedModel directory.")


def load_model(path, trust_saved_model: bool = False) -> keras.Model:
    """Loads a model reference (see the module docstring) as a ``keras.Model``.

    Args:
      path: a model directory, ``.keras`` file, SavedModel directory or registered name.
      trust_saved_model: load a SavedModel the toolkit did not write (or whose graph has
        ops outside ``SAFE_OPS``); its ops then run with the user's permissions.

    Raises:
      UserError: nothing loadable there, a corrupt file, or an untrusted SavedModel.
    """
    model_path = resolve_model_path(path)
    if model_path.is_dir():
        check_saved_model_trust(model_path, trust_saved_model)
        return _load_saved_model(model_path)
    return _load_keras_file(model_path)


def check_fine_tunable(path) -> None:
    """Refuses a SavedModel where a model is to be fine-tuned (``transfer --source``).

    A SavedModel loads as one opaque layer computing logits: its features, blocks and
    classifier layer are not exposed, so there is no head to replace.

    Raises:
      UserError: naming the Keras model the export was made from, when it records one.
    """
    model_path = resolve_model_path(path)
    if not model_path.is_dir():
        return
    origin = export_format.read_metadata(model_path).get("model")
    hint = (f"use the Keras model it was exported from ({origin})" if origin else
            f"use a model directory or {MODEL_FILE} file instead")
    raise UserError(f"{str(path)!r} is a SavedModel, which serves predictions but cannot be "
                    f"fine-tuned (its layers are not exposed); {hint}.")


def read_config(path) -> dict:
    """The ``config.json`` next to a model reference ({} when there is none); for one of
    the toolkit's SavedModel exports, the facts its metadata records."""
    model_path = resolve_model_path(path)
    if model_path.is_dir():
        return _exported_config(model_path)
    config_path = model_path.parent / CONFIG_FILE
    return runs.read_json(config_path) if config_path.exists() else {}


# ----------------------------------------------------------------------------- .keras files

def _load_keras_file(model_path: Path) -> keras.Model:
    """``keras.models.load_model``, with a corrupt file named as such."""
    try:
        return keras.models.load_model(model_path, compile=False)
    except Exception as error:  # Keras raises many types for a corrupt file
        problem = keras_file_problem(model_path)
        if problem:
            raise UserError(f"The model file {str(model_path)!r} is corrupt ({problem}); "
                            f"re-run the command that wrote it, or restore it from a "
                            f"copy.") from error
        raise UserError(f"Could not load the model in {str(model_path)!r}: {error}") from error


def keras_file_problem(model_path) -> str | None:
    """Why ``model_path`` is not a complete ``.keras`` (zip) or ``.h5`` (HDF5) file, or
    None when its container is intact (so a load failure lies elsewhere).

    Keras reports a zip it cannot open as "File not found", which sends the user looking
    in the wrong place; this reads the container itself.
    """
    model_path = Path(model_path)
    size = model_path.stat().st_size
    if size == 0:
        return "it is empty: 0 bytes"
    if model_path.suffix == ".h5":
        with open(model_path, "rb") as handle:
            intact = handle.read(8) == b"\x89HDF\r\n\x1a\n"
        return None if intact else f"{size} bytes that are not an HDF5 file"
    if not zipfile.is_zipfile(model_path):
        return f"{size} bytes that are not a complete zip archive, as after an interrupted copy"
    try:
        with zipfile.ZipFile(model_path) as archive:
            damaged = archive.testzip()  # reads every member and checks its CRC
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f"its zip archive is damaged: {error}"
    return f"the member {damaged!r} of its zip archive is damaged" if damaged else None


# ----------------------------------------------------------------------------- SavedModels

def check_saved_model_trust(directory, trust: bool = False) -> None:
    """Refuses a SavedModel that may run more than tensor computation (module docstring).

    Args:
      directory: the SavedModel directory.
      trust: skip the checks (the user vouches for the files); a warning is printed.

    Raises:
      UserError: one sentence naming ``TRUST_FLAG`` when the SavedModel is not the
        toolkit's export, was changed since, or has ops outside ``SAFE_OPS``.
    """
    directory = Path(directory)
    if trust:
        print(f"warning: loading the SavedModel {directory} with {TRUST_FLAG}: its graph's ops "
              f"run with your permissions.", file=sys.stderr)
        return
    reason = _untrusted_reason(directory)
    if reason:
        raise UserError(f"Refusing to load the SavedModel {str(directory)!r}: {reason}, and "
                        f"loading a SavedModel runs its graph's ops (which can read and write "
                        f"files) with your permissions; pass {TRUST_FLAG} if you trust where "
                        f"it comes from.")


def _untrusted_reason(directory: Path) -> str | None:
    """Why ``directory`` is not a SavedModel this process may load unasked, or None."""
    metadata = export_format.read_metadata(directory)
    recorded = metadata.get("saved_model_sha256")
    if not metadata:
        return f"it was not written by `tftransfer export` (it has no {export_format.METADATA_FILE})"
    if not recorded:
        return (f"its {export_format.METADATA_FILE} records no sha256 of {SAVED_MODEL_FILE} (exports "
                f"older than this check lack it; export the model again)")
    if export_format.saved_model_sha256(directory) != recorded:
        return (f"its {SAVED_MODEL_FILE} has changed since `tftransfer export` wrote it (its "
                f"sha256 differs from the one in {export_format.METADATA_FILE})")
    unsafe = unsafe_ops(directory / SAVED_MODEL_FILE)
    if unsafe:
        return f"its graph uses ops outside tftransfer's list of pure computations ({unsafe})"
    return None


def unsafe_ops(saved_model_pb) -> str:
    """The ops of a ``saved_model.pb`` outside ``SAFE_OPS`` ('' when there are none).

    Checkpoint ops (``SAVER_OPS``) are allowed only inside the save/restore functions that
    the ``saver_def`` names, and only if nothing else calls those functions.

    Returns:
      A short description of the offending ops (sorted, with the functions holding them).
    """
    found: dict[str, set] = {}
    for meta_graph in _parse_saved_model(saved_model_pb).meta_graphs:
        for op, where in _graph_violations(meta_graph):
            found.setdefault(op, set()).add(where)
    return "; ".join(f"{op} in {', '.join(sorted(where))}" for op, where in sorted(found.items()))


def _graph_violations(meta_graph):
    """``(op, where)`` for every op of ``meta_graph`` that ``unsafe_ops`` rejects."""
    library = {function.signature.name: function
               for function in meta_graph.graph_def.library.function}
    saver_nodes, saver_functions = _saver_parts(meta_graph)
    for node in meta_graph.graph_def.node:
        yield from _node_violations(node, "the main graph", library, saver_functions,
                                    node.name in saver_nodes)
    for name, function in library.items():
        for node in function.node_def:
            yield from _node_violations(node, name, library, saver_functions,
                                        name in saver_functions)


def _node_violations(node, where: str, library: dict, saver_functions: set, in_saver: bool):
    called = _called_functions(node, library)
    if node.op not in library and node.op not in SAFE_OPS and not (in_saver and
                                                                    node.op in SAVER_OPS):
        yield node.op, where
    if not in_saver and called & saver_functions:
        yield "a call of the checkpoint writer", where


def _called_functions(node, library) -> set:
    """The library functions ``node`` calls (as its op, or through function attributes)."""
    called = {node.op} if node.op in library else set()
    for value in node.attr.values():
        if value.HasField("func"):
            called.add(value.func.name)
        if value.HasField("list"):
            called.update(func.name for func in value.list.func)
    return called & set(library)


def _saver_parts(meta_graph) -> tuple[set, set]:
    """Names of the main-graph nodes that run the saver_def's save/restore, and of the
    functions they call."""
    saver = meta_graph.saver_def
    names = {saver.restore_op_name.split(":")[0], saver.save_tensor_name.split(":")[0]} - {""}
    library = {function.signature.name for function in meta_graph.graph_def.library.function}
    functions = set()
    for node in meta_graph.graph_def.node:
        if node.name in names:
            functions |= _called_functions(node, library)
    return names, functions


def _load_saved_model(directory: Path) -> keras.Model:
    """Wraps a SavedModel's float-image signature as a Keras model (inference only).

    The toolkit's exports are read through ``predict_images`` (their ``serving_default``
    takes encoded bytes) at the image size their metadata records, returning ``logits``.
    """
    metadata = export_format.read_metadata(directory)
    name, shape = _float_image_signature(directory, metadata)
    size = metadata.get("image_size") or shape[1]
    if not size or (shape[1] and shape[2] and shape[1] != shape[2]):
        raise UserError(f"The SavedModel {str(directory)!r} takes images of shape {shape}; "
                        f"tftransfer needs square images of a fixed size.")
    try:
        layer = keras.layers.TFSMLayer(str(directory), call_endpoint=name)
    except Exception as error:  # TensorFlow raises many types for a broken SavedModel
        raise UserError(f"Could not load the SavedModel {str(directory)!r}: "
                        f"{str(error).strip().splitlines()[0]}") from error
    inputs = keras.Input((int(size), int(size), 3), dtype="float32")
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        outputs = _logits(outputs, directory)
    return SavedModelView(inputs, outputs, directory)


class SavedModelView(keras.Model):
    """A SavedModel's float-image signature as a Keras model: predictions and gradients.

    Its one layer is the opaque graph, so there is no architecture to rebuild, resize or
    fine-tune; ``get_config`` (which every such use starts with) says so in one sentence.
    """

    def __init__(self, inputs, outputs, directory, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.directory = Path(directory)

    def get_config(self):
        check_fine_tunable(self.directory)  # raises: a SavedModel has no layers to rebuild
        return super().get_config()


def _float_image_signature(directory: Path, metadata: dict) -> tuple[str, tuple]:
    """The name and input shape of the signature taking one float32 [N, H, W, 3] tensor,
    read from ``saved_model.pb`` (``predict_images`` for the toolkit's exports)."""
    from tensorflow.core.framework import types_pb2

    signatures = _parse_saved_model(directory / SAVED_MODEL_FILE).meta_graphs[0].signature_def
    preferred = [export_format.IMAGES_SIGNATURE] if metadata else ["serving_default"]
    for name in preferred + sorted(set(signatures) - set(preferred)):
        inputs = list(signatures[name].inputs.values()) if name in signatures else []
        if len(inputs) != 1 or inputs[0].dtype != types_pb2.DT_FLOAT:
            continue
        dims = inputs[0].tensor_shape
        shape = tuple(None if d.size < 0 else d.size for d in dims.dim)
        if not dims.unknown_rank and len(shape) == 4 and shape[-1] == 3:
            return name, shape
    raise UserError(f"The SavedModel {str(directory)!r} has no signature taking one float32 "
                    f"[N, H, W, 3] image tensor (signatures: {', '.join(signatures) or 'none'}); "
                    f"tftransfer models take RGB images in [0, 1].")


def _parse_saved_model(saved_model_pb):
    """The ``SavedModel`` protocol buffer of a ``saved_model.pb`` (nothing is loaded)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(Path(saved_model_pb).read_bytes())
    except Exception as error:  # protobuf's DecodeError, or an unreadable file
        raise UserError(f"{str(saved_model_pb)!r} is not a readable SavedModel graph "
                        f"({error}); export the model again.") from error
    if not proto.meta_graphs:
        raise UserError(f"{str(saved_model_pb)!r} holds no graph; export the model again.")
    return proto


def _logits(outputs: dict, directory: Path):
    if "logits" in outputs:
        return outputs["logits"]
    if len(outputs) == 1:
        return next(iter(outputs.values()))
    raise UserError(f"The SavedModel {str(directory)!r} returns {', '.join(sorted(outputs))}; "
                    f"tftransfer needs one output of logits (or an output named 'logits').")


def _exported_config(directory: Path) -> dict:
    """The ``config.json`` facts an export's metadata records (class names, image size,
    source, recipe, accuracy); {} for a SavedModel from elsewhere."""
    metadata = export_format.read_metadata(directory)
    if not metadata:
        return {}
    config = {key: metadata[key] for key in ("kind", "arch", "dataset", "class_names",
                                             "image_size", "test_accuracy") if key in metadata}
    config.update(metadata.get("source") or {})
    if metadata.get("recipe") is not None:
        config["resolved_config"] = metadata["recipe"]
    if metadata.get("model_git_commit"):
        config["git_commit"] = metadata["model_git_commit"]
    return config
