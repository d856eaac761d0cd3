"""How much of a source model the replication's "last stage" setting fine-tunes.

Usage: python -m tftransfer.report.analyses.stage_parameters [MODEL]
       (default saved_models/cifar10-resnet20-l2-eps0.5)

Prints the weights (trainable and BatchNorm statistics alike, as stored in model.keras) of the
whole model and of the blocks that ``--unfrozen-blocks 3`` unfreezes (``finetune.freeze``'s
choice), excluding the classification head, which the transfer replaces.
"""

from __future__ import annotations

import sys

from tftransfer import finetune
from tftransfer.models import architectures
from tftransfer.sources import saving


def weights_in(layers) -> int:
    return sum(int(w.numpy().size) for layer in layers for w in layer.weights)


def main(model_ref: str = "saved_models/cifar10-resnet20-l2-eps0.5") -> None:
    model = saving.load_model(model_ref)
    blocks = finetune.unfrozen_block_names(model, 3)
    prefixes = tuple(f"{block}." for block in blocks)
    head = architectures.head_name(model)
    body = [layer for layer in model.layers if layer.name != head]
    stage = [layer for layer in body if layer.name.startswith(prefixes)]
    total, unfrozen = weights_in(body), weights_in(stage)
    print(f"{model_ref}: blocks {', '.join(blocks)} hold {unfrozen:,} of the {total:,} weights "
          f"outside the head ({unfrozen / total:.0%})")


if __name__ == "__main__":
    main(*sys.argv[1:])
