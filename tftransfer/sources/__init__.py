"""Source models: names to model directories (local, published), loading and saving model
files, the checks on untrusted SavedModels, and the behavioural check of converted ImageNet
models (``behaviour``).
"""
