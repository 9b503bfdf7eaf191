"""A tiny set in FracAtlas's official layout: dataset.csv, images/{Fractured,Non_fractured}, COCO boxes.

FracAtlas (Abedeen et al., Scientific Data 2023) is public, but its images stay out of the repo; this
writer lets the loader, training and box-based explanation checks run on cartoons with the same files
and quirks: region flags with several regions on one film (``mixed``), films holding two views
(``multiscan``), metal ``hardware``, RGB-encoded and 8-bit grayscale JPEGs, and COCO boxes and polygons
listed in the coordinates of a listed width/height that is not the file's for reduced images (the
reduced copy's quirk: scaled files, unscaled JSON). Every box encloses a planted break.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mura_utils.synthetic.anatomy import _LAYOUTS, Anatomy, Blob, Bone, Joint
from mura_utils.synthetic.findings import _add_break, _add_hardware
from mura_utils.synthetic.geometry import _fracture_outline, _inside, _polygon_area
from mura_utils.synthetic.mura import SYNTHETIC_MARKER, _prepare
from mura_utils.synthetic.render import View, _jpeg_bytes, _sample_view, _shapes, render_radiograph

FRACATLAS_COLUMNS = tuple(
    "image_id hand leg hip shoulder mixed hardware multiscan fractured fracture_count frontal lateral oblique".split()
)
FRACATLAS_BOXES = Path("Annotations") / "COCO JSON" / "COCO_fracture_masks.json"
LABEL_FOLDERS = {True: "Fractured", False: "Non_fractured"}
REGIONS = ("hand", "leg", "hip", "shoulder")
VIEWS = ("frontal", "lateral", "oblique")

_FRACTURED_FRACTION = 0.2  # FracAtlas: 717 of 4,083
_HARDWARE = (0.12, 0.02)  # chance of metal in fractured / non-fractured images (FracAtlas: 13% / 1.5%)
# Film kinds: (regions, multiscan, weight), about as often as in FracAtlas's dataset.csv.
_KINDS = (
    (("leg",), False, 0.45),
    (("hand",), False, 0.28),
    (("leg",), True, 0.07),
    (("hand",), True, 0.03),
    (("hip",), False, 0.045),
    (("shoulder",), False, 0.025),
    (("hand", "shoulder"), False, 0.06),
    (("hip", "leg"), False, 0.035),
)
# The synthetic layouts drawn for each FracAtlas region, and the pair stacked on a mixed film.
_REGION_LAYOUTS = {
    "hand": ("HAND", "WRIST", "FINGER", "FOREARM", "ELBOW"),
    "leg": ("TIBIA_FIBULA", "ANKLE", "KNEE"),
    "hip": ("HIP",),
    "shoulder": ("SHOULDER", "HUMERUS"),
}
_MIXED_LAYOUTS = {("hand", "shoulder"): ("HUMERUS", "FOREARM"), ("hip", "leg"): ("HIP", "KNEE")}
# The official files' sizes (width, height) as the JSON lists them; two-view films are landscape.
_LISTED_SIZES = (
    ((373, 454), 0.55),
    ((454, 373), 0.1),
    ((2304, 2880), 0.22),
    ((2880, 2304), 0.05),
    ((1760, 2140), 0.08),
)
_LANDSCAPE_SIZES = (((454, 373), 0.7), ((2880, 2304), 0.3))
_FULL_SIZE = 0.2  # chance that an image is written at its (small) listed size, as in the official release
_SMALL_SIZES, _SMALL_LANDSCAPE = (((373, 454), 0.85), ((454, 373), 0.15)), (((454, 373), 1.0),)
_RGB = 0.5  # chance of an RGB-encoded grayscale JPEG (the official files) rather than 8-bit grayscale


def _hip(rng: np.random.Generator) -> Anatomy:
    """HIP: the femoral head in the acetabulum, the neck and trochanters, the femoral shaft."""
    k = rng.uniform(0.92, 1.06)
    head = (-0.08 * k, -0.26 * k)
    arc = np.linspace(math.radians(200), math.radians(330), 9)
    cup = np.stack([head[0] + 0.15 * k * np.cos(arc), head[1] + 0.15 * k * np.sin(arc)], axis=1)
    pelvis = np.vstack([cup, [[0.0, -0.55], [-0.45, -0.95], [-0.75, -0.6], [-0.55, 0.05], [-0.25, -0.12]]])
    bones = (
        Bone((head[0] + 0.03 * k, head[1] + 0.03 * k), (0.1 * k, -0.08 * k), 0.1 * k, 1.2, 1.4),
        Bone((0.1 * k, -0.14 * k), (0.16 * k + rng.normal(0, 0.02), 0.9), 0.15 * k, 1.6, 1.0),
    )
    blobs = (
        Blob(head, 0.11 * k, 0.11 * k),
        Blob((0.18 * k, -0.13 * k), 0.07 * k, 0.085 * k, 0.3),
        Blob((0.05 * k, 0.04 * k), 0.035 * k, 0.03 * k),
    )
    joints = (Joint((head[0] - 0.06 * k, head[1] - 0.08 * k), (0.6, 0.8), 0.2 * k, 0.03),)
    body = np.array([[-1.0, -1.0], [0.45, -1.0], [0.5, 1.0], [-1.0, 1.0]])
    return Anatomy(bones, blobs, joints, (body,), rng.uniform(0.06, 0.1), flat_bones=(pelvis,))


def _layout(name: str, rng: np.random.Generator) -> Anatomy:
    return _hip(rng) if name == "HIP" else _LAYOUTS[name](rng)


def _half(anatomy: Anatomy, dy: float, keep) -> Anatomy:
    """``anatomy`` at half size moved down by ``dy``, keeping the parts whose centre ``keep(y)`` accepts."""

    def move(point):
        return (0.5 * point[0], 0.5 * point[1] + dy)

    def polygon(points):
        return np.asarray(points) * 0.5 + [0.0, dy]

    bones = [replace(b, a=move(b.a), b=move(b.b), width=0.5 * b.width) for b in anatomy.bones]
    blobs = [replace(b, center=move(b.center), rx=0.5 * b.rx, ry=0.5 * b.ry) for b in anatomy.blobs]
    joints = [replace(j, center=move(j.center), width=0.5 * j.width, gap=0.5 * j.gap) for j in anatomy.joints]
    return Anatomy(
        tuple(b for b in bones if keep(0.5 * (b.a[1] + b.b[1]))),
        tuple(b for b in blobs if keep(b.center[1])),
        tuple(j for j in joints if keep(j.center[1])),
        tuple(polygon(p) for p in anatomy.tissue),
        0.5 * anatomy.tissue_margin,
        tuple(polygon(p) for p in anatomy.flat_bones),
    )


def _stacked(top: Anatomy, bottom: Anatomy) -> Anatomy:
    """Two regions on one film, one above the other (a whole arm or leg: FracAtlas's ``mixed``)."""
    upper, lower = _half(top, -0.25, lambda y: y < 0.02), _half(bottom, 0.25, lambda y: y > -0.02)
    return Anatomy(
        upper.bones + lower.bones,
        upper.blobs + lower.blobs,
        upper.joints + lower.joints,
        upper.tissue + lower.tissue,
        0.5 * (upper.tissue_margin + lower.tissue_margin),
        upper.flat_bones + lower.flat_bones,
    )


@dataclass(frozen=True)
class _Row:
    """One planned image: its dataset.csv flags and how its file is written."""

    number: int
    regions: tuple[str, ...]
    multiscan: bool
    fractured: bool
    hardware: bool
    views: tuple[str, ...]
    listed: tuple[int, int]  # (width, height) as the COCO JSON lists it
    size: tuple[int, int]  # (width, height) of the file
    rgb: bool
    quality: int

    @property
    def name(self) -> str:
        return f"IMG{self.number:07d}.jpg"

    @property
    def relative(self) -> str:
        return f"images/{LABEL_FOLDERS[self.fractured]}/{self.name}"


@dataclass(frozen=True)
class _Panel:
    """One view on a film: where it starts (pixels from the left), how it was taken, what it shows."""

    x0: int
    view: View
    anatomy: Anatomy


def _choose(rng: np.random.Generator, options, count: int | None = None):
    values, weights = zip(*options)
    p = np.array(weights) / sum(weights)
    picks = rng.choice(len(values), size=count, p=p)
    return values[int(picks)] if count is None else [values[int(i)] for i in picks]


def _with_at_least_one(rng: np.random.Generator, flags: np.ndarray, candidates: list[int]) -> None:
    """Set one flag among ``candidates`` if none is set, so a small sample still shows the quirk."""
    if candidates and not flags[candidates].any():
        flags[candidates[int(rng.integers(len(candidates)))]] = True


def _plan(n_images: int, seed: int, long_side: int) -> list[_Row]:
    """Every image's flags and file format: ~20% fractured, each film kind present when there is room."""
    rng = np.random.default_rng([seed, 21])
    kinds = list(range(len(_KINDS))) if n_images >= 2 * len(_KINDS) else []
    kinds += _choose(rng, [(k, weight) for k, (_, _, weight) in enumerate(_KINDS)], n_images - len(kinds))
    kinds = [kinds[int(i)] for i in rng.permutation(n_images)]
    n_fractured = min(max(1, round(_FRACTURED_FRACTION * n_images)), n_images - 1)
    fractured = np.zeros(n_images, dtype=bool)
    fractured[rng.choice(n_images, size=n_fractured, replace=False)] = True
    if n_fractured >= 3:  # a fractured mixed film and a fractured two-view film, for the boxes' sake
        kept: list[int] = []
        for wanted in (lambda k: len(_KINDS[k][0]) > 1, lambda k: _KINDS[k][1]):
            candidates = [i for i in range(n_images) if wanted(kinds[i])]
            if candidates and not fractured[candidates].any():
                spare = [i for i in np.flatnonzero(fractured) if i not in kept]
                fractured[spare[int(rng.integers(len(spare)))]] = False
                fractured[candidates[int(rng.integers(len(candidates)))]] = True
            kept += [i for i in candidates if fractured[i]][:1]
    hardware = rng.random(n_images) < np.where(fractured, *_HARDWARE)
    if n_fractured >= 4:
        _with_at_least_one(rng, hardware, list(np.flatnonzero(fractured)))
    if n_images - n_fractured >= 16:
        _with_at_least_one(rng, hardware, list(np.flatnonzero(~fractured)))
    full = rng.random(n_images) < _FULL_SIZE
    if n_fractured >= 2:  # boxes in files of their listed size and in reduced files
        _with_at_least_one(rng, full, list(np.flatnonzero(fractured)))
        reduced = ~full
        _with_at_least_one(rng, reduced, list(np.flatnonzero(fractured)))
        full = ~reduced
    numbers = np.cumsum(1 + (rng.random(n_images) < 0.1)) - 1  # a few ids missing, as in the release
    rows = []
    for i in range(n_images):
        regions, multiscan, _ = _KINDS[kinds[i]]
        if multiscan:
            views = ("frontal", "lateral") if rng.random() < 0.8 else ("frontal", "oblique")
        else:
            views = (str(rng.choice(VIEWS, p=[0.6, 0.3, 0.1])),)
        if full[i]:
            size = listed = _choose(rng, _SMALL_LANDSCAPE if multiscan else _SMALL_SIZES)
        else:
            listed = _choose(rng, _LANDSCAPE_SIZES if multiscan else _LISTED_SIZES)
            factor = long_side / max(listed)
            size = (round(listed[0] * factor), round(listed[1] * factor))
        rows.append(
            _Row(
                number=int(numbers[i]),
                regions=regions,
                multiscan=multiscan,
                fractured=bool(fractured[i]),
                hardware=bool(hardware[i]),
                views=views,
                listed=listed,
                size=size,
                rgb=bool(rng.random() < _RGB),
                quality=int(rng.integers(85, 96)),
            )
        )
    return rows


def _anatomy(rng: np.random.Generator, row: _Row) -> Anatomy:
    """The film's anatomy with its findings: one region, or two stacked for a mixed film."""
    if len(row.regions) > 1:
        top, bottom = _MIXED_LAYOUTS[row.regions]
        anatomy = _stacked(_layout(top, rng), _layout(bottom, rng))
    else:
        anatomy = _layout(str(rng.choice(_REGION_LAYOUTS[row.regions[0]])), rng)
    if row.fractured:
        anatomy = _add_break(rng, anatomy)
    if row.hardware:
        anatomy = _add_hardware(rng, anatomy)
    return anatomy


def _framing(rng: np.random.Generator, anatomy: Anatomy, width: int, height: int, tries: int = 50):
    """A view of ``width`` x ``height`` pixels showing every planted break whole (None if ``tries``
    random views all cut one off), with the breaks' pixel polygons."""
    broken = [bone for bone in anatomy.bones if bone.fracture is not None]
    for _ in range(tries):
        view = replace(_sample_view(rng), width=width, height=height)
        polygons = [_fracture_outline(bone, view) for bone in broken]
        if all(_inside(view, polygon) for polygon in polygons):
            return view, polygons
    return None


def _draw_film(seed: int, row: _Row) -> tuple[np.ndarray, list[_Panel], list[np.ndarray]]:
    """Render one film: the image (H x W uint8), its panels, and a pixel polygon per visible break
    (one per broken bone and view), each wholly inside the exposed field of its panel. Breaks too far
    apart to frame together (two bones broken at opposite ends) are planted again."""
    rng = np.random.default_rng([seed, 23, row.number])
    width, height = row.size
    edges = [0, width // 2, width] if row.multiscan else [0, width]
    for _ in range(20):
        anatomy = _anatomy(rng, row)
        framings = [_framing(rng, anatomy, x1 - x0, height) for x0, x1 in zip(edges[:-1], edges[1:])]
        if all(framings):
            break
    else:
        raise RuntimeError(f"{row.name} (seed {seed}): no framing of its planted fractures found in 20 plantings")
    shapes = _shapes(anatomy)
    images = [render_radiograph(shapes, view, rng) for view, _ in framings]
    panels = [_Panel(x0, view, anatomy) for x0, (view, _) in zip(edges, framings)]
    outlines = [polygon + [x0, 0.0] for x0, (_, polygons) in zip(edges, framings) for polygon in polygons]
    return np.hstack(images), panels, outlines


def make_fracatlas_sample(
    root: str | Path, n_images: int = 60, seed: int = 0, long_side: int = 256, *, overwrite: bool = False
) -> Path:
    """Write a synthetic FracAtlas-shaped set into ``root`` and return ``root``.

    Layout as released: ``dataset.csv`` (FracAtlas's 13 columns), ``images/Fractured`` and
    ``images/Non_fractured`` (``IMG*.jpg``), ``Annotations/COCO JSON/COCO_fracture_masks.json`` (the
    fractured images only, one polygon and box per visible break: one per broken bone and view), and
    ``SYNTHETIC_SAMPLE.txt`` marking it as generated. About 20% of images are fractured. Most files are
    reduced to ``long_side`` pixels while the JSON lists the official size, so boxes must be scaled by
    file size / listed size; some are written at their listed size. ``n_images=60``: ~0.7 s, ~0.7 MB.
    The same seed gives byte-identical files. A non-empty ``root`` is an error, unless ``overwrite`` is
    true and it holds the marker (a generated sample), in which case it is replaced.
    """
    if n_images < 2:
        raise ValueError(f"n_images must be at least 2 (one fractured, one not), not {n_images}")
    if long_side < 64:
        raise ValueError(f"long_side must be at least 64 pixels, not {long_side}")
    root = Path(root)
    _prepare(root, overwrite, root / SYNTHETIC_MARKER)
    for folder in LABEL_FOLDERS.values():
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
    lines = [",".join(FRACATLAS_COLUMNS)]
    coco = {"info": {"description": "my-project-name"}, "images": [], "annotations": [], "categories": []}
    for row in _plan(n_images, seed, long_side):
        image, _, outlines = _draw_film(seed, row)
        (root / row.relative).write_bytes(_jpeg_bytes(image, row.quality, rgb=row.rgb))
        flags = [int(region in row.regions) for region in REGIONS] + [int(len(row.regions) > 1)]
        flags += [int(row.hardware), int(row.multiscan), int(row.fractured), len(outlines)]
        flags += [int(view in row.views) for view in VIEWS]
        lines.append(",".join([row.name, *map(str, flags)]))
        if not row.fractured:
            continue
        image_id = len(coco["images"]) + 1
        coco["images"].append({"id": image_id, "width": row.listed[0], "height": row.listed[1], "file_name": row.name})
        to_listed = np.array(row.listed) / np.array(row.size)
        for outline in outlines:
            polygon = outline * to_listed
            x0, y0 = polygon.min(axis=0)
            x1, y1 = polygon.max(axis=0)
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]),
                    "iscrowd": 0,
                    "image_id": image_id,
                    "category_id": 0,
                    "segmentation": [[round(float(v), 3) for v in polygon.ravel()]],
                    "bbox": [round(float(v), 3) for v in (x0, y0, x1 - x0, y1 - y0)],
                    "area": round(_polygon_area(polygon), 3),
                }
            )
    coco["categories"].append({"id": 0, "name": "fractured"})
    (root / "dataset.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    boxes = root / FRACATLAS_BOXES
    boxes.parent.mkdir(parents=True, exist_ok=True)
    boxes.write_text(json.dumps(coco), encoding="utf-8")
    (root / SYNTHETIC_MARKER).write_text(
        "Synthetic FracAtlas-shaped sample written by mura_utils.synthetic.make_fracatlas_sample "
        f"(seed={seed}, n_images={n_images}, long_side={long_side}).\n"
        "Cartoon radiographs, not patient data: metrics measured on it say nothing about FracAtlas.\n",
        encoding="utf-8",
    )
    return root
