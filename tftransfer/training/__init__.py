"""Training a source model (``pretrain``) and what any training run shares: optimizers and
schedules, callbacks, checkpoints for resume, seeds and precision.
"""
