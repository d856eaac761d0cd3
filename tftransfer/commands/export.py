"""``export``: a model or transfer run -> a SavedModel version for TensorFlow Serving.

    python main.py export --model runs/transfer/RUN --name flowers [--version 3] [--top-k 5]
"""

from __future__ import annotations


def register(subparsers):
    """Adds the ``export`` subcommand and returns its parser."""
    from tftransfer.commands.evaluate import add_trust_saved_model_argument
    from tftransfer.serving.export import DEFAULT_TOP_K

    parser = subparsers.add_parser(
        "export", help="export a model as a SavedModel for TensorFlow Serving",
        description="Write BASE/NAME/VERSION/ (the layout TF Serving watches) with the "
                    "signatures serving_default (encoded JPEG/PNG/GIF/BMP bytes, decoded and "
                    "preprocessed in the graph as in training) and predict_images (float32 "
                    "RGB in [0, 1]); both return probabilities, top-k classes and class "
                    "names, and logits. An existing version is never overwritten.")
    parser.add_argument("--model", required=True,
                        help="run or model directory, .keras file or registered name")
    add_trust_saved_model_argument(parser)
    parser.add_argument("--name", required=True, help="served model name (TF Serving MODEL_NAME)")
    parser.add_argument("--version", type=int, default=None,
                        help="integer version (default: the next free one, 1 for a new model)")
    parser.add_argument("--base", default="saved_models",
                        help="folder holding one sub-folder per served model (default "
                             "saved_models)")
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K,
                        help=f"top classes returned per image (default {DEFAULT_TOP_K})")
    parser.set_defaults(run=run)
    return parser


def run(args) -> dict:
    """Runs ``export``; returns the result row the CLI prints."""
    from tftransfer.serving.export import export_model

    return export_model(args.model, args.name, base=args.base, version=args.version,
                        top_k=args.top_k, trust_saved_model=args.trust_saved_model)
