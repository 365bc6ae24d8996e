"""The training engine: configs, the training loop, checkpoints, evaluation, comparisons.

Imports the inner rings (core, models, data, metrics, losses) and viz; nothing inside imports it.
"""
