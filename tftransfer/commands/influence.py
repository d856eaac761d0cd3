"""``influence``: which training images a fine-tuned head relies on (Koh & Liang).

    python main.py influence --model runs/transfer/RUN_NATURAL --model runs/transfer/RUN_ROBUST \
        --train-images 1000 --test-images 200 --out results/interpretation/influence
"""

from __future__ import annotations

from tftransfer.commands.common import add_data_arguments


def register(subparsers):
    """Adds the ``influence`` subcommand and returns its parser."""
    from tftransfer.config import INFLUENCE_METHODS as METHODS
    from tftransfer.config import INFLUENCE_RANKINGS as RANKINGS

    parser = subparsers.add_parser(
        "influence", help="influence functions on a fine-tuned head: label match rates and "
                          "most influential training images",
        description="Influence of each training image on each test image's loss, for the "
                    "parameters of the fine-tuned fc head (I = -grad L_test^T H^-1 grad L_train,"
                    " Koh & Liang's sign: negative = helpful). Writes influence_<model>.npy "
                    "(test x train), match_rates.csv/.png (the paper's Figure 6: share of "
                    "targets whose k-th most helpful training image has their label) and "
                    "most_influential.png (Figure 5).")
    parser.add_argument("--model", action="append", required=True, metavar="RUN",
                        help="a fine-tuned run directory (repeat for several models)")
    parser.add_argument("--names", nargs="+", metavar="NAME",
                        help="labels of the runs in files and figures (default: directory names)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="N: the first N of each run's training images (default: all)")
    parser.add_argument("--test-images", type=int, default=100,
                        help="M: a fixed stratified subset of the test split")
    parser.add_argument("--top-k", type=int, default=100, help="match rates for k = 1..top-k")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--damping", type=float, default=0.01,
                        help="lambda added to the Hessian's diagonal (on top of the run's "
                             "weight decay); the softmax Hessian alone is singular")
    parser.add_argument("--method", choices=METHODS, default="auto",
                        help="exact Hessian (float64; auto: when it has at most 5000 rows in the "
                             "span of the training features) or Hessian-vector products with "
                             "conjugate gradients")
    parser.add_argument("--rank", choices=RANKINGS, default="helpful",
                        help="'most influential' = most helpful (largest -I, the default) or "
                             "largest |I|")
    parser.add_argument("--grid-rows", type=int, default=4,
                        help="test images shown in most_influential.png")
    parser.add_argument("--no-matrices", dest="save_matrices", action="store_false",
                        help="do not write the influence_<model>.npy matrices")
    add_data_arguments(parser)
    parser.set_defaults(run=run)
    return parser


def run(args) -> dict:
    """Runs ``influence``; returns the result row the CLI prints."""
    from tftransfer.interpret.influence.run import analyze

    return analyze(config_from_args(args))


def config_from_args(args):
    """The InfluenceConfig that the command line describes."""
    from tftransfer.config import InfluenceConfig

    return InfluenceConfig(
        run_dirs=tuple(args.model), out=args.out, train_images=args.train_images,
        test_images=args.test_images, top_k=args.top_k, damping=args.damping,
        method=args.method, rank=args.rank,
        names=None if args.names is None else tuple(args.names), grid_rows=args.grid_rows,
        save_matrices=args.save_matrices, data_dir=args.data_dir, download=args.download)
