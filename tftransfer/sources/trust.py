"""Whether a SavedModel may be loaded without the user vouching for it.

A SavedModel is a program, not data: loading it runs its graph's ops (its resource
initialisers on load, its signature on every call) with the user's permissions, and
``tf.io.write_file`` or ``ReadFile`` are ops like any other. So ``check_saved_model_trust``
passes, without ``TRUST_FLAG``, only a SavedModel that

1. the toolkit wrote: ``export`` records the sha256 of ``saved_model.pb`` in
   ``assets.extra/tftransfer.json``, and the file still has that sha256 (so the graph is
   the one ``export`` wrote, not one swapped in beside its metadata); and
2. whose every op is pure tensor computation (``SAFE_OPS``: no file, network or process
   access; the checkpoint ops ``SaveV2``/``RestoreV2`` only inside the save and restore
   functions that the SavedModel's ``saver_def`` names and nothing else calls).

Anyone can copy the metadata format, so (1) alone proves nothing about a hostile file;
(2) is what makes loading safe, and (1) keeps every SavedModel from elsewhere behind
the explicit flag. Both are read from the protocol buffer before TensorFlow loads anything.

What the check does not promise: that the graph ends, or stays within a memory budget. A
forged export (metadata copied, its own sha256 recorded) made only of allowed ops can loop
forever (a ``While`` whose condition never turns false) or allocate until memory runs out;
the toolkit's own ``serving_default`` needs ``While`` (one decode per image), so loops
cannot be refused, and a recorded hash of the function library would be forged as easily as
the file's sha256. The check keeps files, network and processes out of reach, not time or
memory: run SavedModels from elsewhere under the usual limits (``timeout``, a container's
memory cap), as for any program.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tftransfer.sources import export_format
from tftransfer.errors import UserError
from tftransfer.sources.export_format import SAVED_MODEL_FILE

TRUST_FLAG = "--trust-saved-model"
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
    reason = untrusted_reason(directory)
    if reason:
        raise UserError(f"Refusing to load the SavedModel {str(directory)!r}: {reason}, and "
                        f"loading a SavedModel runs its graph's ops (which can read and write "
                        f"files) with your permissions; pass {TRUST_FLAG} if you trust where "
                        f"it comes from.")


def untrusted_reason(directory: Path) -> str | None:
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
    for meta_graph in parse_saved_model(saved_model_pb).meta_graphs:
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


def parse_saved_model(saved_model_pb):
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
