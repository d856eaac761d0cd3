"""``evaluate``: clean and adversarial test accuracy of a model."""

from __future__ import annotations

from tftransfer.commands.common import (add_attack_arguments, add_data_arguments, attack_config,
                                        positive_int)


def register(subparsers):
    parser = subparsers.add_parser(
        "evaluate", help="test accuracy of a model, clean and under PGD or AutoAttack",
        description="Evaluates a model on a dataset's test split; with --attack also under PGD "
                    "(cleverhans' implementation unless --attack-impl ours; --restarts K) or, "
                    "with --attack-method autoattack, AutoAttack's standard version (the "
                    "clean, per-attack and final robust accuracy).")
    parser.add_argument("--model", required=True,
                        help="model directory, .keras file, SavedModel directory or name")
    add_trust_saved_model_argument(parser)
    parser.add_argument("--dataset", required=True, help="TFDS name or image folder")
    parser.add_argument("--max-examples", type=positive_int, default=None,
                        help="evaluate on a fixed stratified subset of this many test images")
    parser.add_argument("--batch-size", type=positive_int, default=256,
                        help="evaluation batch size")
    parser.add_argument("--attack-impl", choices=("cleverhans", "ours"), default="cleverhans",
                        help="PGD implementation: cleverhans' reference or this package's")
    parser.add_argument("--test-fraction", type=float, default=None,
                        help="held-out share of an image folder without test/ (default: the "
                             "one the model was trained with, else 0.2)")
    parser.add_argument("--restarts", type=positive_int, default=1, metavar="K",
                        help="PGD runs per point, each from its own random start (needs "
                             "--random-start above 1); a point is robust only if all K fail")
    parser.add_argument("--autoattack-state", default=None, metavar="FILE",
                        help="with --attack-method autoattack, keep each finished batch's "
                             "counts in FILE (JSON lines): the same command resumes a killed "
                             "evaluation from it")
    add_attack_arguments(parser, default_steps=20, evaluation_methods={
        "autoattack": "AutoAttack's standard version (Croce & Hein, ICML 2020: APGD-CE, "
                      "APGD-T, FAB-T and Square, each on the points still correct; the worst "
                      "case per point), in TensorFlow; --attack-steps and --attack-impl do "
                      "not apply"})
    add_data_arguments(parser)
    parser.set_defaults(run=run)
    return parser


# saving.TRUST_FLAG, the flag saving.load_model's refusal names (tests/cli_test.py checks they
# agree). Not imported: saving imports Keras, and every command registers its parser on every
# start, so importing it here made even --version wait for TensorFlow (15-20 s when loaded).
TRUST_FLAG = "--trust-saved-model"


def add_trust_saved_model_argument(parser) -> None:
    """``--trust-saved-model``: the flag ``saving.load_model``'s refusal names."""
    parser.add_argument(TRUST_FLAG, action="store_true",
                        help="load a SavedModel that `export` did not write (or whose graph "
                             "has ops beyond pure computation); its ops run with your "
                             "permissions, so only for files you trust")


def run(args) -> dict:
    from tftransfer.sources import hub
    from tftransfer.sources import saving
    from tftransfer.config import recorded_load_options
    from tftransfer.adversarial.evaluation import evaluate_on_dataset

    path = hub.model_dir(args.model)
    model = saving.load_model(path, trust_saved_model=args.trust_saved_model)
    # The run's test fraction, preprocessing and (on its own dataset) keys and splits.
    options = recorded_load_options(saving.read_config(path), args.dataset)
    if args.test_fraction:
        options["test_fraction"] = args.test_fraction
    implementation = "autoattack" if args.attack_method == "autoattack" else args.attack_impl
    result = evaluate_on_dataset(model, args.dataset, args.data_dir, args.download,
                                 attack_config(args), args.max_examples, args.batch_size,
                                 implementation, load_options=options, restarts=args.restarts,
                                 autoattack_state=args.autoattack_state)
    result["model"] = args.model
    return result
