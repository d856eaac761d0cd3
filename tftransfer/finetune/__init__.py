"""Fine-tuning a source on a target: the network with its new head, the run (cached trunk
features, compiled multi-epoch loop, run directory) and its result row.

    from tftransfer import finetune
    result = finetune.fine_tune(TransferConfig(target="mnist", ...))

This face is the one import path of the names below; the modules behind it: ``networks`` (the
new head, freezing, the compiled trainer), ``run`` (``fine_tune``), ``run_cache`` (what
consecutive runs share), ``loop`` and ``compiled_loop`` (training and the test curve),
``warmup`` (a two-phase fine-tune's head warm-up), ``multi_seed`` and ``multi_seed_loop``
(several seeds of one cell trained together), ``rundir`` (a run directory's record),
``result`` (the result row) and ``convergence`` (whether the training loss still fell).
"""

from tftransfer.finetune.loop import use_compiled_loop
from tftransfer.finetune.networks import (HEAD_NAME, Network, attach_head, build_network,
                                          classification_loss, feature_boundary, freeze,
                                          head_initializer, set_normalization,
                                          unfrozen_block_names)
from tftransfer.finetune.run import (augments, default_run_dir, feature_key, fine_tune,
                                     normalization_statistics, run_indices)
from tftransfer.finetune.multi_seed import SeedNetworks, batch_refusal, fine_tune_seeds
from tftransfer.finetune.run_cache import RunCache

__all__ = ["HEAD_NAME", "Network", "RunCache", "SeedNetworks", "attach_head", "augments",
           "batch_refusal", "build_network", "classification_loss", "default_run_dir",
           "feature_boundary", "feature_key", "fine_tune", "fine_tune_seeds", "freeze",
           "head_initializer", "normalization_statistics", "run_indices", "set_normalization",
           "unfrozen_block_names", "use_compiled_loop"]
