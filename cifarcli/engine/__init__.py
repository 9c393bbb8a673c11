"""The training engine: optimizers, schedules, the train/eval loops, checkpoints, the LR finder."""
