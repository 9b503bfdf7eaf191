"""Reading radiographs of any file mode as 8-bit grayscale, and letterboxing them to a square.

One place for pixel decoding, so the dataset, the decode-once cache, ``mura predict`` and the
benchmarks all see exactly the same pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the file and the cause."""


def to_uint8_gray(image: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode (L, LA, RGB, RGBA, P, I;16, I, F) to an HxW uint8 array.

    16-bit and float images are rescaled by their own min/max, which keeps the contrast that
    an 8-bit export of the same radiograph would have.
    """
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        if high <= low:
            return np.zeros(array.shape, dtype=np.uint8)
        return ((array - low) * (255.0 / (high - low))).round().astype(np.uint8)
    if mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.uint8)


def read_grayscale(path: str | Path) -> np.ndarray:
    """Decode one image file to an HxW uint8 array, raising ImageReadError naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_uint8_gray(ImageOps.exif_transpose(image) or image)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{path}: cannot decode image ({error})") from error


def letterbox(array: np.ndarray, size: int) -> np.ndarray:
    """Resize keeping the aspect ratio so the long side is ``size``, then pad to size x size.

    Radiographs are tall, wide or square; squashing them distorts bone shapes, so we pad instead.
    Padding is black (0), which is what the background of a radiograph looks like.
    """
    height, width = array.shape[:2]
    scale = size / max(height, width)
    new_height = max(1, round(height * scale))
    new_width = max(1, round(width * scale))
    resized = Image.fromarray(array).resize((new_width, new_height), Image.BILINEAR)
    canvas = np.zeros((size, size), dtype=np.uint8)
    top = (size - new_height) // 2
    left = (size - new_width) // 2
    canvas[top : top + new_height, left : left + new_width] = np.asarray(resized)
    return canvas


def load_letterboxed(path: str | Path, size: int) -> np.ndarray:
    """Read an image as grayscale and letterbox it: the one decode step every pipeline shares."""
    return letterbox(read_grayscale(path), size)


__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "to_uint8_gray", "read_grayscale", "letterbox", "load_letterboxed"]
