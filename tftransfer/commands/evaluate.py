"""``evaluate``: clean and adversarial test accuracy of a model."""

from __future__ import annotations

from tftransfer.commands.common import add_attack_arguments, add_data_arguments, attack_config


def register(subparsers):
    parser = subparsers.add_parser(
        "evaluate", help="test accuracy of a model, clean and under a PGD attack",
        description="Evaluates a model on a dataset's test split; with --attack also under PGD "
                    "(cleverhans' implementation unless --attack-impl ours).")
    parser.add_argument("--model", required=True, help="model directory, .keras file or name")
    parser.add_argument("--dataset", required=True, help="TFDS name or image folder")
    parser.add_argument("--max-examples", type=int, default=None,
                        help="evaluate on a fixed stratified subset of this many test images")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--attack-impl", choices=("cleverhans", "ours"), default="cleverhans")
    add_attack_arguments(parser, default_steps=20)
    add_data_arguments(parser)
    parser.set_defaults(run=run)
    return parser


def run(args) -> dict:
    import tftransfer
    from tftransfer.evaluation import evaluate_on_dataset

    model = tftransfer.load_model(args.model)
    result = evaluate_on_dataset(model, args.dataset, args.data_dir, args.download,
                                 attack_config(args), args.max_examples, args.batch_size,
                                 args.attack_impl)
    result["model"] = args.model
    return result
