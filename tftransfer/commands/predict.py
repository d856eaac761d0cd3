"""``predict``: classify image files with a model served by TensorFlow Serving.

    python main.py predict --server http://localhost:8501 --model flowers a.jpg b.png
    python main.py predict --server localhost:8500 --grpc --model flowers a.jpg

Prints a table of the top-k classes per image to standard error and the predictions as
the JSON result line.
"""

from __future__ import annotations

import sys


def register(subparsers):
    """Adds the ``predict`` subcommand and returns its parser."""
    parser = subparsers.add_parser(
        "predict", help="classify images with a model served by TF Serving (REST or gRPC)",
        description="Send image files (JPEG/PNG/GIF/BMP) to TF Serving's predict API "
                    "(serving_default signature of a model written by `export`) and print "
                    "the top-k classes with their probabilities.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--server", default="http://localhost:8501",
                        help="REST URL (default http://localhost:8501), or host:port of the "
                             "gRPC API with --grpc")
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--version", type=int, default=None,
                        help="model version (default: the latest the server has)")
    parser.add_argument("--top-k", type=int, default=None,
                        help="classes shown per image (default: all the export returns)")
    parser.add_argument("--grpc", action="store_true",
                        help="send the images over TF Serving's gRPC API (--server is then "
                             "host:port, usually port 8500) instead of REST; needs the "
                             "tensorflow-serving-api package (pip install --no-deps "
                             "tensorflow-serving-api: its own dependency on the full "
                             "tensorflow package is not needed)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds a request may take as a whole, the answer read to its "
                             "end included (default 60; finite and above 0)")
    parser.set_defaults(run=run)
    return parser


def run(args) -> dict:
    """Runs ``predict``; returns the result row the CLI prints."""
    from tftransfer.serving import client as serving_client
    from tftransfer.errors import UserError

    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {args.top_k}.")
    predictions = serving_client.predict_files(args.images, args.server, args.model,
                                               version=args.version, timeout=args.timeout,
                                               grpc=args.grpc)
    rows = [{"image": path, "top_k": serving_client.top_k(p, args.top_k)}
            for path, p in zip(args.images, predictions)]
    exported = len(predictions[0]["classes"])
    if args.top_k is not None and args.top_k > exported:
        print(f"note: the model returns its top {exported} classes; showing {exported} "
              f"(export again with --top-k {args.top_k} for more).", file=sys.stderr)
    _print_table(rows)
    return {"server": args.server, "model": args.model, "version": args.version,
            "protocol": "grpc" if args.grpc else "rest", "predictions": rows}


def _print_table(rows) -> None:
    width = max(len("image"), *(len(row["image"]) for row in rows))
    print(f"{'image':<{width}}  rank  class  probability  name", file=sys.stderr)
    for row in rows:
        for rank, entry in enumerate(row["top_k"], 1):
            image = row["image"] if rank == 1 else ""
            print(f"{image:<{width}}  {rank:>4}  {entry['class']:>5}  {entry['probability']:>11.4f}"
                  f"  {entry['name']}", file=sys.stderr)
