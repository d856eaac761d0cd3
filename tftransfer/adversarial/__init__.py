"""The inner maximization: the PGD-family attacks, the adversarial ``train_step``, the
catastrophic-overfitting guard and robust evaluation.
"""
