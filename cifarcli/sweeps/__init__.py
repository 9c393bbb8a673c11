"""Sweeps: many trainings of one base config, each a normal run folder (see `spec` and `study`)."""
