"""tftransfer: robust transfer learning with Keras and TensorFlow.

Reproduces and makes usable the finding of Utrera et al., "Adversarially-Trained
Deep Nets Transfer Better" (ICLR 2021).
"""

import importlib.metadata
import importlib.util
import warnings

# Importing the package changes nothing in the process: the command line quiets TensorFlow's
# start-up logging itself (``tftransfer.tflog``).
__version__ = "0.1.0"

# TensorFlow comes from the [cpu] or [gpu] extra (setup.cfg): without either the package stops
# here with one sentence rather than deep inside a command. Found without importing it, so that
# the CLI still parses without TensorFlow's start-up.
MISSING_TENSORFLOW = ('tftransfer needs TensorFlow 2.21, which is not installed: install the '
                      'toolkit with pip install -e ".[cpu]" (or ".[gpu]" for NVIDIA GPUs), or '
                      'pip install "tensorflow-cpu==2.21.*" beside it.')


def _check_tensorflow() -> None:
    """Raises ModuleNotFoundError (``MISSING_TENSORFLOW``) when no ``tensorflow`` module can
    be imported; warns when both the tensorflow and tensorflow-cpu distributions are
    installed (they write the same module, so which one runs depends on the install order)."""
    if importlib.util.find_spec("tensorflow") is None:
        raise ModuleNotFoundError(MISSING_TENSORFLOW, name="tensorflow")
    installed = []
    for name in ("tensorflow", "tensorflow-cpu"):
        try:
            installed.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    if len(installed) == 2:
        warnings.warn(f"Both {installed[0]} and {installed[1]} are installed, and they write "
                      f"the same tensorflow module: keep one (for GPUs pip uninstall -y "
                      f"tensorflow-cpu, then pip install --force-reinstall "
                      f"\"tensorflow[and-cuda]==2.21.*\").", RuntimeWarning, stacklevel=3)


_check_tensorflow()


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
