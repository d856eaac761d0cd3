"""The exceptions that the CLI turns into a single clear sentence, and that sentence for an
``OSError``."""


class UserError(Exception):
    """Bad input from the user: the message names the bad value and what would be valid."""


class UnsavedResult(UserError):
    """A finished computation whose record could not be written (a full disk, a read-only
    folder): the message says what failed; ``result`` is the result, which the CLI still
    prints, so that the finished work is not lost with the file."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


def os_error_sentence(error: OSError, path=None) -> str:
    """``<what failed>: <path>`` for an ``OSError`` (``No space left on device: runs/x``).

    Args:
      error: the error.
      path: the file being written or read, for an error that does not name one itself.
    """
    what = error.strerror or str(error) or type(error).__name__
    paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
    if not paths and path is not None:
        paths = [str(path)]
    return ": ".join([what, " -> ".join(paths)] if paths else [what])
