"""From the model's letterboxed square back to the radiograph: a heatmap made on the
``imaging.letterbox`` canvas is cropped to the image's region and resized to the file's own size,
so it can be compared with annotations in pixels of the file."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def letterbox_region(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """(top, left, region height, region width) of an image of ``height`` x ``width`` on the
    ``size`` x ``size`` canvas of ``imaging.letterbox`` (same rounding; a test keeps them in step)."""
    scale = size / max(height, width)
    new_height = max(1, round(height * scale))
    new_width = max(1, round(width * scale))
    return (size - new_height) // 2, (size - new_width) // 2, new_height, new_width


def to_image_frame(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (size, size) heatmap on the letterboxed canvas as a (height, width) heatmap on the original
    image: the padding is cut off (its mass is dropped) and the image's region resized (bilinear)."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2 or heatmap.shape[0] != heatmap.shape[1]:
        raise ValueError(f"expected a square (size, size) letterboxed heatmap, got shape {heatmap.shape}")
    top, left, region_height, region_width = letterbox_region(height, width, heatmap.shape[0])
    region = torch.from_numpy(np.ascontiguousarray(heatmap[top : top + region_height, left : left + region_width]))
    if (region_height, region_width) == (height, width):
        return region.numpy().copy()
    resized = F.interpolate(region[None, None], size=(height, width), mode="bilinear", antialias=True)
    return resized[0, 0].numpy()
