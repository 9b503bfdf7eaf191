"""Batched augmentation: the lookup-table rotation is the geometry of grid_sample(nearest),
flips mirror, exposure/normalization are folded correctly, draws are reproducible."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mura_utils.data.augment import (
    AugmentConfig,
    _device_tables,
    _rotate_and_flip,
    batch_augment,
    normalize,
    rotation_tables,
)

STILL = AugmentConfig(flip_probability=0.0, max_rotation_degrees=0.0, brightness=0.0, contrast=0.0)


@pytest.fixture()
def batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (6, 1, 40, 32), dtype=torch.uint8, generator=generator)


def test_angle_grid():
    assert len(AugmentConfig().angles_degrees()) == 61
    np.testing.assert_allclose(
        AugmentConfig(max_rotation_degrees=10, rotation_step_degrees=2.5).angles_degrees(),
        [-10, -7.5, -5, -2.5, 0, 2.5, 5, 7.5, 10],
    )
    assert list(STILL.angles_degrees()) == [0]
    with pytest.raises(ValueError, match="rotation_step_degrees"):
        AugmentConfig(rotation_step_degrees=0).angles_degrees()


@pytest.mark.parametrize("degrees", [-30.0, -7.0, 0.0, 13.0, 30.0])
@pytest.mark.parametrize("flip", [False, True])
def test_rotation_matches_grid_sample_nearest(batch, degrees, flip):
    count, _, height, width = batch.shape
    rotated = _rotate_and_flip(batch, torch.zeros(count, dtype=torch.long), torch.full((count,), flip), (degrees,))
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    sign = -1.0 if flip else 1.0
    xs = (torch.linspace(-1, 1, width, dtype=torch.float64) * ((width - 1) / width)).view(1, 1, width, 1)
    ys = (torch.linspace(-1, 1, height, dtype=torch.float64) * ((height - 1) / height)).view(1, height, 1, 1)
    grid = xs * torch.tensor([cos * sign, sin * sign], dtype=torch.float64) + ys * torch.tensor(
        [-sin, cos], dtype=torch.float64
    )
    reference = F.grid_sample(batch.double(), grid.expand(count, -1, -1, -1), mode="nearest", align_corners=False)
    agree = (reference == rotated.double()).double().mean().item()
    assert agree > 0.998, agree  # only exact .5 ties may round apart
    if degrees == 0:
        expected = batch.flip(3) if flip else batch
        assert torch.equal(rotated, expected)


def test_gpu_gather_path_gives_the_same_pixels(batch):
    """The device path (one batched torch.gather) reads the very tables the CPU path reads."""
    count, _, height, width = batch.shape
    angles = tuple(float(a) for a in AugmentConfig().angles_degrees())
    generator = torch.Generator().manual_seed(3)
    angle_ids, flips = (
        torch.randint(0, len(angles), (count,), generator=generator),
        torch.rand(count, generator=generator) < 0.5,
    )
    per_image = _rotate_and_flip(batch, angle_ids, flips, angles)
    gathered = _rotate_and_flip(batch, angle_ids, flips, angles, batched_gather=True)
    assert torch.equal(per_image, gathered) and gathered.shape == batch.shape
    assert _device_tables(height, width, angles, torch.device("cpu")).dtype == torch.int64
    assert rotation_tables(height, width, angles).shape == (2, 61, height, width)


def test_still_config_is_identity_and_normalization_is_folded(batch):
    assert torch.allclose(batch_augment(batch, STILL), batch.float() / 255)
    assert torch.allclose(batch_augment(batch, STILL, mean=0.5, std=0.25), normalize(batch, 0.5, 0.25), atol=1e-6)
    flipped = batch_augment(
        batch, AugmentConfig(flip_probability=1.0, max_rotation_degrees=0, brightness=0, contrast=0)
    )
    assert torch.allclose(flipped, batch.flip(3).float() / 255)


def test_exposure_shift_and_contrast_stay_in_range():
    images = torch.full((64, 1, 16, 16), 128, dtype=torch.uint8)
    images[:, :, :8] = 96
    shifted = batch_augment(
        images,
        AugmentConfig(flip_probability=0, max_rotation_degrees=0, brightness=0.1, contrast=0),
        torch.Generator().manual_seed(0),
    )
    shift = shifted - images.float() / 255
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift), atol=1e-6)  # one shift per image
    assert shift.abs().max() <= 0.1 + 1e-6 and shift.std() > 0.02  # drawn per image, within range
    contrasted = batch_augment(
        images,
        AugmentConfig(flip_probability=0, max_rotation_degrees=0, brightness=0, contrast=0.15),
        torch.Generator().manual_seed(0),
    )
    spread = (contrasted[:, 0, 10, 0] - contrasted[:, 0, 0, 0]) / (32 / 255)
    assert spread.min() >= 0.85 - 1e-5 and spread.max() <= 1.15 + 1e-5 and spread.std() > 0.03
    assert torch.allclose(
        contrasted.mean((1, 2, 3)), images.float().mean((1, 2, 3)) / 255, atol=1e-5
    )  # around the mean
    bright = batch_augment(torch.full((8, 1, 8, 8), 255, dtype=torch.uint8), AugmentConfig(), mean=0.5, std=0.25)
    assert bright.max() <= 2.0 and bright.min() >= -2.0  # clamped to 0..1 before normalizing


def test_same_seed_same_batch_and_float_input(batch):
    first = batch_augment(batch, AugmentConfig(), torch.Generator().manual_seed(7), 0.5, 0.25)
    again = batch_augment(batch, AugmentConfig(), torch.Generator().manual_seed(7), 0.5, 0.25)
    other = batch_augment(batch, AugmentConfig(), torch.Generator().manual_seed(8), 0.5, 0.25)
    assert torch.equal(first, again) and not torch.equal(first, other)
    as_float = batch_augment(batch.float() / 255, AugmentConfig(), torch.Generator().manual_seed(7), 0.5, 0.25)
    assert torch.allclose(first, as_float, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (benchmarks/gpu_check.sh runs it on a GPU)")
def test_cuda_gives_the_cpu_pixels(batch):
    cpu = batch_augment(batch, AugmentConfig(), torch.Generator().manual_seed(5), 0.5, 0.25)
    cuda = batch_augment(batch.cuda(), AugmentConfig(), torch.Generator().manual_seed(5), 0.5, 0.25)
    assert cuda.is_cuda and torch.allclose(cpu, cuda.cpu(), atol=1e-5)
