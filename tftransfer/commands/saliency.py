"""``saliency``: input-gradient maps of several models, side by side in one figure.

    python main.py saliency --models saved_models/natural saved_models/robust \
        --dataset cifar10 --images 8 --out results/interpretation/saliency.png [--smoothgrad]
"""

from __future__ import annotations

from tftransfer.commands.common import add_data_arguments, seed


def register(subparsers):
    """Adds the ``saliency`` subcommand and returns its parser."""
    from tftransfer.config import SALIENCY_RENDERINGS as RENDERINGS

    parser = subparsers.add_parser(
        "saliency", help="loss gradients w.r.t. the input of several models, in one figure",
        description="For K test images (a fixed stratified subset, seed 0), the gradient of "
                    "the cross-entropy w.r.t. the input pixels for each model (vanilla or "
                    "SmoothGrad), rendered side by side: rows are images, columns models. "
                    "Models trained on other classes than --dataset use their own predicted "
                    "class. The raw gradients are saved next to the PNG as .npz.")
    parser.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                        help="model directories, .keras files or registered names")
    parser.add_argument("--labels", nargs="+", metavar="TITLE",
                        help="column titles, one per model (default: directory name and "
                             "training kind)")
    parser.add_argument("--dataset", required=True, help="TFDS name or image folder")
    parser.add_argument("--images", type=int, default=8, help="number of test images (rows)")
    parser.add_argument("--out", required=True, metavar="FILE.png", help="the figure to write")
    parser.add_argument("--smoothgrad", action="store_true",
                        help="average the gradients of noisy copies (SmoothGrad)")
    parser.add_argument("--samples", type=int, default=25, help="SmoothGrad: noisy copies")
    parser.add_argument("--noise", type=float, default=0.1,
                        help="SmoothGrad: noise std in [0, 1] pixel units")
    parser.add_argument("--render", choices=RENDERINGS, default="abs",
                        help="abs: |gradient| summed over channels; image: the signed "
                             "gradient as an RGB image")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the SmoothGrad noise")
    add_data_arguments(parser)
    parser.set_defaults(run=run)
    return parser


def run(args) -> dict:
    """Runs ``saliency``; returns the result row the CLI prints."""
    from tftransfer.interpret.saliency import run_saliency

    return run_saliency(config_from_args(args))


def config_from_args(args):
    """The SaliencyConfig that the command line describes."""
    from tftransfer.config import SaliencyConfig

    return SaliencyConfig(
        models=tuple(args.models), dataset=args.dataset, out=args.out, images=args.images,
        smoothgrad=args.smoothgrad, samples=args.samples, noise=args.noise, render=args.render,
        labels=None if args.labels is None else tuple(args.labels), seed=args.seed,
        data_dir=args.data_dir, download=args.download)
