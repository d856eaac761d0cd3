"""PyTorch checkpoints -> Keras models: reading, mapping weights by name, and verifying the
converted logits against PyTorch.
"""
