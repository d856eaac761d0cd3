"""Source models: names to model directories (local, published), loading and saving model
files, and the checks on untrusted SavedModels.
"""
