"""Influence functions of a fine-tuned run's head: the Hessian-vector maths, the ranking of
training images, the loading of runs and the plots.
"""
