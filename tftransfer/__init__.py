"""tftransfer: robust transfer learning with Keras and TensorFlow.

Reproduces and makes usable the finding of Utrera et al., "Adversarially-Trained
Deep Nets Transfer Better" (ICLR 2021).
"""

# Importing the package changes nothing in the process: the command line quiets TensorFlow's
# start-up logging itself (``tftransfer.tflog``).
__version__ = "0.1.0"


def load_model(path):
    """Loads any model the CLI writes (``pretrain``, ``transfer``, ``convert``) or a registered name.

    Args:
      path: a model directory written by the CLI, a ``.keras`` file, a SavedModel
        directory, or the name of a registered source model.

    Returns:
      A ``keras.Model`` taking RGB float32 images in [0, 1].
    """
    from tftransfer.sources import hub

    return hub.load_model(path)
