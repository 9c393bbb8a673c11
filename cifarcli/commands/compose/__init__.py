"""Composition shared by the commands: config slices in, data, model and training state out.

This is the only place where data, models and engine meet (STYLE: peers do not import each
other); each command calls a few of these functions and stays a screen long. One module per
noun: `device` (where and in what precision), `data` (labels, split, loaders), `model` (built
for training or rebuilt from a checkpoint) and `training` (optimizer, schedule, hooks, files).
"""

from cifarcli.commands.compose.data import (
    DataBundle, LabelSet, PickedImages, build_data, eval_loader, preview_augmented, select_labels, steps_per_epoch, test_images,
)  # fmt: skip
from cifarcli.commands.compose.device import (
    device_for, joined_ranks, memory_format_name, precision_facts, run_autocast, run_precision, use_channels_last,
)  # fmt: skip
from cifarcli.commands.compose.model import (
    WHITENING_IMAGES, LoadedRun, check_checkpoint_classes, load_trained_model, prepare_model, run_predictions,
)  # fmt: skip
from cifarcli.commands.compose.training import (
    backbone_freezer, build_train_state, check_for_ranks, epoch_hooks, for_ranks, out_of_memory_as_error, run_files, run_info, step_settings, summary_at_start,
)  # fmt: skip

__all__ = [
    "DataBundle", "LabelSet", "LoadedRun", "PickedImages", "WHITENING_IMAGES", "backbone_freezer", "build_data",
    "build_train_state", "check_checkpoint_classes", "check_for_ranks", "device_for", "epoch_hooks", "eval_loader", "for_ranks", "joined_ranks", "load_trained_model",
    "memory_format_name", "out_of_memory_as_error", "precision_facts", "prepare_model", "preview_augmented",
    "run_autocast", "run_files", "run_info", "run_precision", "run_predictions", "select_labels", "step_settings",
    "steps_per_epoch", "summary_at_start", "test_images", "use_channels_last",
]  # fmt: skip
