"""Pixel geometry of the FracAtlas-layout writer: where an anatomy point lands in the rendered image, the
outline a reader would draw around a fracture (the COCO polygon), and whether it lies in the exposed field."""

from __future__ import annotations

import math

import numpy as np

from mura_utils.synthetic.anatomy import Bone
from mura_utils.synthetic.render import View, _cut, _profile


def _pixel_points(view: View, points: np.ndarray) -> np.ndarray:
    """Anatomy-frame points -> (x, y) pixels of the rendered image: the placement render_radiograph
    uses (drawn at half resolution, then upsampled); tests check it against the renderer's pixels."""
    W, H = view.width, view.height
    w, h = (W + 1) // 2, (H + 1) // 2
    pixels = view.scale * min(h, 1.35 * w)
    c, s = math.cos(view.angle), math.sin(view.angle)
    transform = np.array([[c, -s], [s, c]]) * pixels
    transform[:, 0] *= -1.0 if view.mirror else 1.0
    center = np.array([w / 2 + view.shift[0] * w, h / 2 + view.shift[1] * h])
    return (np.asarray(points) @ transform.T + center) * [W / w, H / h]


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Vertices of the convex hull, counter-clockwise (Andrew's monotone chain)."""
    unique = sorted(set(map(tuple, np.round(points, 6))))

    def chain(sequence):
        hull: list = []
        for p in sequence:
            while len(hull) >= 2:
                (ax, ay), (bx, by) = hull[-2], hull[-1]
                if (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax) > 0:
                    break
                hull.pop()
            hull.append(p)
        return hull[:-1]

    return np.array(chain(unique) + chain(unique[::-1]))


def _fracture_outline(bone: Bone, view: View) -> np.ndarray:
    """Pixel polygon around a broken bone's fracture site: both broken ends and the gap between
    them, widened by a third of the bone's width and the blur (the outline a reader would draw)."""
    xa, xb, half = _profile(bone, 0.0)
    cut, move = _cut(bone, float(half(xa + bone.fracture.at * (xb - xa))))
    origin = complex(*bone.a)
    axis = complex(bone.b[0] - bone.a[0], bone.b[1] - bone.a[1]) / (bone.length + 1e-9)
    ends = origin + np.concatenate([cut, move(cut)]) * axis
    points = _pixel_points(view, np.stack([ends.real, ends.imag], axis=1))
    scale = np.hypot(*(_pixel_points(view, np.array([[1.0, 0.0]])) - _pixel_points(view, np.zeros((1, 2))))[0])
    radius = 0.35 * bone.width * scale + 2.0 + view.blur
    ring = radius * np.exp(1j * np.linspace(0, 2 * np.pi, 12, endpoint=False))
    grown = (points[:, 0] + 1j * points[:, 1])[:, None] + ring[None, :]
    return _convex_hull(np.stack([grown.real.ravel(), grown.imag.ravel()], axis=1))


def _inside(view: View, polygon: np.ndarray) -> bool:
    """Whether a pixel polygon lies in the exposed field: within the film, clear of the collimator
    shutters and of the lead L/R marker."""
    x0, y0, x1, y1 = 0.0, 0.0, float(view.width), float(view.height)
    if view.collimation is not None:
        left, top, right, bottom = view.collimation
        w, h = (view.width + 1) // 2, (view.height + 1) // 2
        x0, y0 = 2 * (int(left * w) + 1), 2 * (int(top * h) + 1)
        x1, y1 = view.width - 2 * (int(right * w) + 1), view.height - 2 * (int(bottom * h) + 1)
    xs, ys = polygon[:, 0], polygon[:, 1]
    if xs.min() < x0 or ys.min() < y0 or xs.max() > x1 or ys.max() > y1:
        return False
    if view.marker is not None:
        size, pad = max(12, min(view.width, view.height) // 10), max(4, min(view.width, view.height) // 30)
        mx = pad if view.marker_corner % 2 == 0 else view.width - pad - size
        my = pad if view.marker_corner < 2 else view.height - pad - size
        if xs.min() < mx + size + 2 and xs.max() > mx - 2 and ys.min() < my + size + 2 and ys.max() > my - 2:
            return False
    return True


def _polygon_area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)
