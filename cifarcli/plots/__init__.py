"""Matplotlib figures: arrays in, file path out."""
