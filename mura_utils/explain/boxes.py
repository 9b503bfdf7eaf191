"""Fracture boxes and polygons of a COCO file (FracAtlas's ``COCO_fracture_masks.json``), scaled
to the pixels of the image files and drawn as masks.

COCO coordinates are in the ``width``/``height`` the JSON lists for each image, which need not be the
file's size (the reduced FracAtlas copy shrinks the files, not the JSON), so every annotation is
scaled by (file size / listed size) before it meets a heatmap, and keeps how many listed pixels one
pixel of the file spans (``pixel_size``), so that distances (the pointing game's tolerance) are
measured on the radiograph at its listed, original size whatever the copy's reduction. A pixel
belongs to a box or polygon when its centre (column + 0.5, row + 0.5) lies inside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from matplotlib.path import Path as PolygonPath

from mura_utils.data.fracatlas import BOXES_FILE

COCO_FILE = BOXES_FILE  # FracAtlas's: Annotations/COCO JSON/COCO_fracture_masks.json
ASPECT_TOLERANCE = 0.02  # relative: a file whose shape differs more from the listed one is not a resized copy


class AnnotationSizeError(ValueError):
    """An image file whose aspect ratio does not match the size its annotations were drawn on."""


@dataclass(frozen=True)
class FractureAnnotation:
    """The fractures of one image: boxes (K, 4) as x, y, w, h and polygons ((P, 2) x, y each), in
    the coordinates of ``width`` x ``height``; ``pixel_size`` (rows, columns): pixels of the size the
    COCO file lists per pixel of these coordinates (1, 1 until ``scaled``)."""

    file_name: str
    width: float
    height: float
    boxes: np.ndarray
    polygons: tuple[np.ndarray, ...]
    pixel_size: tuple[float, float] = (1.0, 1.0)

    def scaled(self, width: int, height: int) -> FractureAnnotation:
        """The same fractures in pixels of a ``width`` x ``height`` file; AnnotationSizeError when the
        file's aspect ratio is not the listed one (a rotated or cropped file, not a resized copy)."""
        listed, real = self.width / self.height, width / height
        if abs(real / listed - 1) > ASPECT_TOLERANCE:
            raise AnnotationSizeError(
                f"{self.file_name}: the file is {width}x{height} px but its annotations were drawn on "
                f"{self.width:g}x{self.height:g} (aspect ratio {real:.3f} vs {listed:.3f}): not a resized copy"
            )
        factor = np.array([width / self.width, height / self.height])
        boxes = self.boxes * np.tile(factor, 2)
        polygons = tuple(polygon * factor for polygon in self.polygons)
        pixel_size = (self.pixel_size[0] * self.height / height, self.pixel_size[1] * self.width / width)
        return replace(self, width=width, height=height, boxes=boxes, polygons=polygons, pixel_size=pixel_size)

    @property
    def shape(self) -> tuple[int, int]:
        return int(round(self.height)), int(round(self.width))

    def box_mask(self) -> np.ndarray:
        """(height, width) bool: pixels inside any box (a box smaller than a pixel keeps the pixel
        under its centre)."""
        mask = np.zeros(self.shape, dtype=bool)
        for x, y, w, h in self.boxes:
            mask[_covered(y, h, self.shape[0]), _covered(x, w, self.shape[1])] = True
        return mask

    def polygon_mask(self) -> np.ndarray:
        """(height, width) bool: pixels inside any polygon (even-odd rule, as matplotlib's Path)."""
        mask = np.zeros(self.shape, dtype=bool)
        for polygon in self.polygons:
            low = np.clip(np.floor(polygon.min(axis=0)).astype(int), 0, None)
            high = np.minimum(np.ceil(polygon.max(axis=0)).astype(int) + 1, self.shape[::-1])
            columns, rows = np.meshgrid(np.arange(low[0], high[0]), np.arange(low[1], high[1]))
            centres = np.column_stack([columns.ravel() + 0.5, rows.ravel() + 0.5])
            inside = PolygonPath(polygon).contains_points(centres).reshape(columns.shape)
            if not inside.any():  # thinner than a pixel: keep the pixel under its centroid
                x, y = np.clip(polygon.mean(axis=0).astype(int), 0, np.array(self.shape[::-1]) - 1)
                mask[y, x] = True
            mask[low[1] : high[1], low[0] : high[0]] |= inside
        return mask


def _covered(start: float, length: float, limit: int) -> slice:
    """Pixels whose centre lies in [start, start + length] along one axis (at least one pixel)."""
    first = int(np.ceil(start - 0.5))
    last = int(np.floor(start + length - 0.5))
    if last < first:
        first = last = int(np.floor(start + length / 2))
    return slice(min(max(first, 0), limit - 1), min(max(last, 0), limit - 1) + 1)


def read_coco(path: str | Path) -> dict[str, FractureAnnotation]:
    """{file name: its fractures} of a COCO instance file (images, annotations with bbox and polygon
    segmentation); images listed without annotations are left out. Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: COCO annotation file not found")
    try:
        coco = json.loads(path.read_text())
        images = {image["id"]: image for image in coco["images"]}
        found: dict[int, tuple[list, list]] = {}
        for annotation in coco["annotations"]:
            boxes, polygons = found.setdefault(annotation["image_id"], ([], []))
            boxes.append([float(value) for value in annotation["bbox"]])
            for flat in annotation.get("segmentation") or []:
                if isinstance(flat, list) and len(flat) >= 6:
                    polygons.append(np.asarray(flat, dtype=float).reshape(-1, 2))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a COCO file with images and bbox annotations ({error!r})") from error
    unknown = sorted(set(found) - set(images))
    if unknown:
        raise ValueError(f"{path}: annotations refer to image ids not listed under 'images': {unknown[:5]}")
    annotations = {}
    for image_id, (boxes, polygons) in found.items():
        image = images[image_id]
        name = Path(image["file_name"]).name
        if name in annotations:
            raise ValueError(f"{path}: file name {name!r} is listed twice under 'images'")
        annotations[name] = FractureAnnotation(
            name, float(image["width"]), float(image["height"]), np.asarray(boxes).reshape(-1, 4), tuple(polygons)
        )
    return annotations
