"""Fine-tuning a source on a target: the network with its new head, the run (cached trunk
features, compiled multi-epoch loop, run directory) and its result row.
"""
