"""``tune``: hyperparameter search for fine-tuning (keras-tuner), then retrain and test."""

from __future__ import annotations

from tftransfer.commands.common import add_data_arguments, add_precision_argument


def register(subparsers):
    from tftransfer.sources.registry import DEFAULT_SOURCE, PHOTO_SOURCE, SMALL_IMAGE_MAX
    from tftransfer.config import TUNE_DEFAULT_MAX_TRIALS as DEFAULT_MAX_TRIALS
    from tftransfer.config import TUNERS

    parser = subparsers.add_parser(
        "tune", help="search fine-tuning hyperparameters with keras-tuner",
        description="Search learning rate, weight decay, unfrozen blocks, batch size, head "
                    "initialization, label smoothing and epochs for fine-tuning a source on a "
                    "target, ranking trials by accuracy on a stratified validation split of "
                    "the N training images (never the test split). Then retrain the best "
                    "configuration on all N images, evaluate it once on the test split, and "
                    "print it as a ready-to-run 'python main.py transfer ...' command. "
                    "Rerunning the same command resumes the search; a second search on the "
                    "same --dir while one runs is refused. Distributed (a parallel search): set "
                    "KERASTUNER_TUNER_ID (chief / tuner0 / tuner1 ...), KERASTUNER_ORACLE_IP "
                    "and KERASTUNER_ORACLE_PORT and start the same command once per process.")
    parser.add_argument("--target", required=True, help="TFDS name or image folder")
    parser.add_argument("--source", default=None,
                        help=f"a source name (`python main.py sources` lists them) or a "
                             f"model path (default: {DEFAULT_SOURCE} for targets of at most "
                             f"{SMALL_IMAGE_MAX} px, {PHOTO_SOURCE} for larger ones)")
    parser.add_argument("--train-images", type=int, required=True,
                        help="N training images; the validation split is carved from them")
    parser.add_argument("--test-images", type=int, default=None,
                        help="test the best configuration on a stratified subset of the test split")
    parser.add_argument("--tuner", choices=TUNERS, default="hyperband",
                        help="keras-tuner search algorithm")
    parser.add_argument("--max-trials", type=int, default=None,
                        help=f"trial budget (default {DEFAULT_MAX_TRIALS} for random/bayesian; "
                             f"for hyperband an optional cap on its own schedule)")
    parser.add_argument("--executions-per-trial", type=int, default=1,
                        help="train each configuration R times (seeds seed..seed+R-1), average")
    parser.add_argument("--max-epochs", type=int, default=10,
                        help="epoch budget: Hyperband's max_epochs, else the upper end of the "
                             "searched epochs")
    parser.add_argument("--validation-fraction", type=float, default=0.2,
                        help="stratified share of the N images used for validation")
    parser.add_argument("--dir", default=None,
                        help="search directory (default: runs/tune/<target>__<source>__...)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start the search afresh instead of resuming it (chief only)")
    parser.add_argument("--unfrozen-choices", default=None, metavar="B,B,...",
                        help="unfrozen-block values to search, e.g. 0,3,-1 (default: head only, "
                             "last block, last stage, last two stages, ..., -1 = everything)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the search and every trial's training: the same command "
                             "gives the same trials, also when resumed after a kill")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input size (default: the source's)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    add_precision_argument(parser)
    add_data_arguments(parser)
    parser.set_defaults(run=run, resumable=True)
    return parser


def config_from_args(args):
    """The TuneConfig that the command line describes."""
    from tftransfer.sources import hub
    from tftransfer.tuning.search import TuneConfig, base_config, default_directory

    # Resolved once here, so that the search, the retrain and the directory name agree.
    source = args.source or hub.default_source(args.target, args.data_dir, args.image_size,
                                               verbose=not args.quiet)
    base = base_config(args.target, source, args.train_images, seed=args.seed,
                       precision=args.precision, data_dir=args.data_dir, download=args.download,
                       test_images=args.test_images, image_size=args.image_size)
    return TuneConfig(base=base, directory=args.dir or default_directory(base, args.tuner),
                      tuner=args.tuner, max_trials=args.max_trials,
                      executions_per_trial=args.executions_per_trial,
                      max_epochs=args.max_epochs, validation_fraction=args.validation_fraction,
                      overwrite=args.overwrite,
                      unfrozen_choices=_int_list(args.unfrozen_choices, "--unfrozen-choices"))


def _int_list(text, flag):
    from tftransfer.errors import UserError

    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(f"{flag} expects comma-separated integers such as 0,3,-1; "
                        f"got {text!r}.") from None


def run(args) -> dict:
    from tftransfer.tuning.search import tune

    return tune(config_from_args(args), verbose=not args.quiet)
