"""PyTorch checkpoints -> Keras models: reading, mapping weights by name, and verifying the
converted logits against PyTorch.

    from tftransfer import convert
    converted = convert.convert("resnet50_l2_eps3.ckpt", arch="resnet50")

This face is the one import path of the names below (PyTorch, an optional extra, is imported
only inside functions): ``checkpoint`` (``convert``), ``reading`` (file checks, safe
unpickling, layout detection), ``tensor_checks`` (each tensor floating point and finite, a
running variance not negative), ``weight_mapping`` (name-by-name assignment with shape checks)
and ``verify`` (logits against PyTorch).
"""

from tftransfer.convert.checkpoint import Converted, convert, model_config, report_phase
from tftransfer.convert.reading import (FORMATS, Checkpoint, UnsafePickleError, file_sha256,
                                        import_torch, load_checkpoint_object, read_checkpoint)
from tftransfer.convert.verify import BN_EPSILON, reference_logits, verify
from tftransfer.convert.weight_mapping import (ARCHITECTURES, IMAGENET_IMAGE_SIZE,
                                               assign_weights, build_keras_model,
                                               infer_num_classes)

__all__ = ["ARCHITECTURES", "BN_EPSILON", "Checkpoint", "Converted", "FORMATS",
           "IMAGENET_IMAGE_SIZE", "UnsafePickleError", "assign_weights", "build_keras_model",
           "convert", "file_sha256", "import_torch", "infer_num_classes",
           "load_checkpoint_object", "model_config", "read_checkpoint", "reference_logits",
           "report_phase", "verify"]
