"""Does a heatmap point at the fracture? Per-image scores of a map against box and polygon masks,
two baselines (the image centre, a flat map) and their bootstrap summary over images.

- pointing: does the map's maximum (at image resolution) fall inside a box; with several pixels at
  the maximum, the share of them inside (so a flat map scores the boxes' area share);
- pointing_tol15: the same with the pointing game's own tolerance (Zhang et al., "Top-down Neural
  Attention by Excitation Backprop", ECCV 2016): a hit when the maximum lies within 15 pixels of a box
  (distance between pixel centres below 15), in pixels of the radiograph at the size its annotations
  list (its original size: a reduced copy's pixels count as the original pixels they span);
- mass ratio: (share of the map's mass inside the boxes) / (the boxes' share of the image area):
  1 = no better than a flat map, 1 / area share = all mass inside; the same for the polygons.
  An all-zero map carries no location and is scored as a flat map (and counted as empty).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.ndimage import distance_transform_edt

from mura_utils.evaluation.bootstrap import ClusterBootstrap, bootstrap_p_value
from mura_utils.explain.names import DEFAULT_CAM_METHOD

BASELINES = ("centre", "flat")  # maps that know nothing of the image: its centre, and no location at all
POINTING_TOLERANCE = 15  # original pixels: the pointing game's tolerance (Zhang et al. 2016)
SCORES = ("pointing", "pointing_tol15", "box_mass_ratio", "polygon_mass_ratio", "box_mass_share")
_TIE = 1e-6  # relative to the map's maximum: pixels this close to it count as "at the maximum"


def pointing(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's maximal pixels that lie inside ``mask`` (1 or 0 for a single maximum)."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    peak = heatmap.max()
    at_peak = heatmap >= peak - _TIE * max(abs(peak), 1e-12)
    return float(mask[at_peak].mean())


def near_mask(
    mask: np.ndarray, tolerance: float = POINTING_TOLERANCE, pixel_size: tuple[float, float] = (1.0, 1.0)
) -> np.ndarray:
    """Pixels whose centre lies closer than ``tolerance`` to the centre of a pixel of ``mask`` (the
    mask itself included): where a maximum counts as a hit in the tolerant pointing game. Distances
    are in units of ``pixel_size`` (rows, columns) per pixel, e.g. ``FractureAnnotation.pixel_size``:
    original pixels on a reduced copy."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    return distance_transform_edt(~mask, sampling=pixel_size) < tolerance


def mass_share(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's (non-negative) mass inside ``mask``; an all-zero map counts as flat."""
    heatmap = np.clip(np.asarray(heatmap, dtype=np.float64), 0, None)
    total = heatmap.sum()
    if total <= 0:
        return float(mask.mean())
    return float(heatmap[mask].sum() / total)


def mass_ratio(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """``mass_share`` / the mask's share of the image (1: as a flat map); NaN for an empty mask."""
    area = float(np.mean(mask))
    return mass_share(heatmap, mask) / area if area > 0 else float("nan")


def centre_map(height: int, width: int) -> np.ndarray:
    """A Gaussian bump at the image centre (sigma a quarter of each side): its maximum is the centre."""
    rows = (np.arange(height) - (height - 1) / 2) / (height / 4)
    columns = (np.arange(width) - (width - 1) / 2) / (width / 4)
    return np.exp(-0.5 * (rows[:, None] ** 2 + columns[None, :] ** 2)).astype(np.float32)


def image_scores(
    heatmap: np.ndarray, boxes: np.ndarray, polygons: np.ndarray, near_boxes: np.ndarray | None = None
) -> dict[str, float]:
    """Every score of one map against one image's box and polygon masks (all three the same shape);
    ``near_boxes`` is ``near_mask(boxes, ...)``, where the tolerant game counts a hit (computed once
    per image, with the annotation's pixel size; without it, ``near_mask(boxes)`` in these pixels)."""
    if heatmap.shape != boxes.shape or boxes.shape != polygons.shape:
        raise ValueError(f"heatmap {heatmap.shape}, box mask {boxes.shape} and polygon mask {polygons.shape} differ")
    near_boxes = near_mask(boxes) if near_boxes is None else near_boxes
    return {
        "pointing": pointing(heatmap, boxes),
        "pointing_tol15": pointing(heatmap, near_boxes),
        "box_mass_ratio": mass_ratio(heatmap, boxes),
        "polygon_mass_ratio": mass_ratio(heatmap, polygons),
        "box_mass_share": mass_share(heatmap, boxes),
        "box_area_share": float(boxes.mean()),
        "polygon_area_share": float(polygons.mean()),
        "empty_map": bool(np.clip(heatmap, 0, None).sum() <= 0),
    }


def baseline_scores(
    boxes: np.ndarray, polygons: np.ndarray, near_boxes: np.ndarray | None = None
) -> dict[str, dict[str, float]]:
    """{baseline: scores} of the centre and flat maps for one image's masks."""
    height, width = boxes.shape
    near_boxes = near_mask(boxes) if near_boxes is None else near_boxes
    maps = {"centre": centre_map(height, width), "flat": np.ones((height, width), dtype=np.float32)}
    return {name: image_scores(maps[name], boxes, polygons, near_boxes) for name in BASELINES}


def _weighted_means(bootstrap: ClusterBootstrap, clusters: Sequence, values: np.ndarray) -> np.ndarray:
    """The mean of ``values`` (one per unit, NaN left out) on every resample."""
    values = np.asarray(values, dtype=float)
    present = ~np.isnan(values)
    filled = np.where(present, values, 0.0)
    means = []
    for weights in bootstrap.blocks(clusters):
        with np.errstate(invalid="ignore", divide="ignore"):
            means.append((weights @ filled) / (weights @ present))
    return np.concatenate(means)


def summarize(
    per_image: pd.DataFrame,
    bootstrap: ClusterBootstrap,
    scores: Sequence[str] = SCORES,
    references: Sequence[str] = (DEFAULT_CAM_METHOD, *BASELINES),
) -> dict[str, dict]:
    """{method: {score: {"mean", "ci", "n", "minus_<reference>": {"delta", "ci", "p"}}}} from a long
    table (columns image, method and the scores), every method on the same resamples of images, so
    the differences to each reference method pair image by image. A method lacking a score on some
    images (ROAD on a subset) is averaged over the images it has."""
    wide = {score: per_image.pivot(index="image", columns="method", values=score) for score in scores}
    images = wide[scores[0]].index
    methods = list(dict.fromkeys(per_image["method"]))
    resampled = {
        score: {method: _weighted_means(bootstrap, images, wide[score][method].to_numpy()) for method in methods}
        for score in scores
    }
    summary: dict[str, dict] = {}
    for method in methods:
        summary[method] = {}
        for score in scores:
            values = wide[score][method].to_numpy(dtype=float)
            if np.isnan(values).all():
                continue
            entry = {
                "mean": float(np.nanmean(values)),
                "ci": bootstrap.interval(resampled[score][method]),
                "n": int((~np.isnan(values)).sum()),
            }
            for reference in references:
                if reference == method or reference not in resampled[score]:
                    continue
                other = wide[score][reference].to_numpy(dtype=float)
                both = ~np.isnan(values) & ~np.isnan(other)
                if not both.any():  # e.g. ROAD, which the baselines do not have
                    continue
                differences = _weighted_means(bootstrap, images, np.where(both, values - other, np.nan))
                entry[f"minus_{reference}"] = {
                    "delta": float(np.mean(values[both] - other[both])),
                    "ci": bootstrap.interval(differences),
                    "p": bootstrap_p_value(differences),
                }
            summary[method][score] = entry
    return summary
