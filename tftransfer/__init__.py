"""tftransfer: robust transfer learning with Keras and TensorFlow.

Reproduces and makes usable the finding of Utrera et al., "Adversarially-Trained
Deep Nets Transfer Better" (ICLR 2021).
"""

import os

# TensorFlow's C++ start-up chatter is not useful to users of a CLI; keep real errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"


def load_model(path):
    """Loads any model the CLI writes (``pretrain``, ``transfer``, ``convert``) or a registered name.

    Args:
      path: a model directory written by the CLI, a ``.keras`` file, a SavedModel
        directory, or the name of a registered source model.

    Returns:
      A ``keras.Model`` taking RGB float32 images in [0, 1].
    """
    from tftransfer import saving  # imported lazily: `import tftransfer` stays cheap

    return saving.load_model(path)
