"""Which server ``serve`` runs, and starting KServe's model server on an export.

``serve --backend auto`` (the default) runs ``tensorflow_model_server`` when it is on PATH
and otherwise KServe's pip-installable model server (``serving.kserve_model``), saying so on
stderr. KServe runs in a Python that has the ``[serve]`` extra: kserve 0.21 pins
``protobuf<7``, ``pandas<3`` and ``psutil<6``, so where this environment has newer ones it
lives in an environment of its own (``.venv-serve`` beside the checkout by convention; see
docs/cli.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tftransfer.errors import UserError
from tftransfer.serving import server as model_server
from tftransfer.serving.export import check_name

BACKENDS = ("auto", "tfserving", "kserve")
PYTHON_ENV = "TFTRANSFER_SERVE_PYTHON"
# Where the docs install the [serve] extra when this environment cannot take it.
SIDECAR = Path(".venv-serve") / "bin" / "python"
_MODULES = ("kserve", "tensorflow", "tftransfer")


def choose_backend(backend: str, python: str | None = None) -> tuple[str, str | None]:
    """``(backend, python)`` for ``--backend``: ``tfserving`` (python None) or ``kserve`` and
    the Python that runs it (``find_python``).

    ``auto`` takes the binary where it is on PATH, else KServe where a Python has it (said
    on stderr), else ``tfserving``, whose error then says how to install either.
    """
    if backend not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if backend == "tfserving":
        return backend, None
    if backend == "kserve":
        return backend, find_python(python)
    if shutil.which(model_server.SERVER_BINARY):
        return "tfserving", None
    try:
        python = find_python(python)
    except UserError:
        return "tfserving", None
    print(f"serve: {model_server.SERVER_BINARY} is not on PATH; using KServe's model server "
          f"(pip package kserve, run by {python}).", file=sys.stderr)
    return "kserve", python


def find_python(python: str | None = None) -> str:
    """The Python that runs KServe: ``python`` when given, else ``$TFTRANSFER_SERVE_PYTHON``,
    this interpreter, or the checkout's ``.venv-serve``, whichever first has kserve,
    TensorFlow and tftransfer.

    Raises:
      UserError: none has them (with how to install the ``[serve]`` extra).
    """
    if python:
        candidates = [python]
    else:
        checkout = Path(__file__).resolve().parents[2]
        candidates = [os.environ.get(PYTHON_ENV), sys.executable, str(checkout / SIDECAR)]
    for candidate in filter(None, candidates):
        if has_kserve(candidate):
            return candidate
    tried = ", ".join(filter(None, candidates))
    raise UserError(f"No Python with KServe's model server was found (tried {tried}); install "
                    f"the [serve] extra: `pip install -e \".[cpu,serve]\"`, or, where this "
                    f"environment has protobuf 7 or pandas 3 (kserve 0.21 pins protobuf<7, "
                    f"pandas<3, psutil<6), in its own: `python3 -m venv .venv-serve && "
                    f".venv-serve/bin/pip install -e \".[cpu,serve]\"`.")


def has_kserve(python: str) -> bool:
    """Whether ``python`` can import kserve, TensorFlow and tftransfer (without importing
    them: finding them takes milliseconds, importing them seconds)."""
    check = ("import importlib.util as u, sys; "
             f"sys.exit(0 if all(u.find_spec(m) for m in {_MODULES!r}) else 1)")
    try:
        return subprocess.run([python, "-c", check], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def kserve_command(python: str, base: Path, name: str, rest_port: int) -> list[str]:
    """The command line that serves ``base`` as ``name`` with KServe on ``rest_port``."""
    return [python, "-m", "tftransfer.serving.kserve_model", f"--model_dir={base}",
            f"--model_name={name}", f"--http_port={rest_port}", "--enable_grpc=false",
            "--enable_latency_logging=false"]


def start_kserve_server(base, name: str, rest_port: int = 8501, timeout: float = 120.0,
                        log_path=None, python: str | None = None) -> model_server.ModelServer:
    """Starts KServe's model server on the latest version of ``base`` and waits until it
    answers for it.

    Args:
      base: the model's folder of integer versions.
      name: the model name clients use in ``/v1/models/NAME``.
      rest_port: port of the REST API (KServe binds it on every interface).
      timeout: seconds to wait for the model to load.
      log_path: where the server's output goes (default: a temporary file).
      python: the interpreter to run it with (default: ``find_python``).

    Raises:
      UserError: as ``server.start_model_server``, or when no Python has kserve.
    """
    base, versions = model_server.check_base(base)
    check_name(name)
    model_server.check_ports_free((rest_port, "--rest-port"))
    command = kserve_command(find_python(python), base, name, rest_port)
    return model_server.launch(command, name, rest_port, timeout, log_path, backend="kserve",
                               version=versions[-1])
