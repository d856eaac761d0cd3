"""Network architectures: the registry that describes every model's layout (blocks, stages,
head), the Keras ResNets and WideResNets, and their PyTorch twins for checkpoint checks.
"""
