"""``serve``: run a model server on an exported model's folder.

    python main.py serve --base saved_models/flowers [--backend auto|tfserving|kserve]
        [--rest-port 8501] [--grpc-port 8500] [--python .venv-serve/bin/python]

``tfserving`` runs ``tensorflow_model_server`` (REST and gRPC); ``kserve`` runs KServe's
pip-installable model server, whose V1 protocol is TF Serving's REST API (no gRPC).
``auto`` (the default) takes the binary where it is on PATH, else KServe. Without either
it explains how to serve the folder with Docker or TF Serving's apt package, or how to
install the ``[serve]`` extra.
"""

from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers):
    """Adds the ``serve`` subcommand and returns its parser."""
    parser = subparsers.add_parser(
        "serve", help="serve exported models with tensorflow_model_server or KServe (REST)",
        description="Start a model server on BASE (a folder of integer versions written by "
                    "`export`), wait until the model is AVAILABLE, then keep it running "
                    "until Ctrl-C (or return at once with --detach).")
    parser.add_argument("--base", required=True,
                        help="the model's folder of versions, e.g. saved_models/NAME")
    parser.add_argument("--name", default=None,
                        help="model name clients use (default: the folder name of --base)")
    parser.add_argument("--backend", default="auto", choices=("auto", "tfserving", "kserve"),
                        help="tfserving: the tensorflow_model_server binary (REST and gRPC); "
                             "kserve: KServe's model server from the [serve] extra (REST "
                             "only, the latest version); auto (default): the binary where it "
                             "is on PATH, else kserve")
    parser.add_argument("--rest-port", type=int, default=8501, help="port of the REST API")
    parser.add_argument("--grpc-port", type=int, default=8500,
                        help="port of the gRPC API (tfserving only)")
    parser.add_argument("--python", default=None,
                        help="the Python with the [serve] extra that runs KServe (default: "
                             "$TFTRANSFER_SERVE_PYTHON, this one, or .venv-serve/bin/python "
                             "of the checkout, the first that has kserve)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the model to become available")
    parser.add_argument("--log", default=None, help="server log file (default: a temp file)")
    parser.add_argument("--detach", action="store_true",
                        help="return once the model is available and leave the server running")
    parser.set_defaults(run=run)
    return parser


def run(args) -> dict:
    """Runs ``serve``; returns the result row the CLI prints (after the server stops,
    or at once with ``--detach``)."""
    from tftransfer.serving import kserve_server

    name = args.name or Path(args.base).resolve().name
    backend, python = kserve_server.choose_backend(args.backend, args.python)
    server = _start(args, name, backend, python)
    grpc = f"localhost:{args.grpc_port}" if backend == "tfserving" else None
    result = {"name": name, "base": str(Path(args.base).resolve()), "backend": backend,
              "pid": server.process.pid,
              "rest": f"http://localhost:{args.rest_port}/v1/models/{name}", "grpc": grpc,
              "available_versions": server.available_versions(), "log": str(server.log_path)}
    print(f"serving {name!r} (versions {result['available_versions']}) with {backend} at "
          f"{result['rest']}" + (f" and gRPC {grpc}" if grpc else "") +
          f"; log {server.log_path}", file=sys.stderr)
    if args.detach:
        return result
    print("Ctrl-C stops the server.", file=sys.stderr)
    try:
        result["exit_code"] = server.process.wait()
    except KeyboardInterrupt:
        result["exit_code"] = server.stop()
    return result


def _start(args, name: str, backend: str, python: str | None):
    from tftransfer.serving import kserve_server
    from tftransfer.serving import server as model_server

    if backend == "kserve":
        return kserve_server.start_kserve_server(args.base, name, args.rest_port, args.timeout,
                                                 args.log, python)
    return model_server.start_model_server(args.base, name, args.rest_port, args.grpc_port,
                                           args.timeout, args.log)
