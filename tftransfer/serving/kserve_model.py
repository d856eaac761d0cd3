"""An exported model served by KServe's Python model server (pip package ``kserve``).

Run in the server's own process (``serve --backend kserve`` starts it)::

    python -m tftransfer.serving.kserve_model --model_dir saved_models/NAME \
        --model_name NAME --http_port 8501 --enable_grpc false

KServe's V1 protocol is TF Serving's REST API: ``POST /v1/models/NAME:predict`` with
``instances`` or ``inputs`` (``serving.rest_api``) runs the export's signatures
(``serving_default`` for ``{"b64": ...}`` image bytes, ``predict_images`` for float arrays),
so ``predict`` works unchanged. KServe answers ``GET /v1/models/NAME`` with
``{"name", "ready"}`` and an unknown model with 404 ``{"error": ...}``, TF Serving's error
shape. It has no version paths; this module adds TF Serving's
``/v1/models/NAME/versions/N`` (status) and ``...:predict`` to its app, answering for the
version loaded. Like TF Serving by default, only the latest version is loaded.

KServe binds its REST port on every interface (0.0.0.0); its gRPC API (the V2 protocol, not
TF Serving's) is off here.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import kserve
from fastapi import Request
from fastapi.responses import JSONResponse
from kserve.errors import InvalidInput
from kserve.model_server import app as kserve_app
from kserve.model_server import parser as kserve_parser
from kserve.protocol.rest.v1_endpoints import V1Endpoints

from tftransfer.serving import rest_api

# The --model_dir holds integer version folders (1/, 2/, ...), as TF Serving's base path.
VERSION_ROUTE = "/v1/models/{model_name}/versions/{version:int}"


class ExportedModel(kserve.Model):
    """The latest version of an ``export`` folder, answering TF Serving's REST format."""

    def __init__(self, name: str, model_dir):
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.version = None
        self.signatures = {}

    def load(self) -> bool:
        """Loads the latest version's SavedModel; the server starts once it is ready."""
        import tensorflow as tf

        from tftransfer.serving.server import check_base

        base, versions = check_base(self.model_dir)
        self.version = versions[-1]
        loaded = tf.saved_model.load(str(base / str(self.version)))
        self.signatures = dict(loaded.signatures)
        self._loaded = loaded  # the signatures need their SavedModel kept alive
        self.ready = True
        return self.ready

    async def predict(self, payload, headers=None) -> dict:
        """Runs the requested signature on the request's input (in a worker thread, so the
        server keeps answering status requests meanwhile)."""
        try:
            request = rest_api.read_request(payload)
            function = self._signature(request.signature_name)
            inputs = self._inputs(function, request)
        except rest_api.RequestError as error:
            raise InvalidInput(str(error)) from None
        loop = asyncio.get_running_loop()
        outputs = await loop.run_in_executor(None, self._run, function, inputs)
        return rest_api.answer(outputs, request.columnar)

    def _signature(self, name: str):
        if name not in self.signatures:
            raise rest_api.RequestError(
                f"Serving signature name {name!r} not found; this model has "
                f"{', '.join(sorted(self.signatures))}.")
        return self.signatures[name]

    @staticmethod
    def _inputs(function, request) -> dict:
        """The signature's keyword arguments: its one input as a tensor of its dtype."""
        import tensorflow as tf

        (input_name, spec), = function.structured_input_signature[1].items()
        value = rest_api.input_value(request, input_name)
        try:
            return {input_name: tf.constant(value, dtype=spec.dtype)}
        except (TypeError, ValueError):
            raise rest_api.RequestError(
                f"The {input_name!r} input of {request.signature_name!r} takes "
                f"{spec.dtype.name} values shaped {spec.shape}; the request's value is not "
                f"one (a ragged array, or values of another type).") from None

    @staticmethod
    def _run(function, inputs: dict) -> dict:
        import tensorflow as tf

        try:
            outputs = function(**inputs)
        except (tf.errors.InvalidArgumentError, tf.errors.ResourceExhaustedError) as error:
            # The export's own checks (size, format, aspect ratio) and the decoder's errors.
            raise InvalidInput(rest_api.error_sentence(error.message)) from None
        return {name: tensor.numpy() for name, tensor in outputs.items()}


def add_version_routes(app, dataplane) -> None:
    """TF Serving's version paths on KServe's app: the loaded version answers, any other
    (or an unknown model) gets TF Serving's 404 ``{"error": "Servable not found ..."}``."""
    endpoints = V1Endpoints(dataplane)

    def loaded(model_name: str, version: int):
        model = dataplane.model_registry.get_model(model_name)
        return model if model is not None and model.version == version else None

    async def status(model_name: str, version: int):
        if loaded(model_name, version) is None:
            return _not_found(model_name, version)
        return {"model_version_status": [{"version": str(version), "state": "AVAILABLE",
                                          "status": {"error_code": "OK",
                                                     "error_message": ""}}]}

    async def predict(model_name: str, version: int, request: Request):
        if loaded(model_name, version) is None:
            return _not_found(model_name, version)
        return await endpoints.predict(model_name, request)

    app.add_api_route(VERSION_ROUTE, status, methods=["GET"])
    app.add_api_route(VERSION_ROUTE + ":predict", predict, methods=["POST"],
                      response_model=None)


def _not_found(model_name: str, version: int):
    return JSONResponse(status_code=404, content={
        "error": f"Servable not found for request: Specific({model_name}, {version})"})


def main(argv=None) -> None:
    """Loads the model and serves it until the process is stopped."""
    parser = argparse.ArgumentParser(parents=[kserve_parser], description=__doc__)
    parser.add_argument("--model_dir", required=True,
                        help="the export's folder of integer versions")
    args, _ = parser.parse_known_args(argv)
    model = ExportedModel(args.model_name, args.model_dir)
    model.load()
    server = kserve.ModelServer(http_port=args.http_port, enable_grpc=args.enable_grpc,
                                workers=1)
    add_version_routes(kserve_app, server.dataplane)
    print(f"serving {args.model_name!r} version {model.version} on port {args.http_port}",
          file=sys.stderr, flush=True)
    server.start([model])


if __name__ == "__main__":
    main()
