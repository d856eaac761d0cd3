"""Sweeps: grids of fine-tuning runs from grid files, their cells and shards, resumable
execution and the result files.
"""
