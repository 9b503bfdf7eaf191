"""Perceptual descriptors that survive the augmentations a public set ships as extra "images".

Kaggle-style sets often include augmented copies of one radiograph (``12-rotated1.jpg``,
``12-rotated1-rotated2.jpg``): quarter turns, mirror images, small rotations with black or cropped
corners, resized or re-encoded files. A plain pHash misses most of them (a 5 degree rotation moves
it by ~10 of 64 bits), so each image gets three descriptors, all from one decode:

* ``dihedral``: the 64-bit pHash of its 32x32 thumbnail under the 8 quarter-turn/mirror transforms
  (index 0 is the plain pHash, identical to ``imagehash.phash``);
* ``turned``: pHashes of a central square crop (half the short side), isotropically scaled, at
  rotations -10..10 degrees (2.5 degree steps) and scales 1, 1.1, 1.22 and their inverses, so a
  rotated copy (black corners, expanded canvas or cropped-and-zoomed) matches one of them;
* ``thumb`` and ``canvas``: small pixel arrays kept to *verify* a hash match by correlation, which
  keeps distinct radiographs with similar layouts (same body part, same view) apart.

A pair is a candidate when the plain hash of one is within the cutoff of any transformed hash of
the other, and a duplicate when the aligned thumbnails also correlate (after a high-pass filter that
removes the shared dark-background-bright-bone layout) at ``MIN_CORRELATION`` or more (rotations:
``ROTATION_MIN_CORRELATION``, their crops hold less of the image).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image
from scipy.fft import dct
from scipy.ndimage import gaussian_filter1d

DEFAULT_MAX_DISTANCE = 6  # bits of 64: re-encoding or light resizing moves a phash by a few bits
ROTATION_MAX_DISTANCE = 8  # bits of 64 between a centre crop and the nearest rotated/scaled crop
MIN_CORRELATION = 0.86  # high-passed aligned thumbnails: copies >= 0.99, distinct synthetic <= 0.75
ROTATION_MIN_CORRELATION = 0.88  # aligned centre crops: rotated copies mostly >= 0.9, distinct <= 0.87

THUMB = 32  # pHash input size (as imagehash)
CANVAS_SHORT = 64  # the rotation descriptor works on the image scaled to this short side...
CANVAS = 64  # ...cut to this central square
CROP = 32  # the crop hashed at scale 1: half the short side
VERIFY_CROP = 44  # the crop compared to verify a rotation match: ~0.7 of the short side, more content
VERIFY_SIZE = 44
ANGLES = tuple(float(a) for a in np.arange(-10.0, 10.01, 2.5))
SCALES = (1.0, 1.1, 1 / 1.1, 1.22, 1 / 1.22)
HIGHPASS_SIGMA = 3.0

# (name, function) pairs: thumb_i ~ transform(thumb_j) when dihedral[i][0] matches dihedral[j][t]
DIHEDRAL: tuple[tuple[str, object], ...] = (
    ("re-encoded or resized", lambda a: a),
    ("quarter turn (90 degrees)", lambda a: np.rot90(a, 1)),
    ("half turn (180 degrees)", lambda a: np.rot90(a, 2)),
    ("quarter turn (270 degrees)", lambda a: np.rot90(a, 3)),
    ("mirror image (left-right)", lambda a: a[..., :, ::-1]),
    ("mirror image (top-bottom)", lambda a: a[..., ::-1, :]),
    ("mirror image (transposed)", lambda a: np.swapaxes(a, -1, -2)),
    ("mirror image (anti-transposed)", lambda a: np.rot90(a, 2).swapaxes(-1, -2)),
)
# rotation variants, the plain crop first so ties resolve to "no rotation"
TURNS: tuple[tuple[float, float], ...] = tuple(
    sorted(((a, s) for s in SCALES for a in ANGLES), key=lambda t: (abs(t[0]), abs(np.log(t[1])), t[0], t[1]))
)
KIND_ORDER = {"exact": 0, "near": 1, "transformed": 2}

_BIT_WEIGHTS = np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)


def phash_bits(pixels: np.ndarray) -> np.ndarray:
    """imagehash's pHash of (..., 32, 32) arrays as uint64: low 8x8 DCT above its median, row-major."""
    coefficients = dct(dct(np.asarray(pixels, dtype=np.float64), axis=-2), axis=-1)[..., :8, :8]
    low = coefficients.reshape(*coefficients.shape[:-2], 64)
    bits = low > np.median(low, axis=-1, keepdims=True)
    return (bits.astype(np.uint64) * _BIT_WEIGHTS).sum(axis=-1, dtype=np.uint64)


def _canvas(gray: np.ndarray) -> np.ndarray:
    """The image scaled (keeping its aspect ratio) to a short side of CANVAS_SHORT, centre CANVAS^2."""
    height, width = gray.shape
    scale = CANVAS_SHORT / min(height, width)
    size = (max(CANVAS, round(width * scale)), max(CANVAS, round(height * scale)))
    image = Image.fromarray(gray).resize(size, Image.BILINEAR)
    left, top = (size[0] - CANVAS) // 2, (size[1] - CANVAS) // 2
    return np.asarray(image.crop((left, top, left + CANVAS, top + CANVAS)))


def turned_crops(canvas: np.ndarray, angles, scales, crop: int = CROP, size: int = THUMB) -> np.ndarray:
    """(len(angles) * len(scales), size, size): the canvas rotated by each angle (degrees, about its
    centre; one rotation per angle), then its central crop*scale square resized to size x size."""
    image = Image.fromarray(canvas)
    centre = canvas.shape[0] / 2
    crops = []
    for angle in angles:
        turned = image.rotate(float(angle), Image.BILINEAR, fillcolor=0) if angle else image
        for scale in scales:
            half = crop * scale / 2
            box = (centre - half, centre - half, centre + half, centre + half)
            crops.append(np.asarray(turned.resize((size, size), Image.BILINEAR, box=box)))
    return np.stack(crops).astype(np.float64)


_TURN_POSITION = [ANGLES.index(angle) * len(SCALES) + SCALES.index(scale) for angle, scale in TURNS]


def image_descriptors(gray: np.ndarray) -> dict[str, np.ndarray]:
    """dihedral (8 uint64), turned (len(TURNS) uint64), thumb (32x32 uint8), canvas (64x64 uint8)."""
    thumb = np.asarray(Image.fromarray(gray).resize((THUMB, THUMB), Image.LANCZOS))
    variants = np.stack([transform(thumb) for _, transform in DIHEDRAL]).astype(np.float64)
    canvas = _canvas(gray)
    crops = turned_crops(canvas, ANGLES, SCALES)[_TURN_POSITION]
    return {"dihedral": phash_bits(variants), "turned": phash_bits(crops), "thumb": thumb, "canvas": canvas}


# ------------------------------------------------------------------ hash distances

_POPCOUNT8 = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def _popcount64_lut(values: np.ndarray) -> np.ndarray:
    """Bits set per uint64 via a byte lookup table (fallback for numpy < 2.0)."""
    values = np.ascontiguousarray(values, dtype=np.uint64)
    return _POPCOUNT8[values.view(np.uint8)].reshape(*values.shape, 8).sum(axis=-1, dtype=np.uint8)


_popcount64 = getattr(np, "bitwise_count", _popcount64_lut)


def hamming_pairs(hashes: np.ndarray, max_distance: int = DEFAULT_MAX_DISTANCE) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of uint64 hashes within ``max_distance`` differing bits."""
    left, right, _ = transformed_pairs(np.asarray(hashes, dtype=np.uint64)[:, None], max_distance)
    return left, right


def transformed_pairs(
    variants: np.ndarray, max_distance: int, *, block_cells: int = 1 << 21
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) whose plain hash ``variants[i, 0]`` is within ``max_distance`` bits of any
    ``variants[j, v]``; returns (i, j, v) with the closest v (lowest index on ties).

    All pairs, XOR + popcount in row blocks with a running minimum over the variants: O(n^2 V) but
    vectorized (~3 ns per comparison on one core) and with bounded memory.
    """
    variants = np.asarray(variants, dtype=np.uint64)
    n, count = variants.shape
    pool = np.ascontiguousarray(variants.T)  # (V, n): each variant's hashes contiguous
    block = max(1, block_cells // max(n, 1))
    lefts, rights = [], []
    for start in range(0, n, block):
        rows = variants[start : start + block, :1]  # (b, 1) plain hashes
        closest = np.full((len(rows), n - start), 255, dtype=np.uint8)
        for v in range(count):
            np.minimum(closest, _popcount64(rows ^ pool[v, None, start:]), out=closest)
        i, j = np.nonzero(closest <= max_distance)
        upper = j > i
        lefts.append(i[upper] + start)
        rights.append(j[upper] + start)
    left = np.concatenate(lefts).astype(np.int64) if lefts else np.empty(0, np.int64)
    right = np.concatenate(rights).astype(np.int64) if rights else np.empty(0, np.int64)
    distances = _popcount64(variants[left, :1] ^ variants[right]) if len(left) else np.empty((0, count), np.uint8)
    return left, right, distances.argmin(axis=1).astype(np.int64)


def components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Union-find over n items; returns component ids 0, 1, ... numbered by first appearance."""
    parent = list(range(n))

    def find(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for a, b in zip(np.asarray(left).tolist(), np.asarray(right).tolist()):
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)
    roots = np.array([find(item) for item in range(n)], dtype=np.int64)
    return pd.factorize(roots)[0].astype(np.int64)


def group_hashes(hashes: np.ndarray, max_distance: int = DEFAULT_MAX_DISTANCE) -> np.ndarray:
    """Group id per uint64 hash: hashes within ``max_distance`` bits are joined, transitively.

    Identical hashes are collapsed first, so a file copied fifty times costs one comparison row.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    unique, inverse = np.unique(hashes, return_inverse=True)
    left, right = hamming_pairs(unique, max_distance)
    groups = components(len(unique), left, right)[inverse.reshape(-1)]
    return pd.factorize(groups)[0].astype(np.int64)


# ------------------------------------------------------------------ verification


_BLUR = {size: gaussian_filter1d(np.eye(size), HIGHPASS_SIGMA, axis=0) for size in {THUMB, VERIFY_SIZE}}


def _highpassed(pixels: np.ndarray) -> np.ndarray:
    """(..., n, n) -> (..., n*n): zero-mean, unit-norm detail (the blurred layout removed); zeros if flat."""
    pixels = np.asarray(pixels, dtype=np.float64)
    size = pixels.shape[-1]
    blur = _BLUR[size]  # blurred column = blur @ column
    detail = (pixels - blur @ pixels @ blur.T).reshape(*pixels.shape[:-2], size * size)
    detail = detail - detail.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(detail, axis=-1, keepdims=True)
    return np.where(norm > 1e-6, detail / np.maximum(norm, 1e-6), 0.0)


def _pair_correlation(ha: np.ndarray, hb: np.ndarray) -> float:
    if not ha.any() and not hb.any():
        return 1.0  # two flat images with matching hashes: nothing more to compare
    return float(ha @ hb)


def _best_turn_correlation(canvas_a: np.ndarray, canvas_b: np.ndarray, angle: float, scale: float) -> float:
    """Refine the hash's rotation/scale on a finer grid; the best correlation of the aligned crops."""
    reference = _highpassed(turned_crops(canvas_a, [0.0], [1.0], VERIFY_CROP, VERIFY_SIZE)[0])
    angles = [angle + step for step in (-1.25, -0.625, 0.0, 0.625, 1.25)]
    scales = [scale * step for step in (0.95, 1.0, 1.05)]
    candidates = _highpassed(turned_crops(canvas_b, angles, scales, VERIFY_CROP, VERIFY_SIZE))
    if not reference.any():
        return 1.0 if not candidates.any() else 0.0
    return float((candidates @ reference).max())


@dataclass(frozen=True)
class Link:
    """Two rows (i < j) judged copies of one image, and how: kind exact/near/transformed, detail."""

    left: int
    right: int
    kind: str
    detail: str


def find_links(
    descriptors: list[dict[str, np.ndarray]],
    max_distance: int = DEFAULT_MAX_DISTANCE,
    rotation_max_distance: int = ROTATION_MAX_DISTANCE,
    min_correlation: float = MIN_CORRELATION,
    rotation_min_correlation: float = ROTATION_MIN_CORRELATION,
) -> list[Link]:
    """Verified near/transformed pairs among images (indices into ``descriptors``)."""
    if len(descriptors) < 2:
        return []
    dihedral = np.stack([d["dihedral"] for d in descriptors])
    turned = np.stack([d["turned"] for d in descriptors])
    plain_pairs = transformed_pairs(dihedral, max_distance)
    turned_pairs = transformed_pairs(turned, rotation_max_distance)
    # verify same-orientation candidates first, then turned/mirrored, then rotated; a pair already
    # joined through verified links needs no check of its own (groups are transitive anyway)
    candidates = sorted(
        [(0 if v == 0 else 1, i, j, v) for i, j, v in zip(*(x.tolist() for x in plain_pairs))]
        + [(2, i, j, v) for i, j, v in zip(*(x.tolist() for x in turned_pairs))]
    )
    parent = list(range(len(descriptors)))

    def find(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    highpassed: dict[int, np.ndarray] = {}

    def detail_of(row: int) -> np.ndarray:
        if row not in highpassed:
            highpassed[row] = _highpassed(descriptors[row]["thumb"])
        return highpassed[row]

    links = []
    for stage, i, j, v in candidates:
        root_i, root_j = find(i), find(j)
        if root_i == root_j:
            continue
        if stage < 2:
            name, transform = DIHEDRAL[v]
            other = detail_of(j) if v == 0 else _highpassed(transform(descriptors[j]["thumb"]))
            correlation = _pair_correlation(detail_of(i), other)
            link = Link(i, j, "near" if v == 0 else "transformed", name)
        else:  # refine around the closest rotation/scale hashes (up to three) until one verifies
            distances = _popcount64(turned[i, 0] ^ turned[j])
            correlation, v = -1.0, 0
            for k in np.argsort(distances, kind="stable")[:3].tolist():
                if distances[k] > rotation_max_distance or correlation >= rotation_min_correlation:
                    break
                score = _best_turn_correlation(descriptors[i]["canvas"], descriptors[j]["canvas"], *TURNS[k])
                if score > correlation:
                    correlation, v = score, k
            angle, scale = TURNS[v]
            kind = "transformed" if angle else "near"
            link = Link(
                i, j, kind, f"small rotation ({angle:+.1f} degrees)" if angle else f"rescaled or cropped (x{scale:.2f})"
            )
        if correlation >= (min_correlation if stage < 2 else rotation_min_correlation):
            links.append(link)
            parent[max(root_i, root_j)] = min(root_i, root_j)
    return sorted(links, key=lambda link: (link.left, link.right))
