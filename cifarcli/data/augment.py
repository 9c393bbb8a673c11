"""Batch augmentations as tensor ops: every image of a batch gets its own random draw.

Images are N x 3 x H x W. Crop and flip work on any dtype (the loader applies them to uint8);
the others take float images in [0, 1] and keep them there. All randomness comes from the
`generator` argument, which must live on the images' device, so a seeded generator gives
the same batch on every run. The one exception is MixUp/CutMix's Beta draws: a rejection
sampler, it would read the device every round, so it runs on a seeded CPU `host_generator`
and its values reach the device in one non-blocking copy.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cifarcli.config import AugmentConfig, MixConfig
from cifarcli.errors import DataError

# Rows: Y, I, Q from R, G, B (NTSC). Hue is a rotation of the (I, Q) plane.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def images_to_chw(images: np.ndarray | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """Return uint8 images given as N x H x W x 3 (the cache's layout) as N x 3 x H x W on `device`."""
    shape, dtype = tuple(images.shape), images.dtype
    if len(shape) != 4 or shape[3] != 3 or str(dtype) not in ("uint8", "torch.uint8"):
        raise DataError(
            f"images: expected uint8 pixels shaped (N, H, W, 3), got shape {shape} dtype {dtype}",
            hint="pass the arrays as the data cache stores them (N x 32 x 32 x 3, uint8)",
        )
    tensor = torch.tensor(images, device=device) if isinstance(images, np.ndarray) else images.to(device or images.device)
    return tensor.permute(0, 3, 1, 2).contiguous()


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as float32 in [0, 1]."""
    return images.to(torch.float32) / 255.0


def normalize(images: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Return `(images - mean) / std` per channel (pass tensors on the images' device to skip a copy)."""
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


def _uniform(count: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator, device=generator.device)


def _chance(count: int, probability: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(count, generator=generator, device=generator.device) < probability


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror out-of-range indices back inside [0, size) without repeating the edge (like F.pad 'reflect')."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def random_crop(images: torch.Tensor, padding: int, padding_mode: str, generator: torch.Generator) -> torch.Tensor:
    """Each image padded by `padding` px (zeros or reflect) and cropped back at its own random offset.

    Reflect needs `padding` smaller than the image side (CIFAR: 32 px, config allows up to 16).
    """
    if padding == 0:
        return images
    count, channels, height, width = images.shape
    device = images.device
    offset_rows = torch.randint(0, 2 * padding + 1, (count, 1), generator=generator, device=device)
    offset_cols = torch.randint(0, 2 * padding + 1, (count, 1), generator=generator, device=device)
    rows = offset_rows + torch.arange(height, device=device)  # (N, H) rows of the padded image
    cols = offset_cols + torch.arange(width, device=device)
    if padding_mode == "reflect":  # index the original image with mirrored indices, no padded copy
        source = images
        rows, cols = _reflect(rows - padding, height), _reflect(cols - padding, width)
    else:
        source = F.pad(images, (padding, padding, padding, padding))
    batch = torch.arange(count, device=device).view(-1, 1, 1, 1)
    channel = torch.arange(channels, device=device).view(1, -1, 1, 1)
    return source[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def random_flip(images: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with chance `probability`."""
    flipped = _chance(images.shape[0], probability, generator)
    return torch.where(_per_image(flipped), images.flip(3), images)


def random_rotation(images: torch.Tensor, max_degrees: float, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Each image, with chance `probability`, rotated about its centre by an angle in [-max, max] degrees.

    Bilinear sampling; corners that come from outside the image are black.
    """
    count = images.shape[0]
    radians = _uniform(count, -max_degrees, max_degrees, generator) * (math.pi / 180.0)
    rotated = _chance(count, probability, generator)
    cos, sin, zero = radians.cos(), radians.sin(), torch.zeros_like(radians)
    theta = torch.stack([cos, -sin, zero, sin, cos, zero], dim=1).view(count, 2, 3).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    turned = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return torch.where(_per_image(rotated), turned, images)


def _luma(images: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(_LUMA_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def rotate_hue(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Each image's hue shifted by its `turns` (fractions of the colour wheel): a rotation in YIQ space."""
    angle = turns.to(torch.float64) * (2 * math.pi)
    cos, sin, one, zero = angle.cos(), angle.sin(), torch.ones_like(angle), torch.zeros_like(angle)
    rotation = torch.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos], dim=1).view(-1, 3, 3)
    to_yiq, to_rgb = _RGB_TO_YIQ.to(angle.device), _YIQ_TO_RGB.to(angle.device)
    matrices = (to_rgb @ rotation @ to_yiq).to(images.dtype)  # (N, 3, 3) colour matrix per image
    return torch.einsum("nij,njhw->nihw", matrices, images).clamp(0.0, 1.0)


def color_jitter(
    images: torch.Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    probability: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Each image, with chance `probability`, gets random brightness, contrast, saturation, then hue.

    Factors are drawn per image from [1-b, 1+b], [1-c, 1+c], [1-s, 1+s]; the hue shift from
    [-hue, hue] turns. Values are clipped to [0, 1] after each step.
    """
    count = images.shape[0]
    brightness_f = _per_image(_uniform(count, 1 - brightness, 1 + brightness, generator))
    contrast_f = _per_image(_uniform(count, 1 - contrast, 1 + contrast, generator))
    saturation_f = _per_image(_uniform(count, 1 - saturation, 1 + saturation, generator))
    hue_turns = _uniform(count, -hue, hue, generator)
    jittered = _chance(count, probability, generator)
    out = (images * brightness_f).clamp(0.0, 1.0)
    mean_luma = _luma(out).mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - mean_luma) * contrast_f + mean_luma).clamp(0.0, 1.0)
    gray = _luma(out)
    out = ((out - gray) * saturation_f + gray).clamp(0.0, 1.0)
    if hue > 0:
        out = rotate_hue(out, hue_turns)
    return torch.where(_per_image(jittered), out, images)


def box_mask(top: torch.Tensor, left: torch.Tensor, box_height: torch.Tensor | int, box_width: torch.Tensor | int, height: int, width: int) -> torch.Tensor:
    """Boolean (..., height, width) mask, True inside the box at (top, left) of the given size."""
    rows = torch.arange(height, device=top.device)
    cols = torch.arange(width, device=top.device)
    bottom, right = top + box_height, left + box_width
    in_rows = (rows >= top[..., None]) & (rows < bottom[..., None])
    in_cols = (cols >= left[..., None]) & (cols < right[..., None])
    return in_rows[..., :, None] & in_cols[..., None, :]


def cutout(images: torch.Tensor, size: int, count: int, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Each image, with chance `probability`, gets `count` black size x size squares.

    Every square lies fully inside the image (top-left corner uniform over the valid
    positions), so it erases exactly size * size pixels; squares may overlap each other.
    """
    images_n, _, height, width = images.shape
    size = min(size, height, width)
    device = images.device
    top = torch.randint(0, height - size + 1, (images_n, count), generator=generator, device=device)
    left = torch.randint(0, width - size + 1, (images_n, count), generator=generator, device=device)
    erased = _chance(images_n, probability, generator)
    mask = box_mask(top, left, size, size, height, width).any(dim=1) & erased.view(-1, 1, 1)
    return images.masked_fill(mask[:, None], 0)


def sample_beta(alpha: float, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` draws of Beta(alpha, alpha) on the generator's device: X / (X + Y) of two Gamma draws.

    Computed as sigmoid(log X - log Y) so that tiny alphas (draws near 0 or 1) do not underflow.
    Pass a CPU generator in the training path: the rejection loop tests its draws on the
    host every round, which on a GPU would be a sync per round.
    """
    boosted = alpha < 1  # Gamma(alpha) = Gamma(alpha + 1) * U^(1 / alpha)
    shape = alpha + 1 if boosted else alpha
    log_ratio = _log_gamma(shape, count, generator) - _log_gamma(shape, count, generator)
    if boosted:
        log_u = torch.log1p(-torch.rand(2, count, generator=generator, device=generator.device))  # U in (0, 1]
        log_ratio = log_ratio + (log_u[0] - log_u[1]) / alpha
    return torch.sigmoid(log_ratio)


def _log_gamma(shape: float, count: int, generator: torch.Generator) -> torch.Tensor:
    """Logs of Gamma(shape, 1) draws, shape >= 1, by Marsaglia and Tsang's method (torch's takes no generator)."""
    device = generator.device
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    log_draw = torch.zeros(count, device=device)
    pending = torch.ones(count, dtype=torch.bool, device=device)
    while bool(pending.any()):  # accepts > 95% per round, so this loops once or twice
        normal = torch.randn(count, generator=generator, device=device)
        log_u = torch.log1p(-torch.rand(count, generator=generator, device=device))
        v = (1 + c * normal) ** 3
        log_v = v.clamp_min(1e-30).log()
        accept = pending & (v > 0) & (log_u < 0.5 * normal**2 + d - d * v + d * log_v)
        log_draw = torch.where(accept, math.log(d) + log_v, log_draw)
        pending &= ~accept
    return log_draw


def _beta_draws(alphas: Sequence[float], count: int, host_generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(len(alphas), count) Beta(alpha, alpha) draws made on the host (1 where alpha is 0), on `device`.

    One copy for all of them: pinned and non-blocking on a GPU, so the device never waits for
    the host and the host never waits for the device.
    """
    if host_generator.device.type != "cpu":
        raise ValueError(f"the Beta draws need a CPU generator, got one on {host_generator.device}")
    rows = [sample_beta(alpha, count, host_generator) if alpha > 0 else torch.ones(count) for alpha in alphas]
    draws = torch.stack(rows)
    if device.type == "cpu":
        return draws
    return draws.pin_memory().to(device, non_blocking=True)


def mixup_cutmix(
    images: torch.Tensor,
    soft_targets: torch.Tensor,
    mixup_alpha: float,
    cutmix_alpha: float,
    probability: float,
    cutmix_share: float,
    generator: torch.Generator,
    host_generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each image, with chance `probability`, with a random partner from the same batch.

    MixUp blends the two with weight lam ~ Beta(mixup_alpha); CutMix pastes a box of the
    partner covering about (1 - lam) of the image, lam ~ Beta(cutmix_alpha), placed fully
    inside. With both alphas > 0, `cutmix_share` of the mixed images use CutMix. Returns the
    images and targets weighted by each image's exact own share (blend weight or unpasted area).
    The Beta values come from `host_generator` (a CPU generator; by default `generator` itself
    when that is on the CPU), everything else from `generator`, on the images' device.
    """
    count, _, height, width = images.shape
    device = images.device
    host_generator = generator if host_generator is None else host_generator
    mixup_lam, cutmix_lam = _beta_draws((mixup_alpha, cutmix_alpha), count, host_generator, device)
    partner = torch.randperm(count, generator=generator, device=device)
    mixed = _chance(count, probability, generator)
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = _chance(count, cutmix_share, generator)
    else:
        use_cutmix = torch.full((count,), cutmix_alpha > 0, device=device)
    ones = torch.ones(count, device=device)
    own_weight = torch.where(mixed & ~use_cutmix, mixup_lam, ones)
    cut_area = torch.where(mixed & use_cutmix, 1 - cutmix_lam, torch.zeros_like(ones))
    box_height = (height * cut_area.sqrt()).round().long()
    box_width = (width * cut_area.sqrt()).round().long()
    top = (torch.rand(count, generator=generator, device=device) * (height - box_height + 1)).long()
    left = (torch.rand(count, generator=generator, device=device) * (width - box_width + 1)).long()
    pasted = box_mask(top, left, box_height, box_width, height, width)[:, None]
    partner_images = images[partner]
    weight = _per_image(own_weight).to(images.dtype)
    out = torch.where(pasted, partner_images, weight * images + (1 - weight) * partner_images)
    own_share = (own_weight * (1 - (box_height * box_width).to(own_weight.dtype) / (height * width)))[:, None]
    targets = own_share * soft_targets + (1 - own_share) * soft_targets[partner]
    return out, targets


def mixing_active(mix: MixConfig, epoch: int) -> bool:
    """Whether MixUp/CutMix is on in `epoch` (0-based): an alpha > 0 and before `off_epoch`."""
    switched_on = mix.mixup_alpha > 0 or mix.cutmix_alpha > 0
    return switched_on and (mix.off_epoch is None or epoch < mix.off_epoch)


def augment_images(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """uint8 N x 3 x H x W images -> per-image augmented float images in [0, 1] (no mixing).

    Order: crop, flip (on uint8), then rotation, colour jitter, cutout (on float).
    """
    out = images
    if cfg.crop.enabled:
        out = random_crop(out, cfg.crop.padding, cfg.crop.padding_mode, generator)
    if cfg.flip.enabled:
        out = random_flip(out, cfg.flip.probability, generator)
    out = to_unit_float(out)
    if cfg.rotation.enabled:
        out = random_rotation(out, cfg.rotation.max_degrees, cfg.rotation.probability, generator)
    jitter = cfg.color_jitter
    if jitter.enabled:
        out = color_jitter(out, jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue, jitter.probability, generator)
    if cfg.cutout.enabled:
        out = cutout(out, cfg.cutout.size, cfg.cutout.count, cfg.cutout.probability, generator)
    return out


def augment_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: AugmentConfig,
    epoch: int,
    num_classes: int,
    generator: torch.Generator,
    host_generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a uint8 N x 3 x H x W batch for training `epoch`; returns (float images in [0, 1], targets).

    Targets are the int64 labels, or, in every batch of an epoch where mixing is active,
    float N x num_classes soft targets whose rows sum to 1. Normalisation is left to the caller.
    `host_generator` (CPU) draws the MixUp/CutMix Beta values; see `mixup_cutmix`.
    """
    out = augment_images(images, cfg, generator)
    if not mixing_active(cfg.mix, epoch):
        return out, labels
    one_hot = F.one_hot(labels, num_classes).to(torch.float32)
    mix = cfg.mix
    return mixup_cutmix(out, one_hot, mix.mixup_alpha, mix.cutmix_alpha, mix.probability, mix.cutmix_share, generator, host_generator)


def augment_preview(images: np.ndarray | torch.Tensor, cfg: AugmentConfig, seed: int) -> torch.Tensor:
    """Augmented, unnormalised copies of N x H x W x 3 uint8 images as float N x 3 x H x W in [0, 1].

    MixUp/CutMix are left out (they need a partner and soft labels, which a grid cannot show);
    the per-image augmentations are applied exactly as in training. Same seed, same pictures.
    """
    chw = images_to_chw(images)
    generator = torch.Generator(device=chw.device).manual_seed(seed)
    return augment_images(chw, cfg, generator)
