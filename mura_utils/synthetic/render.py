"""Rendering: anatomy -> polygons in pixels -> blur, exposure, noise -> uint8 array; PNG/JPEG bytes."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mura_utils.synthetic.anatomy import Anatomy, Bone, _ellipse

# Raw "density" levels drawn on the canvas before exposure; only their order matters.
_BACKGROUND, _CLEFT, _TISSUE, _MEDULLA, _CORTEX = 12, 30, 72, 135, 185
_SCLEROSIS = 200  # strength (of 255) on the overlay layer that metal is drawn on


# --------------------------------------------------------------------------------------------
# Rendering: anatomy -> polygons in pixels -> blur, exposure, noise -> uint8 array.
# --------------------------------------------------------------------------------------------

_CAP = np.exp(1j * np.linspace(np.pi / 2, -np.pi / 2, 9))  # a half circle, +y to -y
_SHAFT = np.linspace(0.0, 1.0, 12)


def _profile(bone: Bone, inset: float):
    """Where a bone's shaft starts and ends along its axis, and its half-width there."""
    length, w = bone.length, bone.width
    xa = min(0.5 * w * bone.flare_a, length / 2)
    xb = max(length - 0.5 * w * bone.flare_b, length / 2)

    def half(x):
        ea = np.exp(-((x / (1.2 * w)) ** 2))
        eb = np.exp(-(((length - x) / (1.2 * w)) ** 2))
        return np.maximum(0.5 * w * (1 + (bone.flare_a - 1) * ea + (bone.flare_b - 1) * eb) - inset, 1e-4)

    return xa, xb, half


def _cut(bone: Bone, half_width: float):
    """The jagged fracture line (from the +y side to the -y side) and the map that moves
    points of the distal fragment to where it is displaced."""
    fracture, w = bone.fracture, bone.width
    xa, xb, _ = _profile(bone, 0.0)
    xc = xa + fracture.at * (xb - xa)
    s = np.linspace(1, -1, len(fracture.jitter))
    line = xc + (fracture.slope * s * 0.5 + np.asarray(fracture.jitter)) * w + 1j * s * half_width
    turn = np.exp(1j * fracture.angle)
    offset = xc + fracture.gap * w + 1j * fracture.shift * w

    def move(z):
        return (z - xc) * turn + offset

    return line, move


def _to_anatomy(bone: Bone, z: np.ndarray) -> np.ndarray:
    """Bone-frame complex points -> (k, 2) points in the anatomy frame."""
    origin = complex(*bone.a)
    axis = complex(bone.b[0] - bone.a[0], bone.b[1] - bone.a[1]) / (bone.length + 1e-9)
    return np.ascontiguousarray(origin + z * axis).view(np.float64).reshape(-1, 2)


def _bone_outlines(bone: Bone, inset: float) -> list[np.ndarray]:
    """Polygons (1, or 2 fragments when broken) of a bone, shrunk by ``inset`` (the medulla).

    Built in the bone's own frame as complex numbers x + iy (x along the axis from ``a``, y
    across), so moving a fragment or mapping to the anatomy frame is one multiplication.
    """
    xa, xb, half = _profile(bone, inset)
    xs = xa + (xb - xa) * _SHAFT
    right = xs + 1j * half(xs)  # the +y side, from a to b
    cap_a = xa - right[0].imag * _CAP  # -y to +y round the a end
    cap_b = xb + right[-1].imag * _CAP  # +y to -y round the b end
    if bone.fracture is None:
        return [_to_anatomy(bone, np.concatenate([right, cap_b, right[::-1].conjugate(), cap_a]))]
    cut, move = _cut(bone, float(half(xa + bone.fracture.at * (xb - xa))))
    r, l_ = xs < cut[0].real, xs < cut[-1].real
    first = np.concatenate([cap_a, right[r], cut, right[l_][::-1].conjugate()])
    second = np.concatenate([cut[::-1], right[~r], cap_b, right[~l_][::-1].conjugate()])
    return [_to_anatomy(bone, first), _to_anatomy(bone, move(second))]


def _callus(bone: Bone) -> list[tuple[int, np.ndarray]]:
    """Overlay ellipses (strength, polygon) of the hazy callus around a healing break."""
    xa, xb, _ = _profile(bone, 0.0)
    xc = xa + bone.fracture.at * (xb - xa) + 0.5 * bone.fracture.gap * bone.width
    ring = np.exp(1j * np.linspace(0, 2 * np.pi, 16, endpoint=False))
    return [
        (strength, _to_anatomy(bone, xc + scale * bone.width * (ring.real + 0.75j * ring.imag)))
        for strength, scale in ((80, 1.3), (130, 0.9))
    ]


def _fracture_gap(bone: Bone) -> np.ndarray:
    """The dark cleft between the two fragments of a broken bone."""
    xa, xb, half = _profile(bone, 0.0)
    cut, move = _cut(bone, float(half(xa + bone.fracture.at * (xb - xa))))
    return _to_anatomy(bone, np.concatenate([cut, move(cut)[::-1]]))


@dataclass
class View:
    """How one radiograph of an anatomy is taken: geometry, exposure, noise and extras."""

    width: int
    height: int
    angle: float
    scale: float
    shift: tuple[float, float]
    mirror: bool
    blur: float
    gamma: float
    contrast: float
    offset: float
    noise: float
    fine_noise: float
    ramp: float
    marker: str | None = None
    marker_corner: int = 0
    collimation: tuple[float, float, float, float] | None = None
    collimation_level: float = 0.0
    invert: bool = False
    metal_level: float = 250.0  # brightness of metal: hardware and the lead L/R marker


def _sample_view(rng: np.random.Generator, long_side=(256, 512), external: bool = False) -> View:
    """Random acquisition: size and aspect, rotation, zoom, exposure, blur, noise, markers."""
    side = round(long_side[0] + (long_side[1] - long_side[0]) * rng.random() ** 2)
    aspect = rng.uniform(0.6, 1.4)
    width, height = (side, round(side / aspect)) if aspect >= 1 else (round(side * aspect), side)
    collimation = None
    if rng.random() < 0.12:
        collimation = tuple(rng.uniform(0.02, 0.12, size=4))
    view = View(
        width=width,
        height=height,
        angle=math.radians(rng.uniform(-25, 25)),
        scale=rng.uniform(0.9, 1.2),
        shift=tuple(rng.uniform(-0.07, 0.07, size=2)),
        mirror=bool(rng.random() < 0.5),
        blur=rng.uniform(0.6, 1.8),
        gamma=rng.uniform(0.8, 1.3),
        contrast=rng.uniform(0.75, 1.0),
        offset=rng.uniform(-0.1, 0.03),
        noise=rng.uniform(0.5, 2.0),
        fine_noise=0.0,
        ramp=rng.uniform(-0.08, 0.08),
        marker=str(rng.choice(["L", "R"])) if rng.random() < 0.15 else None,
        marker_corner=int(rng.integers(4)),
        collimation=collimation,
        metal_level=rng.uniform(240.0, 255.0),
        collimation_level=float(rng.choice([0.0, rng.uniform(0.55, 0.85)])),
    )
    if external:  # flatter, noisier, sometimes inverted: a different scanner and export
        view.contrast = rng.uniform(0.45, 0.7)
        view.offset = rng.uniform(0.15, 0.3)
        view.gamma = rng.uniform(0.6, 1.0)
        view.noise = rng.uniform(5.0, 10.0)
        view.fine_noise = rng.uniform(1.0, 3.0)
        view.invert = bool(rng.random() < 0.35)
        view.marker = None
        view.collimation = None
    return view


def _draw_letter(draw: ImageDraw.ImageDraw, letter: str, box, value: int) -> None:
    """An 'L' or 'R' lead marker in strokes (no font files, so output is the same everywhere)."""
    x0, y0, x1, y1 = box
    w = max(1, round((x1 - x0) / 7))
    px = lambda fx, fy: (x0 + fx * (x1 - x0), y0 + fy * (y1 - y0))  # noqa: E731
    draw.line([px(0.3, 0.15), px(0.3, 0.85)], fill=value, width=w)
    if letter == "L":
        draw.line([px(0.3, 0.85), px(0.75, 0.85)], fill=value, width=w)
    else:
        draw.line([px(0.3, 0.15), px(0.65, 0.2), px(0.72, 0.35), px(0.65, 0.48), px(0.3, 0.5)], fill=value, width=w)
        draw.line([px(0.45, 0.5), px(0.75, 0.85)], fill=value, width=w)


def _shapes(anatomy: Anatomy) -> tuple[list, list, list]:
    """The anatomy as (fill level, polygon) lists: soft tissue, bones, and an overlay layer
    (metal, sclerosis) blended towards the metal brightness after exposure.

    Computed once per anatomy (it is the slow, Python-heavy part) and reused for every view.
    """
    tissue = [(_TISSUE, polygon) for polygon in anatomy.tissue]
    margin = anatomy.tissue_margin
    for level, extra in ((_TISSUE, margin), (_TISSUE + 18, 0.4 * margin)):  # thicker centre
        for bone in anatomy.bones:
            grown = replace(
                bone,
                width=bone.width + 2 * extra,
                fracture=None,
                flare_a=1 + (bone.flare_a - 1) * bone.width / (bone.width + 2 * extra),
                flare_b=1 + (bone.flare_b - 1) * bone.width / (bone.width + 2 * extra),
            )
            tissue.append((level, _bone_outlines(grown, 0.0)[0]))
        tissue += [
            (level, _ellipse(blob.center, blob.rx + extra, blob.ry + extra, blob.angle)) for blob in anatomy.blobs
        ]
    bones = []
    for polygon in anatomy.flat_bones:  # a rim and a thinner middle
        centroid = polygon.mean(axis=0)
        bones += [(_CORTEX - 25, polygon), (_MEDULLA - 15, centroid + (polygon - centroid) * 0.8)]
    for blob in anatomy.blobs:
        rim = 0.16 * min(blob.rx, blob.ry)
        bones += [
            (_CORTEX, _ellipse(blob.center, blob.rx, blob.ry, blob.angle)),
            (_MEDULLA, _ellipse(blob.center, blob.rx - rim, blob.ry - rim, blob.angle)),
        ]
    for bone in anatomy.bones:
        if bone.fracture is not None:
            bones.append((_CLEFT, _fracture_gap(bone)))
        bones += [(_CORTEX, piece) for piece in _bone_outlines(bone, 0.0)]
        bones += [(_MEDULLA, piece) for piece in _bone_outlines(bone, bone.cortex * bone.width)]
    # Sclerotic bone is denser than cortex; like metal it is drawn on the overlay layer, at
    # partial strength, so it stays brighter than any cortex whatever the exposure.
    overlay = [(_SCLEROSIS, polygon) for polygon in anatomy.sclerosis]
    for bone in anatomy.bones:
        if bone.fracture is not None and bone.fracture.callus:
            overlay += _callus(bone)
    overlay += [(255, polygon) for polygon in anatomy.metal]
    return tissue, bones, overlay


def render_radiograph(anatomy: Anatomy | tuple[list, list, list], view: View, rng: np.random.Generator) -> np.ndarray:
    """Draw one synthetic radiograph of ``anatomy`` as seen in ``view``; returns HxW uint8.

    Drawing, blur, exposure and noise happen at half resolution and the result is upsampled:
    four times less work, and smooth images that compress to a few kB as PNG.
    """
    tissue, bones, metal = _shapes(anatomy) if isinstance(anatomy, Anatomy) else anatomy
    W, H = view.width, view.height
    w, h = (W + 1) // 2, (H + 1) // 2
    pixels = view.scale * min(h, 1.35 * w)
    c, s = math.cos(view.angle), math.sin(view.angle)
    transform = np.array([[c, -s], [s, c]]) * pixels
    transform[:, 0] *= -1.0 if view.mirror else 1.0
    center = np.array([w / 2 + view.shift[0] * w, h / 2 + view.shift[1] * h])

    def draw_all(image: Image.Image, shapes: list) -> None:
        if not shapes:
            return
        points = np.concatenate([polygon for _, polygon in shapes]) @ transform.T + center
        draw, start = ImageDraw.Draw(image), 0
        for level, polygon in shapes:
            draw.polygon(points[start : start + len(polygon)].ravel().tolist(), fill=level)
            start += len(polygon)

    canvas = Image.new("L", (w, h), _BACKGROUND)
    draw_all(canvas, tissue)
    canvas = canvas.filter(ImageFilter.GaussianBlur(0.02 * pixels))  # soft tissue falls off
    draw_all(canvas, bones)
    canvas = canvas.filter(ImageFilter.GaussianBlur(view.blur / 2))

    x = np.asarray(canvas, dtype=np.float32) * (1.0 / 255.0)
    x = x**view.gamma * view.contrast + view.offset
    x += view.ramp * np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    x *= 255.0
    if metal:  # metal stops nearly all X-rays: saturated whatever the exposure
        mask = Image.new("L", (w, h), 0)
        draw_all(mask, metal)
        alpha = np.asarray(mask.filter(ImageFilter.GaussianBlur(view.blur / 2)), dtype=np.float32) * (1.0 / 255.0)
        x += alpha * (view.metal_level - x)
    coarse = rng.normal(0.0, view.noise, size=(max(2, h // 4), max(2, w // 4)))
    x += np.asarray(Image.fromarray(coarse.astype(np.float32)).resize((w, h), Image.BILINEAR))
    if view.fine_noise > 0:
        x += rng.normal(0.0, view.fine_noise, size=(h, w)).astype(np.float32)
    if view.collimation is not None:
        left, top, right, bottom = view.collimation
        mask = np.ones((h, w), dtype=bool)
        mask[int(top * h) : h - int(bottom * h), int(left * w) : w - int(right * w)] = False
        if view.collimation_level > 0:  # shutter area exported as flat light grey
            x[mask] = 255.0 * view.collimation_level
        else:  # or as a darkened band
            x[mask] *= 0.3
    if view.invert:
        x = 255.0 - x
    small = Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8))
    full = small.resize((W, H), Image.NEAREST)  # pixel pairs repeat: PNG stores them cheaply
    if view.marker is not None:
        size = max(12, min(W, H) // 10)
        pad = max(4, min(W, H) // 30)
        x0 = pad if view.marker_corner % 2 == 0 else W - pad - size
        y0 = pad if view.marker_corner < 2 else H - pad - size
        draw = ImageDraw.Draw(full)
        draw.rectangle([x0, y0, x0 + size, y0 + size], fill=round(view.metal_level))
        _draw_letter(draw, view.marker, (x0, y0, x0 + size, y0 + size), 30)
    return np.asarray(full)


# --------------------------------------------------------------------------------------------
# Writing files.
# --------------------------------------------------------------------------------------------


def _png_bytes(image: np.ndarray, mode: str) -> bytes:
    """Encode a uint8 grayscale image as PNG in one of the modes MURA's files come in."""
    if mode == "RGB":
        pil = Image.fromarray(np.repeat(image[:, :, None], 3, axis=2))
    elif mode == "LA":
        pil = Image.fromarray(np.stack([image, np.full_like(image, 255)], axis=2))
    elif mode == "I;16":
        pil = Image.fromarray((image.astype(np.uint16) * 16).astype("<u2"))
    else:
        pil = Image.fromarray(image)
    assert pil.mode == mode, (pil.mode, mode)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", compress_level=5)
    return buffer.getvalue()


def _jpeg_bytes(image: np.ndarray, quality: int, rgb: bool) -> bytes:
    """Encode as baseline JPEG without EXIF or timestamps (so output is deterministic)."""
    pil = Image.fromarray(np.repeat(image[:, :, None], 3, axis=2) if rgb else image)
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
