"""Test-time augmentation views closed under a horizontal flip: the identity and the mirror.

The mirror view is the *original* image mirrored, then letterboxed (``mirrored_letterbox``), not
the letterboxed image flipped: when the padding is odd the two differ by a pixel, and only the
first makes a mirrored input file give exactly the same TTA probability as the original.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from mura_utils.data.imaging import letterbox, read_grayscale


def mirrored_letterbox(gray: np.ndarray, size: int) -> np.ndarray:
    """The letterboxed image of the horizontally mirrored original (HxW uint8 -> size x size)."""
    return letterbox(np.ascontiguousarray(gray[:, ::-1]), size)


class MirroredViews(Dataset):
    """A RadiographDataset whose items also carry ``mirrored_image``: the mirror view for TTA, decoded
    from the original file (the cache holds only the letterboxed identity view)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> dict:
        item = dict(self.dataset[position])
        gray = read_grayscale(self.dataset.paths[position])
        item["mirrored_image"] = torch.from_numpy(mirrored_letterbox(gray, self.dataset.img_size)).unsqueeze(0)
        return item


__all__ = ["MirroredViews", "mirrored_letterbox"]
