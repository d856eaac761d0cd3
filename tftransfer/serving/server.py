"""Starts a model server process on an exported model and waits until it serves:
``tensorflow_model_server`` here, KServe's through ``serving.kserve_server``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tftransfer.errors import UserError
from tftransfer.serving.export import check_name, existing_versions
from tftransfer.sources.export_format import SAVED_MODEL_FILE
from tftransfer.serving.client import model_status

SERVER_BINARY = "tensorflow_model_server"


def check_base(base) -> tuple[Path, list[int]]:
    """The absolute model base path and its versions; UserError unless TF Serving could load it."""
    base = Path(base).resolve()
    if not base.is_dir():
        raise UserError(f"--base {str(base)!r} is not a folder; pass the folder that holds the "
                        f"integer version folders (e.g. saved_models/NAME).")
    versions = [v for v in existing_versions(base) if (base / str(v) / SAVED_MODEL_FILE).exists()]
    if not versions:
        raise UserError(f"--base {str(base)!r} has no version folder (1/, 2/, ...) with a "
                        f"saved_model.pb; export one with `python main.py export`.")
    return base, versions


def server_command(base: Path, name: str, rest_port: int, grpc_port: int) -> list[str]:
    """The ``tensorflow_model_server`` command line for ``base``."""
    return [SERVER_BINARY, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
            f"--model_name={name}", f"--model_base_path={base}"]


def install_instructions(base: Path, name: str, rest_port: int, grpc_port: int) -> str:
    """How to serve ``base`` without a local ``tensorflow_model_server``."""
    return (f"{SERVER_BINARY} is not installed (not on PATH). Serve the model with Docker:\n"
            f"  docker run -p {rest_port}:8501 -p {grpc_port}:8500 "
            f"--mount type=bind,source={base},target=/models/{name} "
            f"-e MODEL_NAME={name} -t tensorflow/serving\n"
            f"or install tensorflow-model-server from TF Serving's apt repository "
            f"(https://www.tensorflow.org/tfx/serving/setup) and run:\n"
            f"  {' '.join(server_command(base, name, rest_port, grpc_port))}\n"
            f"or serve it with KServe's model server (REST only): install the [serve] extra "
            f"(docs/cli.md, serve) and run serve --backend kserve.")


@dataclass
class ModelServer:
    """A running model server (see ``start_model_server`` and ``launch``)."""

    process: subprocess.Popen
    status: dict
    log_path: Path
    backend: str = "tfserving"

    def available_versions(self) -> list[int]:
        """The versions the server reported AVAILABLE."""
        return [int(v["version"]) for v in self.status.get("model_version_status", [])
                if v.get("state") == "AVAILABLE"]

    def stop(self, grace: float = 10.0) -> int:
        """Terminates the server (kills it after ``grace`` seconds); returns its exit code."""
        stop_process(self.process, grace)
        return self.process.returncode


def start_model_server(base, name: str, rest_port: int = 8501, grpc_port: int = 8500,
                       timeout: float = 120.0, log_path=None) -> ModelServer:
    """Starts ``tensorflow_model_server`` on ``base`` and waits until ``name`` is AVAILABLE.

    Args:
      base: the model's folder of integer versions.
      name: the model name clients use in ``/v1/models/NAME``.
      rest_port, grpc_port: ports of the REST and gRPC APIs.
      timeout: seconds to wait for the model to load.
      log_path: where the server's output goes (default: a temporary file).

    Returns:
      The running server, the model status it reported and its log file.

    Raises:
      UserError: when the binary is missing (with instructions), a port is taken, the
        server exits, or the model does not become available in time.
    """
    base, _ = check_base(base)
    check_name(name)
    if shutil.which(SERVER_BINARY) is None:
        raise UserError(install_instructions(base, name, rest_port, grpc_port))
    check_ports_free((rest_port, "--rest-port"), (grpc_port, "--grpc-port"))
    return launch(server_command(base, name, rest_port, grpc_port), name, rest_port, timeout,
                  log_path)


def check_ports_free(*ports) -> None:
    """UserError for the first ``(port, flag)`` that something on this machine listens on."""
    for port, flag in ports:
        if port_in_use(port):
            raise UserError(f"Port {port} is already in use on this machine; choose another "
                            f"{flag}.")


def launch(command: list[str], name: str, rest_port: int, timeout: float, log_path=None,
           backend: str = "tfserving", version: int | None = None) -> ModelServer:
    """Starts ``command`` (a model server, its output to ``log_path`` or a temporary file)
    and waits until its REST API on ``rest_port`` reports ``name`` (``version``) AVAILABLE.

    Raises:
      UserError: when the server exits first or the model is not available in time (the
        server is then stopped).
    """
    log_path = Path(log_path) if log_path else temp_log(name)
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        status = wait_until_available(f"http://127.0.0.1:{rest_port}", name, timeout, process,
                                      log_path, version=version, label=command[0])
    except BaseException:
        stop_process(process)
        raise
    return ModelServer(process, status, log_path, backend)


def temp_log(name: str) -> Path:
    """A new temporary file for a server's log."""
    import tempfile

    handle, path = tempfile.mkstemp(prefix=f"tf_serving_{name}_", suffix=".log")
    os.close(handle)
    return Path(path)


def port_in_use(port: int) -> bool:
    """Whether something accepts connections on ``port`` of 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop_process(process: subprocess.Popen, grace: float = 10.0) -> None:
    """Terminates ``process`` and waits for it; kills it after ``grace`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_available(server: str, name: str, timeout: float, process=None,
                         log_path=None, interval: float = 0.5, version: int | None = None,
                         label: str = SERVER_BINARY) -> dict:
    """Polls ``GET /v1/models/NAME[/versions/N]`` until a version is AVAILABLE.

    ``label`` names the server process in errors.

    Returns:
      The status JSON of the model.

    Raises:
      UserError: when ``process`` exits first or ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise UserError(f"{label} exited with code {process.returncode} before "
                            f"{name!r} was available: {log_tail(log_path)}")
        try:
            status = model_status(server, name, version)
            if any(v.get("state") == "AVAILABLE" for v in status.get("model_version_status", [])):
                return status
            last = json.dumps(status)
        except UserError as error:
            last = str(error)
        time.sleep(interval)
    raise UserError(f"Model {name!r} was not AVAILABLE at {server} after {timeout:g}s "
                    f"(last status: {last}); server log: {log_tail(log_path)}")


def log_tail(log_path, lines: int = 5) -> str:
    """The last ``lines`` lines of a server's log, joined with " | " for one sentence."""
    if not log_path or not Path(log_path).exists():
        return "(no log)"
    tail = Path(log_path).read_text(errors="replace").strip().splitlines()[-lines:]
    return " | ".join(tail) or "(empty log)"
