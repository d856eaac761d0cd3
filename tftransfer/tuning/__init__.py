"""Hyperparameter search for fine-tuning with keras-tuner, and the retrain of the best trial.
"""
