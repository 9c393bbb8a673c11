"""The experiment schema and its loader: YAML file < `--set` overrides, validated once, frozen.

Every other module receives a frozen slice of `ExperimentConfig` (`cfg.optim`, `cfg.data`, ...)
and never reads the YAML or the CLI itself.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from cifarcli import escape
from cifarcli.errors import ConfigError
from cifarcli.yaml_reader import MAX_YAML_BYTES, YamlProblem, load_yaml

# The registries (models.MODELS, engine.optim.OPTIMIZERS, ...) are keyed by exactly these
# names; a test holds each registry to its tuple, so a typo fails at validation with the list.
# Each tuple is derived from its Literal, so the two cannot drift apart.
DatasetName = Literal["cifar10", "cifar100", "folder", "npz"]
ModelName = Literal["mlp", "simple_cnn", "resnet9", "resnet18", "resnet34", "resnet50", "speednet"]
OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop"]
ScheduleName = Literal["onecycle", "cosine", "cosine_restarts", "multistep", "constant"]
LrSuggestionName = Literal["steepest", "min_div10", "valley"]

DATASET_NAMES: tuple[str, ...] = get_args(DatasetName)
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)
CIFAR_DATASET_NAMES = ("cifar10", "cifar100")  # downloaded archives, 32x32
CUSTOM_DATASET_NAMES = ("folder", "npz")       # the user's own images, converted from data.path
OPTIMIZER_NAMES: tuple[str, ...] = get_args(OptimizerName)
SCHEDULE_NAMES: tuple[str, ...] = get_args(ScheduleName)
LR_SUGGESTION_NAMES: tuple[str, ...] = get_args(LrSuggestionName)

# Bounds that keep a valid config from failing later: seeds go to torch.manual_seed (which takes
# up to 2**64 - 1) and numpy's SeedSequence; epoch counts and epoch-valued floats stay within
# train.epochs' range, so step counts never overflow.
MAX_SEED = 2**63 - 1
MAX_EPOCHS = 10_000
MAX_STEPS = 1_000_000
MAX_NAME_BYTES = 255  # one file or folder name (NAME_MAX of ext4, xfs, btrfs, tmpfs, APFS)
MAX_PATH_BYTES = 4096  # a whole path (PATH_MAX on Linux)


def _usable_path(path: Path) -> Path:
    """A path the operating system can take: no NUL byte, no name or whole path over its length limit."""
    text = str(path)
    if "\x00" in text:
        raise ValueError("a path cannot hold a NUL character")
    if len(os.fsencode(text)) > MAX_PATH_BYTES:
        raise ValueError(f"the path is longer than {MAX_PATH_BYTES} bytes")
    for part in path.parts:
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise ValueError(f"the name {escape.clip(part, 40)!r} is longer than {MAX_NAME_BYTES} bytes, the file system limit")
    return path


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("it cannot hold a NUL character")
    return text


UsablePath = Annotated[Path, AfterValidator(_usable_path)]
PlainText = Annotated[str, AfterValidator(_no_nul)]

# `model.name` may also be an import path `package.module:callable` (a class or a function
# returning an nn.Module); models/custom.py imports it.
MODEL_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
HIDDEN_SIZE_MODELS = ("mlp", "simple_cnn")  # the models whose hidden layer widths model.hidden_sizes sets
# The smallest data.image_size a built-in model takes (each halves the side three times);
# models not listed take any size the schema allows. A test holds each model to its entry.
MODEL_MIN_IMAGE_SIZE = {"simple_cnn": 8, "resnet9": 8, "speednet": 9}
CIFAR_IMAGE_SIZE = 32  # pixels per side of every CIFAR image

BUILTIN_CONFIG_PACKAGE = "cifarcli.configs"
DEFAULT_CONFIG_NAME = "default"


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, nothing changes after load."""

    # allow_inf_nan=False: no setting has a meaning for NaN or infinity (`.nan`, `.inf` in YAML),
    # so every float field, inside lists and tuples too, refuses them at validation.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def is_model_import_path(name: str) -> bool:
    """True when `model.name` names a user's callable (`package.module:callable`) rather than a built-in."""
    return name not in MODEL_NAMES and MODEL_IMPORT_PATH.fullmatch(name) is not None


class DataConfig(Section):
    dataset: DatasetName = Field("cifar10", description="Which data set: cifar10, cifar100, folder (your image folders) or npz (your arrays).")
    path: Optional[UsablePath] = Field(None, description="folder: the folder of class sub-folders (inside train/ and test/, or directly with test_fraction); npz: the training .npz file.")
    test_path: Optional[UsablePath] = Field(None, description="npz: a separate test .npz file; null = split data.test_fraction off data.path.")
    test_fraction: Optional[float] = Field(None, gt=0.0, lt=1.0, description="folder, npz: share of each class held out (stratified, split_seed) as the test split; null = a separate test set.")
    image_size: int = Field(CIFAR_IMAGE_SIZE, ge=4, le=512, description="folder, npz: side in pixels every image is resized and centre-cropped to (CIFAR is always 32).")
    root: UsablePath = Field(Path("data"), description="Folder holding downloaded archives and the converted cache.")
    source: Optional[PlainText] = Field(None, max_length=MAX_PATH_BYTES, description="Mirror URL or local archive path; null uses the official address.")
    md5: Optional[str] = Field(None, pattern=r"^[0-9a-fA-F]{32}$", description="Expected md5 of the archive at `source`; null means the official checksum.")
    verify: bool = Field(True, description="Check the archive's md5 before using it.")
    download_timeout_s: float = Field(30.0, gt=0, le=86400, description="Seconds without data before a download attempt is abandoned.")
    download_retries: int = Field(5, ge=0, le=50, description="Extra download attempts after a failure, with exponential back-off.")
    label_mode: Literal["fine", "coarse"] = Field("fine", description="CIFAR-100 labels: fine (100 classes) or coarse (20 superclasses). Ignored for CIFAR-10.")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of the training set held out, stratified, as the validation split.")
    split_seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the validation split (independent of train.seed).")
    batch_size: int = Field(64, ge=1, le=65536, description="Training batch size in images.")
    eval_batch_size: int = Field(1024, ge=1, le=65536, description="Evaluation batch size in images.")
    drop_last: bool = Field(True, description="Drop the last partial training batch (evaluation always keeps it).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where data and model live: auto picks cuda when present.")


class ModelConfig(Section):
    name: str = Field("resnet9", description="Architecture: " + ", ".join(MODEL_NAMES) + ", or an import path package.module:callable returning an nn.Module.")
    pretrained: Optional[UsablePath] = Field(None, description="Torchvision ImageNet weights file (.pth) to start from; torchvision resnets only.")
    freeze_backbone_epochs: int = Field(0, ge=0, le=MAX_EPOCHS, description="With pretrained weights: train only the new head for this many epochs.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout after each hidden fully connected layer (mlp, simple_cnn) or before the head (resnets).")
    hidden_sizes: Optional[list[int]] = Field(None, description="mlp, simple_cnn: widths of the hidden fully connected layers; null = mlp [1024, 512, 256], simple_cnn [256, 128].")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Import-path models only: keyword arguments passed to the callable besides num_classes.")
    whiten_stem: bool = Field(False, description="Initialise the first conv by whitening training-image patches (eigenvectors of their covariance, and their negatives) and freeze its weights.")
    whiten_bias_epochs: Optional[int] = Field(None, ge=0, le=MAX_EPOCHS, description="With whiten_stem: train the first conv's bias for this many epochs, then freeze it; null = it always trains.")
    identity_init: bool = Field(False, description="Start every 3x3 conv (but a whitened stem) as the identity on its first input channels.")
    bn_momentum: Optional[float] = Field(None, gt=0.0, le=1.0, description="BatchNorm running-statistics momentum (weight of the new batch); null = torch's 0.1.")
    bn_train_scale: bool = Field(True, description="Train BatchNorm scales; false holds them at 1 (only the shifts train).")
    logit_scale: float = Field(0.125, gt=0.0, le=100.0, description="Multiply the model's logits by this (e.g. 0.125: ResNet-9 then takes large SGD learning rates); 1 = as built.")

    @field_validator("name")
    @classmethod
    def _known_or_import_path(cls, name: str) -> str:
        if name not in MODEL_NAMES and not is_model_import_path(name):
            choices = ", ".join(f"'{n}'" for n in MODEL_NAMES)
            # A literal_error, so the message reads like every other choice list.
            raise PydanticCustomError("literal_error", f"Input should be {choices} or an import path like mymodels:Net")
        top_level = name.partition(":")[0].split(".")[0]
        if is_model_import_path(name) and top_level in sys.stdlib_module_names:
            # No model lives there, and a checkpoint's config must not make cifar import os or subprocess.
            raise ValueError(f"{name!r} names Python's standard library ({top_level}), not a model; "
                             "use a module of your own, e.g. mymodels:Net")
        return name

    @field_validator("hidden_sizes")
    @classmethod
    def _positive_widths(cls, sizes: Optional[list[int]]) -> Optional[list[int]]:
        if sizes is not None and not all(1 <= size <= 65536 for size in sizes):
            raise ValueError("each hidden size must be between 1 and 65536, e.g. [512, 256]")
        return sizes


class OptimConfig(Section):
    name: OptimizerName = Field("sgd", description="Optimizer: " + ", ".join(OPTIMIZER_NAMES) + ".")
    lr: float = Field(0.05, gt=0, description="Peak learning rate (the schedule scales it per step), in optim.units.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD/RMSprop momentum.")
    nesterov: bool = Field(True, description="Nesterov momentum (SGD only).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam/AdamW betas.")
    eps: float = Field(1e-8, gt=0, description="Adam/AdamW/RMSprop epsilon.")
    weight_decay: float = Field(5e-4, ge=0.0, description="L2 weight decay (decoupled for AdamW), in optim.units.")
    decay_norm_and_bias: bool = Field(False, description="Also decay norm-layer weights and biases (usually exempt).")
    units: Literal["torch", "per_1024_images"] = Field("torch", description="torch: lr and weight_decay go to torch as given; per_1024_images: given per 1024 images, decoupled from batch size and momentum (see README).")
    norm_bias_lr_scale: float = Field(1.0, gt=0.0, description="LR multiplier for BatchNorm shifts (their weight decay per step stays the same).")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError("each beta must be in [0, 1), e.g. [0.9, 0.999]")
        return betas


class LossConfig(Section):
    label_smoothing: float = Field(0.2, ge=0.0, lt=1.0, description="Cross-entropy label smoothing.")
    l1_weight: float = Field(0.0, ge=0.0, description="Weight of the L1 penalty on trainable conv and linear weights (0 = off).")


class ScheduleConfig(Section):
    name: ScheduleName = Field("onecycle", description="LR schedule, stepped per batch: " + ", ".join(SCHEDULE_NAMES) + ".")
    warmup_epochs: float = Field(0.0, ge=0.0, le=MAX_EPOCHS, description="Linear warm-up from lr/warmup_div to the schedule, in epochs (not for onecycle).")
    warmup_div: float = Field(25.0, ge=1.0, description="Warm-up starts at lr / warmup_div.")
    peak_epoch: Optional[float] = Field(5.0, gt=0, le=MAX_EPOCHS, description="onecycle: epoch at which the LR peaks (wins over peak_fraction).")
    peak_fraction: float = Field(0.3, gt=0, lt=1, description="onecycle: share of the run spent rising, used when peak_epoch is null.")
    initial_div: float = Field(100.0, ge=1.0, description="onecycle: the LR starts at lr / initial_div.")
    final_div: float = Field(100.0, ge=1.0, description="onecycle: the LR ends at lr / initial_div / final_div.")
    three_phase: bool = Field(False, description="onecycle: add a third phase annealing to the final LR.")
    anneal: Literal["cos", "linear"] = Field("linear", description="onecycle: annealing shape, cos or linear.")
    min_lr: float = Field(0.0, ge=0.0, description="cosine, cosine_restarts: the lowest LR.")
    restart_epochs: float = Field(10.0, gt=0, le=MAX_EPOCHS, description="cosine_restarts: epochs in the first cycle.")
    restart_mult: int = Field(1, ge=1, le=100, description="cosine_restarts: each cycle is this many times longer than the last.")
    milestones: list[Annotated[float, Field(ge=0, le=MAX_EPOCHS)]] = Field(default_factory=lambda: [50.0, 75.0], max_length=1000, description="multistep: epochs at which the LR is multiplied by gamma.")
    gamma: float = Field(0.1, gt=0, le=1, description="multistep: LR factor at each milestone.")
    span_epochs: Optional[int] = Field(None, ge=1, le=MAX_EPOCHS, description="Epochs the schedule is drawn over; later epochs train at its final LR (set by `cifar train --resume RUN --extend-schedule continue`); null = train.epochs.")


class CropConfig(Section):
    enabled: bool = Field(True, description="Random crop after padding.")
    padding: int = Field(4, ge=0, le=16, description="Pixels padded on every side before cropping back to the image size.")
    padding_mode: Literal["zeros", "reflect"] = Field("reflect", description="Padding fill: zeros or reflect.")


class FlipConfig(Section):
    enabled: bool = Field(True, description="Random horizontal flip.")
    probability: float = Field(0.5, ge=0.0, le=1.0, description="Chance each image is flipped (mode random).")
    mode: Literal["random", "alternating"] = Field("random", description="random: each image flipped with `probability` in every epoch; alternating: a seeded random half in the first epoch, then each image the other way in every next epoch, so every two epochs show each image both ways.")


class CutoutConfig(Section):
    enabled: bool = Field(True, description="Cutout / random erasing of square patches.")
    size: int = Field(8, ge=1, le=32, description="Side of each erased square, in pixels.")
    count: int = Field(1, ge=1, le=16, description="Squares erased per image.")
    probability: float = Field(1.0, ge=0.0, le=1.0, description="Chance each image gets cutout.")


class ColorJitterConfig(Section):
    enabled: bool = Field(False, description="Random brightness/contrast/saturation/hue.")
    brightness: float = Field(0.2, ge=0.0, le=1.0, description="Brightness factor drawn from [1-b, 1+b].")
    contrast: float = Field(0.2, ge=0.0, le=1.0, description="Contrast factor drawn from [1-c, 1+c].")
    saturation: float = Field(0.2, ge=0.0, le=1.0, description="Saturation factor drawn from [1-s, 1+s].")
    hue: float = Field(0.0, ge=0.0, le=0.5, description="Hue shift drawn from [-h, h], in turns of the colour wheel.")
    probability: float = Field(0.8, ge=0.0, le=1.0, description="Chance each image is jittered.")


class RotationConfig(Section):
    enabled: bool = Field(False, description="Small random rotation.")
    max_degrees: float = Field(10.0, gt=0.0, le=45.0, description="Angle drawn from [-max, max] degrees.")
    probability: float = Field(1.0, ge=0.0, le=1.0, description="Chance each image is rotated.")


class MixConfig(Section):
    mixup_alpha: float = Field(0.0, ge=0.0, le=100.0, description="MixUp Beta(alpha, alpha) parameter; 0 = off.")
    cutmix_alpha: float = Field(0.0, ge=0.0, le=100.0, description="CutMix Beta(alpha, alpha) parameter; 0 = off.")
    probability: float = Field(1.0, ge=0.0, le=1.0, description="Chance each image is mixed with another.")
    cutmix_share: float = Field(0.5, ge=0.0, le=1.0, description="With both on: share of mixed images that use CutMix.")
    off_epoch: Optional[int] = Field(None, ge=0, le=MAX_EPOCHS, description="Stop mixing from this epoch on (0-based); null = never.")


class AugmentConfig(Section):
    crop: CropConfig = CropConfig()
    flip: FlipConfig = FlipConfig()
    cutout: CutoutConfig = CutoutConfig()
    color_jitter: ColorJitterConfig = ColorJitterConfig()
    rotation: RotationConfig = RotationConfig()
    mix: MixConfig = MixConfig()


# Settings a newer cifar replaced: reading one from a user's YAML or --set is a one-line error
# saying what took its place; run folders written before the change are read without them.
REMOVED_TRAIN_SETTINGS = {
    "amp_on_cpu": "removed: train.amp=auto (the default) now picks bf16 on a CPU with native bf16 and fp32 elsewhere; "
    "set train.amp=bf16 or train.amp=off to choose yourself",
    "log_every_steps": "removed: it was split into train.tensorboard_every_steps, train.sync_every_steps and "
    "train.progress_every_steps",
}


class TrainConfig(Section):
    epochs: int = Field(24, ge=1, le=MAX_EPOCHS, description="Training epochs.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed for weights, shuffling and augmentation.")
    deterministic: bool = Field(False, description="Deterministic kernels: two runs on one machine are bit-identical (slower).")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field("auto", description="Autocast: auto (bf16 where the GPU or CPU has it natively, else fp16 with a GradScaler on CUDA, fp32 on the CPU), bf16, fp16 (with a GradScaler), off (fp32).")
    grad_clip_norm: Optional[float] = Field(None, gt=0, description="Clip the global gradient norm to this value; null = off.")
    grad_clip_value: Optional[float] = Field(None, gt=0, description="Clip each gradient element to [-v, v]; null = off.")
    ema_decay: Optional[float] = Field(None, gt=0, lt=1, description="Keep an EMA of the weights with this decay per step and evaluate it too; null = off.")
    ema_every_steps: int = Field(5, ge=1, le=1000, description="Fold the weights into the EMA every this many steps (decay ** k per update, so it tracks the per-step average).")
    compile: bool = Field(False, description="torch.compile the model (CUDA recommended).")
    channels_last: bool = Field(True, description="Use the channels_last memory format for images and conv weights (CPU and CUDA).")
    overfit_batches: int = Field(0, ge=0, le=MAX_STEPS, description="Train on this many fixed batches only (sanity check); 0 = off.")
    nonfinite_loss: Literal["stop", "skip"] = Field("stop", description="On a NaN/inf loss: stop the run, or skip that step.")
    sync_every_steps: int = Field(50, ge=1, le=100000, description="Read the losses back from the device and check them for NaN/inf every this many steps (and at each epoch end); each read waits for the device.")
    tensorboard_every_steps: int = Field(20, ge=1, le=100000, description="Write the per-step loss and LR to TensorBoard every this many steps.")
    progress_every_steps: int = Field(1, ge=1, le=100000, description="Refresh the progress bar (step, LR, speed) every this many steps; it reads nothing from the device.")
    lookahead_every_steps: Optional[int] = Field(None, ge=1, le=100000, description="Lookahead: every this many steps the weights move to an average of themselves that grows smoother over the run, and end as that average; null = off.")
    lookahead_decay: float = Field(0.95, ge=0.0, lt=1.0, description="Lookahead: the average's decay at the end of the run (it rises as (step / total steps)^3 from 0).")
    target_accuracy: Optional[float] = Field(None, gt=0.0, le=1.0, description="Record the first epoch and wall time at which accuracy on target_split reached this (e.g. 0.9), and the epoch from which it stayed there; null = off.")
    target_split: Literal["val", "test"] = Field("val", description="Split whose accuracy target_accuracy watches: val (the held-out split) or test (scored after every epoch; for reproducing a published time-to-target only).")
    stop_at_target: bool = Field(False, description="End the run at the first epoch that reaches target_accuracy (checkpoints and evaluation as usual).")
    sync_batchnorm: bool = Field(False, description="Under torchrun with several GPUs: BatchNorm statistics over the global batch (SyncBatchNorm) instead of each process's share; no effect in one process.")

    @field_validator("amp", mode="before")
    @classmethod
    def _unquoted_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads an unquoted `off` as false

    @model_validator(mode="after")
    def _one_clip(self) -> "TrainConfig":
        if self.grad_clip_norm is not None and self.grad_clip_value is not None:
            raise ValueError("set grad_clip_norm or grad_clip_value, not both")
        return self

    @model_validator(mode="after")
    def _stop_needs_target(self) -> "TrainConfig":
        if self.stop_at_target and self.target_accuracy is None:
            raise ValueError("stop_at_target needs target_accuracy, e.g. train.target_accuracy=0.9")
        return self


class EvalConfig(Section):
    split: Literal["test", "val"] = Field("test", description="Which split `cifar evaluate` scores.")
    tta_flip: bool = Field(True, description="Average predictions over the image and its horizontal flip.")
    tta_shift: bool = Field(True, description="Also average over the image moved one pixel up-left and one down-right (with their flips when tta_flip): 6 views.")
    superclass: bool = Field(True, description="CIFAR-100 fine labels: also score at the 20-superclass level.")


class LrFindConfig(Section):
    start_lr: float = Field(1e-7, gt=0, description="First LR of the sweep.")
    end_lr: float = Field(10.0, gt=0, description="Last LR of the sweep.")
    num_iter: int = Field(100, ge=5, le=100000, description="Steps in the sweep.")
    mode: Literal["exp", "linear"] = Field("exp", description="LR spacing: exp (geometric) or linear.")
    smoothing: float = Field(0.98, ge=0.0, lt=1.0, description="EMA factor of the smoothed loss.")
    diverge_factor: float = Field(5.0, gt=1.0, description="Stop when the smoothed loss exceeds this multiple of its best.")
    burn_in_share: float = Field(0.1, ge=0.0, lt=0.5, description="Share of the first steps the suggestions ignore, so an early spike does not drive them.")
    suggestion: LrSuggestionName = Field("valley", description="Which suggestion becomes the peak LR: " + ", ".join(LR_SUGGESTION_NAMES) + ".")

    @model_validator(mode="after")
    def _increasing(self) -> "LrFindConfig":
        if self.end_lr <= self.start_lr:
            raise ValueError("end_lr must be greater than start_lr")
        return self


class ReportConfig(Section):
    misclassified_count: int = Field(25, ge=1, le=100, description="Most confidently wrong test images shown.")
    augment_images_per_class: int = Field(4, ge=1, le=16, description="Augmented training images per class in augmentations.png.")


class VisualizeConfig(Section):
    layer: Optional[str] = Field(None, max_length=200, description="Layer for feature maps and Grad-CAM; null = the last conv layer.")
    num_images: int = Field(4, ge=1, le=32, description="Test images to show.")
    image_indices: Optional[list[Annotated[int, Field(ge=0, le=MAX_STEPS)]]] = Field(None, max_length=32, description="Exact test-set indices to show; null = random with image_seed.")
    image_seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed for picking test images.")
    max_feature_maps: int = Field(32, ge=1, le=512, description="Channels shown per feature-map grid.")


class LandscapeConfig(Section):
    split: Literal["train", "val", "test"] = Field("train", description="Images the loss is measured on: train (the training split, not augmented), val or test.")
    batches: int = Field(4, ge=1, le=1000, description="Evaluation batches (of data.eval_batch_size images) the loss is averaged over, at every grid point.")
    points: int = Field(21, ge=3, le=201, description="Grid points per direction, odd so that the centre is the trained weights (points x points evaluations).")
    span: float = Field(1.0, gt=0, le=100, description="The grid runs from -span to +span along each filter-normalised direction.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the two random directions.")
    from_init: bool = Field(False, description="Also map the loss around the initial weights (rebuilt from train.seed), beside the trained one.")

    @field_validator("points")
    @classmethod
    def _odd(cls, points: int) -> int:
        if points % 2 == 0:
            raise ValueError(f"must be odd so the grid's centre is the trained weights, e.g. {points + 1}")
        return points


class RunConfig(Section):
    name: str = Field("default", min_length=1, max_length=80, pattern=r"^[A-Za-z0-9._-]+$", description="Run name, part of the run folder's name.")
    root: UsablePath = Field(Path("runs"), description="Folder under which run folders are created.")
    tensorboard: bool = Field(True, description="Write TensorBoard event files.")


class ExperimentConfig(Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    loss: LossConfig = LossConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    lr_find: LrFindConfig = LrFindConfig()
    report: ReportConfig = ReportConfig()
    visualize: VisualizeConfig = VisualizeConfig()
    landscape: LandscapeConfig = LandscapeConfig()
    run: RunConfig = RunConfig()
    lr_source: Optional[PlainText] = Field(None, max_length=2 * MAX_PATH_BYTES, description="Set by `--lr-from`: the lr_find.json whose suggestion became optim.lr.")

    @model_validator(mode="after")
    def _pretrained_needs_torchvision_resnet(self) -> "ExperimentConfig":
        if self.model.pretrained is not None and self.model.name not in ("resnet18", "resnet34", "resnet50"):
            raise ValueError(f"model.pretrained works with resnet18, resnet34, resnet50, not {self.model.name}")
        return self

    @model_validator(mode="after")
    def _model_fields_fit_the_model(self) -> "ExperimentConfig":
        model = self.model
        custom = is_model_import_path(model.name)
        if model.hidden_sizes is not None and model.name not in HIDDEN_SIZE_MODELS:
            raise ValueError(f"model.hidden_sizes applies to {' and '.join(HIDDEN_SIZE_MODELS)}, not {model.name}; set it to null")
        if model.kwargs and not custom:
            raise ValueError(f"model.kwargs applies to import-path models (package.module:callable), not {model.name}; set it to {{}}")
        if custom and model.dropout > 0:
            raise ValueError(f"model.dropout applies to the built-in models; give {model.name} its own through model.kwargs")
        if custom and model.freeze_backbone_epochs > 0:
            raise ValueError(f"model.freeze_backbone_epochs needs a built-in model (it keeps only the head `fc` training), not {model.name}")
        return self

    @model_validator(mode="after")
    def _target_split_exists(self) -> "ExperimentConfig":
        if self.train.target_accuracy is not None and self.train.target_split == "val" and self.data.val_fraction == 0:
            raise ValueError("train.target_split: val needs a validation split, but data.val_fraction is 0; "
                             "set data.val_fraction=0.1 or train.target_split=test")
        return self

    @model_validator(mode="after")
    def _min_lr_below_peak(self) -> "ExperimentConfig":
        if self.schedule.name in ("cosine", "cosine_restarts") and self.schedule.min_lr > self.optim.lr:
            raise ValueError(f"schedule.min_lr: {self.schedule.min_lr} is above the peak LR optim.lr ({self.optim.lr}); "
                             "set it below, e.g. optim.lr / 100")
        return self

    @model_validator(mode="after")
    def _whitening_fits_the_model(self) -> "ExperimentConfig":
        if self.model.whiten_bias_epochs is not None and not self.model.whiten_stem:
            raise ValueError("model.whiten_bias_epochs applies with model.whiten_stem=true; set it to null")
        return self

    @model_validator(mode="after")
    def _data_source_fits_the_dataset(self) -> "ExperimentConfig":
        problem = data_source_problem(self.data)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _image_size_fits_model_and_augment(self) -> "ExperimentConfig":
        size, name = self.data.image_size, self.model.name
        smallest = MODEL_MIN_IMAGE_SIZE.get(name, 1)
        if size < smallest:
            raise ValueError(f"data.image_size: {name} needs images of at least {smallest}x{smallest} pixels "
                             f"(its max-pools halve the side three times), got {size}; use a larger size or mlp, resnet18/34/50")
        crop = self.augment.crop
        if crop.enabled and crop.padding_mode == "reflect" and crop.padding >= size:
            raise ValueError(f"augment.crop.padding: reflect padding {crop.padding} must be smaller than data.image_size {size}")
        if self.augment.cutout.enabled and self.augment.cutout.size > size:
            raise ValueError(f"augment.cutout.size: {self.augment.cutout.size} is larger than data.image_size {size}")
        return self


def data_source_problem(data: DataConfig) -> str:
    """Why `data.path`, `test_path`, `test_fraction` and `image_size` do not fit `data.dataset` ("" when they do)."""
    if data.dataset in CIFAR_DATASET_NAMES:
        for field in ("path", "test_path", "test_fraction"):
            if getattr(data, field) is not None:
                return f"data.{field} applies to the folder and npz data sets, not {data.dataset}; set it to null"
        if data.image_size != CIFAR_IMAGE_SIZE:
            return (f"data.image_size: {data.dataset} images are {CIFAR_IMAGE_SIZE}x{CIFAR_IMAGE_SIZE}; "
                    f"image_size (got {data.image_size}) applies to the folder and npz data sets")
        return ""
    if data.path is None:
        what = "a folder of class sub-folders" if data.dataset == "folder" else "the training .npz file"
        return f"data.path is required with data.dataset {data.dataset}: set it to {what}"
    if data.dataset == "folder" and data.test_path is not None:
        return "data.test_path applies to npz; a folder holds its test split in test/ (or set data.test_fraction)"
    if data.dataset == "npz" and (data.test_path is None) == (data.test_fraction is None):
        return "data.dataset npz needs exactly one of data.test_path (a test .npz file) and data.test_fraction"
    return ""


# --------------------------------------------------------------------------- loading


def builtin_config_names() -> list[str]:
    """Names of the configs shipped inside the package (usable as `-c NAME`)."""
    folder = resources.files(BUILTIN_CONFIG_PACKAGE)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_config_path(path: Path | None) -> Path:
    """Return the file for `--config`: a real path, or the name of a built-in config."""
    if path is None:
        path = Path(DEFAULT_CONFIG_NAME)
    try:
        if path.is_file():
            return path
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise ConfigError(f"cannot read config file {path}: {escape.terminal(exc.strerror or exc)}") from exc
    if not path.suffix and path.name in builtin_config_names() and len(path.parts) == 1:
        return Path(str(resources.files(BUILTIN_CONFIG_PACKAGE).joinpath(path.name + ".yaml")))
    raise ConfigError(
        f"config file not found: {path}",
        hint="pass an existing YAML file to --config, or a built-in name: " + ", ".join(builtin_config_names()),
    )


def _dotted(parts: Any) -> str:
    """A key path for a message, `optim.lr`; one holding a control character is shown as its repr; a long one is cut."""
    text = ".".join(str(p) for p in parts)
    return escape.clip(text) if text.isprintable() else escape.value(text)


MAX_KEY_PARTS = 8  # `--set a.b.c=...`: the schema is 3 levels deep


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Parse a YAML file with the bounded safe loader; it must hold a mapping (or be empty)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_YAML_BYTES + 1)
        if len(data) > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_YAML_BYTES} bytes, too large for a config file", hint="pass a config YAML file")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {escape.terminal(exc)}") from exc
    try:
        loaded = load_yaml(text)
    except YamlProblem as exc:
        where = f"{path}:{exc.line}" if exc.line is not None else str(path)
        raise ConfigError(f"{where}: {exc.message}", hint=exc.hint) from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (data:, model:, ...), not {type(loaded).__name__}")
    return loaded


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into its key path and its value parsed as a YAML scalar or list."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {escape.value(text)}: expected KEY=VALUE with a dotted key, e.g. --set optim.lr=0.01")
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"--set {escape.value(text)}: empty part in the dotted key {escape.value(key)}, e.g. --set optim.lr=0.01")
    if len(parts) > MAX_KEY_PARTS:
        raise ConfigError(f"--set {_dotted(parts)}: more than {MAX_KEY_PARTS} parts in the key", hint="keys are like optim.lr")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except YamlProblem as exc:
        raise ConfigError(f"--set {_dotted(parts)}: value {escape.value(raw)} is not valid YAML ({exc.message})",
                          hint="quote strings, write lists as [1, 2]" if exc.syntax else exc.hint) from exc  # fmt: skip
    return parts, value


def apply_override(tree: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set `value` at `parts` inside the nested dict `tree`, creating sections as needed."""
    node = tree
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {_dotted(parts)}: {_dotted(parts[: depth + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _field_names_at(loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the section that `loc` (a pydantic error location) points into."""
    model: Any = ExperimentConfig
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def _describe(error: dict[str, Any]) -> str:
    loc = tuple(p for p in error["loc"])
    dotted = _dotted(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        valid = _field_names_at(loc)
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        guess = f"; did you mean {_dotted([*loc[:-1], close[0]])}?" if close else ""
        return f"{dotted}: unknown key{guess} (valid keys here: {', '.join(valid)})"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind == "literal_error":
        message = "must be one of " + message.split("Input should be ", 1)[-1].replace("'", "").replace(" or ", ", ")
        return f"{dotted}: {escape.value(error.get('input'))} is not valid; {message}"
    message = escape.clip(escape.terminal(message[0].lower() + message[1:]))
    got = error.get("input")
    if isinstance(got, dict):  # a section-level check: its message names the fields itself
        return f"{dotted}: {message}" if dotted else message
    return f"{dotted}: {message} (got {escape.value(got)})"


def validate_config(tree: dict[str, Any]) -> ExperimentConfig:
    """Validate a nested dict into the frozen config, or raise ConfigError for the first problem."""
    train = tree.get("train") if isinstance(tree, dict) else None
    if isinstance(train, dict):
        for key, message in REMOVED_TRAIN_SETTINGS.items():
            if key in train:
                raise ConfigError(f"train.{key}: {message}")
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(_describe(errors[0]) + more) from exc


# Settings added after runs were saved without them, with the value that reproduces what such a
# run did (the schema default may differ: the default recipe scales its logits by 1/8).
ADDED_SETTINGS: dict[tuple[str, str], Any] = {("model", "logit_scale"): 1.0}


def validate_saved_config(tree: dict[str, Any]) -> ExperimentConfig:
    """Validate the config a run folder or checkpoint holds; settings a newer cifar removed are dropped.

    A run trained before a setting was removed stays readable (to evaluate, report or resume):
    `train.amp_on_cpu` and `train.log_every_steps` are left out, so the run takes the current
    defaults for what replaced them. A setting added since, whose default is not what the run
    did, gets the value that reproduces it (`ADDED_SETTINGS`).
    """
    train = tree.get("train") if isinstance(tree, dict) else None
    if isinstance(train, dict) and any(key in train for key in REMOVED_TRAIN_SETTINGS):
        kept = {key: value for key, value in train.items() if key not in REMOVED_TRAIN_SETTINGS}
        tree = {**tree, "train": kept}
    for (section, key), before in ADDED_SETTINGS.items():
        part = tree.get(section) if isinstance(tree, dict) else None
        if isinstance(part, dict) and key not in part:
            tree = {**tree, section: {**part, key: before}}
    return validate_config(tree)


def load_saved_config(path: Path) -> ExperimentConfig:
    """The config.yaml of a run folder, read with `validate_saved_config`."""
    return validate_saved_config(read_yaml_mapping(path))


def load_config(path: Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Load the config at `path` (default: the built-in default), apply `--set` overrides, validate."""
    tree = read_yaml_mapping(resolve_config_path(path))
    for text in overrides:
        apply_override(tree, *parse_override(text))
    return validate_config(tree)


def config_to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML text that `load_config` reads back to an equal config."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=False)


def flatten_tree(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {dotted key: value}; an empty section stays one entry."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_tree(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def config_differences(a: ExperimentConfig, b: ExperimentConfig) -> list[str]:
    """The dotted keys whose values differ between two configs, in schema order."""
    flat_a, flat_b = flatten_tree(a.model_dump(mode="json")), flatten_tree(b.model_dump(mode="json"))
    return [key for key in flat_a if flat_a[key] != flat_b.get(key)]


def config_with(cfg: ExperimentConfig, overrides: dict[str, Any]) -> ExperimentConfig:
    """A new validated config with dotted-key overrides applied (the original is untouched)."""
    tree = cfg.model_dump(mode="json")
    for dotted, value in overrides.items():
        apply_override(tree, dotted.split("."), value)
    return validate_config(tree)
