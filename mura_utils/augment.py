"""Batched augmentation and normalization of grayscale radiographs, on CPU or GPU.

Augmenting a whole batch with one ``affine_grid``/``grid_sample`` call (per-sample random
parameters) is many times faster than per-image PIL transforms in DataLoader workers, and on a
GPU it costs next to nothing; so the loader only delivers uint8 letterboxed pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation strengths; the defaults are the MURA paper's flips and rotations
    plus mild exposure changes, as radiographs come from many machines."""

    flip_probability: float = 0.5
    max_rotation_degrees: float = 30.0
    brightness: float = 0.1  # additive shift, fraction of the full range
    contrast: float = 0.15  # multiplicative spread around the image mean


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N,1,H,W) in 0..255 -> float32 in 0..1; float input is passed through."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def batch_augment(images: torch.Tensor, config: AugmentConfig = AugmentConfig(),
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random flip + rotation + brightness/contrast for every image of an (N,1,H,W) batch.

    Random parameters are drawn on the CPU (with ``generator`` when given, for reproducible
    runs) and applied on the batch's own device. Returns float32 in 0..1.
    """
    images = to_float(images)
    count = images.shape[0]
    draw = lambda: torch.rand(count, generator=generator)  # noqa: E731 - tiny local helper
    angles = (draw() * 2 - 1) * math.radians(config.max_rotation_degrees)
    flips = torch.where(draw() < config.flip_probability, -1.0, 1.0)
    shifts = (draw() * 2 - 1) * config.brightness
    gains = 1 + (draw() * 2 - 1) * config.contrast

    cos, sin = torch.cos(angles), torch.sin(angles)
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0] = cos * flips
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * flips
    theta[:, 1, 1] = cos
    theta = theta.to(images.device)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    means = images.mean(dim=(1, 2, 3), keepdim=True)
    gains = gains.to(images.device).view(-1, 1, 1, 1)
    shifts = shifts.to(images.device).view(-1, 1, 1, 1)
    return ((images - means) * gains + means + shifts).clamp_(0.0, 1.0)


def normalize(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Float 0..1 images -> the model's input scale (one channel, so one mean and std)."""
    return (to_float(images) - mean) / std
