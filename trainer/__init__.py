"""Offline side of Aisle: generated data, training, export and evaluation, run as ``python -m trainer``."""
