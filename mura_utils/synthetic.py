"""Synthetic stand-ins for MURA-v1.1 and for the Kaggle multi-region bone-fracture set.

MURA needs a signed data-use agreement, so the repo ships no radiographs. ``make_sample`` writes
a small tree with exactly the release's layout (same folders, same four header-less CSVs, same
quirks: patients under several body parts, several studies per patient, 1-4 views per study,
mixed sizes and PNG modes), so the loader, training and evaluation code run on it unchanged.
``make_external_sample`` writes a tiny set in the layout of the public Kaggle "Bone Fracture
Binary Classification" download, with its planted quirks (duplicates, a truncated file, stray
files), for the external-generalization code.

The pictures are cartoons of radiographs drawn with PIL: dark background, soft tissue, bones
with a bright cortex around a darker medulla, in the arrangement typical of each body part, so
body part is learnable. Abnormal studies show one planted finding (metal hardware, a displaced
cortical break, or a degenerative joint) in most of their views; normal ones never do. Everything
is drawn from a numpy Generator seeded from ``seed``, so a seed gives byte-identical files.

Layout of this module, top to bottom: anatomy primitives, one layout function per body part,
findings, rendering, file writing, then the two public functions.
"""

from __future__ import annotations

import io
import json
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mura_utils.constants import BODY_PARTS

__all__ = [
    "make_sample",
    "make_external_sample",
    "render_radiograph",
    "MURA_DIRNAME",
    "EXTERNAL_DIRNAME",
    "EXTERNAL_MANIFEST",
    "SYNTHETIC_MARKER",
]

MURA_DIRNAME = "MURA-v1.1"
EXTERNAL_DIRNAME = "Bone_Fracture_Binary_Classification"
EXTERNAL_MANIFEST = "external_sample_manifest.json"
# Written into every generated MURA-v1.1 folder (mura_utils.experiment.is_synthetic looks for it).
SYNTHETIC_MARKER = "SYNTHETIC_SAMPLE.txt"

# The order the v1.1 CSVs list body parts in: train starts at XR_SHOULDER/patient00001 and
# valid at XR_WRIST/patient11185.
_TRAIN_PART_ORDER = ("SHOULDER", "HUMERUS", "FINGER", "ELBOW", "WRIST", "FOREARM", "HAND")
_VALID_PART_ORDER = ("WRIST", "FOREARM", "ELBOW", "FINGER", "HAND", "HUMERUS", "SHOULDER")
assert sorted(_TRAIN_PART_ORDER) == sorted(BODY_PARTS) == sorted(_VALID_PART_ORDER)
_FIRST_VALID_PATIENT = 11185  # valid ids sit above every train id, as in the release

_STUDIES_PER_PATIENT = ((1, 2, 3), (0.75, 0.20, 0.05))
_IMAGES_PER_STUDY = ((1, 2, 3, 4), (0.12, 0.40, 0.33, 0.15))
_ABNORMAL_FRACTION = 0.4
# Each view of an abnormal study shows its finding with this chance (a fracture is often seen
# in one view only), but at least one view always does: the radiologist saw it somewhere.
_FINDING_PROBABILITY = 0.85
_FINDING_KINDS = (("hardware", "break", "degenerative"), (0.45, 0.3, 0.25))  # MURA: ~half metal
_PNG_MODES = (("L", "RGB", "LA", "I;16"), (0.76, 0.12, 0.06, 0.06))

# Raw "density" levels drawn on the canvas before exposure; only their order matters.
_BACKGROUND, _CLEFT, _TISSUE, _MEDULLA, _CORTEX = 12, 30, 72, 135, 185
_SCLEROSIS = 200  # strength (of 255) on the overlay layer that metal is drawn on


# --------------------------------------------------------------------------------------------
# Anatomy primitives, in normalized units: the field of view is about 1 tall, y points down.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Break:
    """A cortical break across a bone: where it is, its jagged shape and the fragment's shift."""

    at: float  # fraction of the bone's length
    slope: float  # obliquity of the fracture line (axial offset per unit of width)
    jitter: tuple[float, ...]  # jagged axial offsets across the width, in units of width
    gap: float  # distance between the fragments, in units of width
    shift: float  # sideways displacement of the distal fragment, in units of width
    angle: float  # angulation of the distal fragment, radians
    callus: bool = False  # a healing fracture: a hazy bright cuff of new bone around it


@dataclass(frozen=True)
class Bone:
    """A tubular bone from ``a`` to ``b``: a shaft that flares into rounded ends."""

    a: tuple[float, float]
    b: tuple[float, float]
    width: float
    flare_a: float = 1.3
    flare_b: float = 1.3
    cortex: float = 0.17  # cortical thickness, in units of width
    fracture: Break | None = None

    @property
    def length(self) -> float:
        return math.dist(self.a, self.b)


@dataclass(frozen=True)
class Blob:
    """A compact bone (carpal, patella, humeral head, talus): an ellipse with a cortical rim."""

    center: tuple[float, float]
    rx: float
    ry: float
    angle: float = 0.0


@dataclass(frozen=True)
class Joint:
    """A joint gap centred at ``center``; ``axis`` crosses the gap, ``width`` spans the joint."""

    center: tuple[float, float]
    axis: tuple[float, float]
    width: float
    gap: float


@dataclass(frozen=True)
class Anatomy:
    """Everything drawn for one body part; findings add hardware polygons or sclerotic blobs."""

    bones: tuple[Bone, ...]
    blobs: tuple[Blob, ...] = ()
    joints: tuple[Joint, ...] = ()
    tissue: tuple[np.ndarray, ...] = ()  # extra soft-tissue polygons (body, palm)
    tissue_margin: float = 0.05  # soft tissue around every bone
    flat_bones: tuple[np.ndarray, ...] = ()  # scapula, glenoid: drawn under the other bones
    metal: tuple[np.ndarray, ...] = ()  # hardware polygons, drawn last and brightest
    sclerosis: tuple[np.ndarray, ...] = ()  # osteophytes / subchondral sclerosis


def _unit(angle: float) -> tuple[float, float]:
    """Direction at ``angle`` radians from straight up (y points down, so up is (0, -1))."""
    return (math.sin(angle), -math.cos(angle))


def _ellipse(center, rx: float, ry: float, angle: float = 0.0, n: int = 20) -> np.ndarray:
    """Polygon points of a rotated ellipse; ImageDraw's ellipses cannot rotate."""
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    z = (rx * np.cos(t) + 1j * ry * np.sin(t)) * complex(math.cos(angle), math.sin(angle))
    return (z + complex(*center)).view(np.float64).reshape(-1, 2)


def _quad(p, q, half_width: float) -> np.ndarray:
    """A rectangle of ``2 * half_width`` around the segment p-q (plates, pins, screws)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    d = q - p
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9) * half_width
    return np.stack([p + n, q + n, q - n, p - n])


def _chain(
    rng: np.random.Generator,
    start,
    angle: float,
    lengths,
    widths,
    gap: float,
    bend: float = 0.04,
    flare_last: float = 1.3,
):
    """Bones laid end to end with joint gaps (phalanges, metacarpal plus phalanges)."""
    bones, joints = [], []
    x, y = start
    for i, (length, width) in enumerate(zip(lengths, widths)):
        angle += rng.normal(0.0, bend)
        ux, uy = _unit(angle)
        a = (x, y)
        b = (x + ux * length, y + uy * length)
        last = i == len(lengths) - 1
        bones.append(Bone(a, b, width, 1.35, flare_last if last else 1.35))
        if not last:
            joints.append(Joint((b[0] + ux * gap / 2, b[1] + uy * gap / 2), (ux, uy), width * 1.3, gap))
        x, y = b[0] + ux * gap, b[1] + uy * gap
    return bones, joints


# --------------------------------------------------------------------------------------------
# One layout per body part: the bone arrangement that makes each part recognisable.
# --------------------------------------------------------------------------------------------


def _finger(rng: np.random.Generator) -> Anatomy:
    """FINGER: a metacarpal head and a chain of three phalanges with joint gaps."""
    k = rng.uniform(0.9, 1.08)
    w = rng.uniform(0.07, 0.085) * k
    gap = rng.uniform(0.024, 0.032) * k
    lengths = np.array([0.3, 0.3, 0.2, 0.14]) * k
    bones, joints = _chain(
        rng,
        (rng.normal(0, 0.02), 0.62 * k),
        rng.normal(0, 0.05),
        lengths,
        [w * 1.25, w, w * 0.86, w * 0.78],
        gap,
        0.05,
        1.55,
    )
    return Anatomy(tuple(bones), joints=tuple(joints), tissue_margin=rng.uniform(0.035, 0.06))


def _hand(rng: np.random.Generator) -> Anatomy:
    """HAND: carpals, five metacarpals fanning out, each continuing into a finger chain."""
    k = rng.uniform(0.92, 1.06)
    bones, joints, tissue = [], [], []
    gap = 0.014 * k
    for i, (x0, angle) in enumerate([(-0.1, -0.17), (-0.035, -0.05), (0.03, 0.05), (0.095, 0.16)]):
        meta = 0.22 - 0.015 * abs(i - 1.2)
        finger = np.array([0.15, 0.095, 0.065]) * (1.0 - 0.08 * abs(i - 1.5))
        b, j = _chain(
            rng,
            (x0 * k, 0.3),
            angle + rng.normal(0, 0.04),
            np.r_[meta, finger] * k,
            np.array([0.04, 0.033, 0.028, 0.024]) * k,
            gap,
            0.04,
            1.5,
        )
        bones += b
        joints += j
    b, j = _chain(
        rng,
        (-0.15 * k, 0.33),
        -0.75 + rng.normal(0, 0.06),
        np.array([0.14, 0.11, 0.075]) * k,
        np.array([0.043, 0.036, 0.03]) * k,
        gap,
        0.05,
        1.5,
    )
    bones += b
    joints += j
    blobs = tuple(
        Blob((cx * k + rng.normal(0, 0.005), cy + rng.normal(0, 0.005)), rx * k, ry * k, rng.uniform(-0.5, 0.5))
        for cx, cy, rx, ry in [
            (-0.1, 0.35, 0.03, 0.022),
            (-0.04, 0.35, 0.026, 0.022),
            (0.02, 0.35, 0.026, 0.024),
            (0.08, 0.36, 0.028, 0.024),
            (-0.09, 0.41, 0.035, 0.024),
            (-0.02, 0.41, 0.03, 0.024),
            (0.04, 0.41, 0.028, 0.022),
            (0.09, 0.42, 0.02, 0.018),
        ]
    )
    bones += [
        Bone((-0.05 * k, 0.75), (-0.05 * k, 0.455), 0.12 * k, 1.0, 1.3),
        Bone((0.085 * k, 0.75), (0.085 * k, 0.46), 0.06 * k, 1.0, 1.3),
    ]
    palm = np.array([[-0.19, 0.45], [-0.14, 0.22], [0.15, 0.22], [0.17, 0.45]]) * [k, 1]
    tissue.append(np.vstack([palm, [[0.12 * k, 0.8], [-0.13 * k, 0.8]]]))
    return Anatomy(tuple(bones), blobs, tuple(joints), tuple(tissue), rng.uniform(0.03, 0.05))


def _wrist(rng: np.random.Generator) -> Anatomy:
    """WRIST: distal radius and ulna ends, two rows of small carpals, metacarpal bases."""
    k = rng.uniform(0.92, 1.08)
    top = 0.1 + rng.normal(0, 0.01)
    bones = [
        Bone((-0.07 * k, 0.8), (-0.07 * k, top), 0.12 * k, 1.0, 1.55),
        Bone((0.11 * k, 0.8), (0.11 * k, top + 0.05), 0.07 * k, 1.0, 1.3),
    ]
    bones += [
        Bone((x * k, -0.2), (x * k + 0.15 * dx, -0.75), 0.05 * k, 1.4, 1.0)
        for x, dx in [(-0.14, -0.5), (-0.06, -0.15), (0.02, 0.1), (0.1, 0.35)]
    ]
    blobs = tuple(
        Blob(((cx + rng.normal(0, 0.006)) * k, cy + rng.normal(0, 0.006)), rx * k, ry * k, rng.uniform(-0.6, 0.6))
        for cx, cy, rx, ry in [
            (-0.1, 0.03, 0.05, 0.04),
            (-0.01, 0.03, 0.045, 0.04),
            (0.07, 0.04, 0.035, 0.035),
            (0.12, 0.02, 0.02, 0.02),
            (-0.15, -0.1, 0.04, 0.035),
            (-0.07, -0.1, 0.04, 0.038),
            (0.01, -0.09, 0.045, 0.042),
            (0.09, -0.09, 0.045, 0.04),
        ]
    )
    joints = (
        Joint((-0.07 * k, top - 0.02), (0, -1), 0.16 * k, 0.03),
        Joint((-0.03 * k, -0.16), (0, -1), 0.16 * k, 0.02),
    )
    return Anatomy(tuple(bones), blobs, joints, tissue_margin=rng.uniform(0.05, 0.09))


def _forearm(rng: np.random.Generator) -> Anatomy:
    """FOREARM: radius and ulna, two long bones side by side, with the joints at both ends."""
    k = rng.uniform(0.9, 1.05)
    spread = rng.uniform(0.06, 0.09)
    bones = (
        Bone((-spread, -0.44), (-spread * 1.3, 0.44), 0.07 * k, 1.5, 1.7),
        Bone((spread, -0.5), (spread * 1.1, 0.42), 0.062 * k, 1.9, 1.3),
        Bone((0.0, -0.85), (0.0, -0.535), 0.11 * k, 1.0, 1.6),
    )
    blobs = (Blob((-0.08, 0.5), 0.045, 0.03, 0.3), Blob((0.02, 0.5), 0.04, 0.03, -0.2))
    joints = (Joint((0.0, -0.515), (0, 1), 0.2 * k, 0.03), Joint((-spread * 1.3, 0.46), (0, 1), 0.12 * k, 0.025))
    return Anatomy(bones, blobs, joints, tissue_margin=rng.uniform(0.05, 0.085))


def _elbow(rng: np.random.Generator) -> Anatomy:
    """ELBOW: the humerus end with its condyles meeting radius and ulna at an angle."""
    bend = rng.uniform(0.0, 0.6) * rng.choice([-1, 1])
    gap = rng.uniform(0.03, 0.045)
    humerus = Bone((0.0, -0.75), (0.0, -0.02), 0.12, 1.0, 1.9)
    ux, uy = _unit(math.pi + bend)  # forearm direction, pointing down-ish
    nx, ny = -uy, ux
    start = (ux * gap, -0.02 + uy * gap)
    ulna = Bone(
        (start[0] + nx * 0.035, start[1] + ny * 0.035),
        (start[0] + nx * 0.035 + ux * 0.8, start[1] + ny * 0.035 + uy * 0.8),
        0.07,
        1.7,
    )
    radius = Bone(
        (start[0] - nx * 0.055, start[1] - ny * 0.055 + 0.01),
        (start[0] - nx * 0.07 + ux * 0.8, start[1] - ny * 0.07 + uy * 0.8),
        0.065,
        1.45,
    )
    joints = (Joint((ux * gap / 2, -0.02 + uy * gap / 2), (ux, uy), 0.2, gap),)
    blob = Blob((0.03, -0.06), 0.05, 0.04)
    return Anatomy((humerus, ulna, radius), (blob,), joints, tissue_margin=rng.uniform(0.06, 0.1))


def _humerus(rng: np.random.Generator) -> Anatomy:
    """HUMERUS: one long thick bone with a rounded head and flared condyles, with the edge of
    the glenoid above and the forearm bones' ends below."""
    tilt = rng.normal(0, 0.03)
    bone = Bone((0.0, -0.3), (tilt, 0.32), rng.uniform(0.095, 0.115), 1.5, 1.9)
    head = Blob((0.01, -0.33), 0.085, 0.08)
    arc = np.linspace(-0.8, 0.8, 7)
    glenoid = np.stack([-0.11 - 0.03 * np.cos(arc), -0.33 + 0.09 * np.sin(arc)], axis=1)
    glenoid = np.vstack([glenoid, [[-0.3, -0.2], [-0.3, -0.5]]])
    forearm = (
        Bone((tilt - 0.04, 0.375), (tilt - 0.07, 0.85), 0.06, 1.4, 1.0),
        Bone((tilt + 0.045, 0.37), (tilt + 0.07, 0.85), 0.055, 1.6, 1.0),
    )
    joints = (Joint((-0.09, -0.33), (1, 0), 0.15, 0.03), Joint((tilt, 0.35), (0, 1), 0.18, 0.03))
    return Anatomy((bone,) + forearm, (head,), joints, tissue_margin=rng.uniform(0.08, 0.13), flat_bones=(glenoid,))


def _shoulder(rng: np.random.Generator) -> Anatomy:
    """SHOULDER: a large humeral-head ball against the glenoid arc, scapula and clavicle."""
    hx, hy, r = 0.08 + rng.normal(0, 0.02), 0.0, rng.uniform(0.14, 0.17)
    shaft = Bone((hx + 0.03, hy + 0.05), (hx + 0.12, 0.9), 0.13, 1.3, 1.0)
    head = Blob((hx, hy), r, r * 0.95)
    gx = hx - r - 0.03
    arc = np.linspace(-0.9, 0.9, 9)
    glenoid = np.stack([gx - 0.05 * (1 - np.cos(arc)), hy + 0.16 * np.sin(arc)], axis=1)
    scapula = np.vstack([glenoid, [[gx - 0.5, 0.5], [gx - 0.55, -0.15], [gx - 0.08, -0.2]]])
    clavicle = Bone((-0.65, -0.32 + rng.normal(0, 0.02)), (hx + 0.05, -0.3), 0.055, 1.2, 1.5)
    acromion = Bone((gx - 0.1, -0.22), (hx + 0.1, -0.24), 0.05, 1.3, 1.4)
    body = np.array([[-1.0, -0.5], [hx + r + 0.1, -0.4], [hx + r + 0.2, 1.0], [-1.0, 1.0]])
    joints = (Joint((gx + 0.015, hy), (1, 0), 0.26, 0.03),)
    return Anatomy((shaft, clavicle, acromion), (head,), joints, (body,), rng.uniform(0.05, 0.1), flat_bones=(scapula,))


# Lower-limb layouts, used only by the external (Kaggle-like) sample.


def _tibia_fibula(rng: np.random.Generator) -> Anatomy:
    """TIBIA/FIBULA: a thick tibia beside a thin fibula (external sample only)."""
    k = rng.uniform(0.9, 1.05)
    bones = (
        Bone((-0.04, -0.5), (-0.05, 0.5), 0.12 * k, 1.6, 1.5),
        Bone((0.1, -0.45), (0.08, 0.5), 0.045 * k, 1.5, 1.6),
    )
    return Anatomy(bones, tissue_margin=rng.uniform(0.07, 0.12))


def _ankle(rng: np.random.Generator) -> Anatomy:
    """ANKLE: distal tibia and fibula over the talus dome, calcaneus below (external only)."""
    bones = (Bone((-0.02, -0.8), (-0.02, -0.04), 0.16, 1.0, 1.5), Bone((0.14, -0.8), (0.15, 0.06), 0.05, 1.0, 1.8))
    blobs = (Blob((-0.02, 0.1), 0.13, 0.09), Blob((0.0, 0.33), 0.2, 0.1, 0.1))
    joints = (Joint((-0.02, -0.02), (0, 1), 0.22, 0.03),)
    return Anatomy(bones, blobs, joints, tissue_margin=rng.uniform(0.07, 0.11))


def _knee(rng: np.random.Generator) -> Anatomy:
    """KNEE: femoral condyles over the tibial plateau, patella and fibular head (external)."""
    bones = (
        Bone((0.0, -0.8), (0.0, -0.02), 0.17, 1.0, 1.9),
        Bone((0.0, 0.02 + 0.04), (0.0, 0.8), 0.15, 1.8, 1.0),
        Bone((0.2, 0.12), (0.19, 0.8), 0.05, 1.6, 1.0),
    )
    blobs = (Blob((-0.02, -0.18), 0.08, 0.1),)
    joints = (Joint((0.0, 0.02), (0, 1), 0.3, 0.04),)
    return Anatomy(bones, blobs, joints, tissue_margin=rng.uniform(0.08, 0.12))


_LAYOUTS = {
    "ELBOW": _elbow,
    "FINGER": _finger,
    "FOREARM": _forearm,
    "HAND": _hand,
    "HUMERUS": _humerus,
    "SHOULDER": _shoulder,
    "WRIST": _wrist,
    "TIBIA_FIBULA": _tibia_fibula,
    "ANKLE": _ankle,
    "KNEE": _knee,
}


# --------------------------------------------------------------------------------------------
# Findings: each returns a copy of the anatomy with the abnormality planted.
# --------------------------------------------------------------------------------------------


def _frame(bone: Bone):
    """Origin, axis and normal of a bone, to place things along it."""
    a, b = np.asarray(bone.a), np.asarray(bone.b)
    u = (b - a) / (math.dist(bone.a, bone.b) + 1e-9)
    return a, u, np.array([-u[1], u[0]])


_CENTRAL = 0.36  # |x|, |y| below this: inside the field of view whatever the view's framing
_ALONG = np.linspace(0.2, 0.8, 7)


def _central_fractions(bone: Bone) -> np.ndarray:
    """Fractions along a bone whose points lie well inside the field of view."""
    points = np.outer(1 - _ALONG, bone.a) + np.outer(_ALONG, bone.b)
    return _ALONG[np.all(np.abs(points) < _CENTRAL, axis=1)]


def _pick_long_bone(rng: np.random.Generator, anatomy: Anatomy) -> tuple[int, float]:
    """A bone to put a finding on and where along it: big, long, in-view bones are favoured,
    as that is where a finding is seen (not on a stump at the edge of the film)."""
    weights, places = [], []
    for bone in anatomy.bones:
        central = _central_fractions(bone)
        places.append(central if len(central) else _ALONG)
        weights.append(
            max(bone.length / bone.width - 2.0, 0.1)
            * bone.length
            * bone.width
            * (len(central) / len(_ALONG)) ** 2
            * (bone.fracture is None)
            + 1e-9
        )
    weights = np.array(weights)
    i = int(rng.choice(len(weights), p=weights / weights.sum()))
    return i, float(rng.choice(places[i]) + rng.uniform(-0.04, 0.04))


# Findings must survive downsampling to 128 px, where 1 px is about 0.01 normalized units:
# hardware is clearly visible at that size, breaks and degenerative joints are subtler.
_MIN_METAL = 0.007


def _add_hardware(rng: np.random.Generator, anatomy: Anatomy) -> Anatomy:
    """Metal: a plate with screws along a long bone, or pins / a nail inside a bone."""
    i, at = _pick_long_bone(rng, anatomy)
    bone = anatomy.bones[i]
    a, u, n = _frame(bone)
    length, w = bone.length, bone.width
    metal = []
    if length > 4 * w and rng.random() < 0.6:
        center = at * length
        half = float(np.clip(rng.uniform(0.25, 0.38) * length, 0.1, 0.28))
        side = rng.uniform(-0.35, 0.35) * w
        p, q = a + u * (center - half) + n * side, a + u * (center + half) + n * side
        metal.append(_quad(p, q, max(rng.uniform(0.4, 0.55) * w, 2.5 * _MIN_METAL)))
        for t in np.linspace(0.1, 0.9, int(rng.integers(3, 7))):
            c = p + (q - p) * t
            metal.append(_quad(c - n * 0.8 * w, c + n * 0.8 * w, max(0.08 * w, _MIN_METAL)))
            r = max(0.25 * w, 2 * _MIN_METAL)
            metal.append(_ellipse(c, r, r, n=10))
    else:
        for _ in range(1 if rng.random() < 0.5 else 2):
            t0 = max(at - rng.uniform(0.2, 0.45), 0.02)
            t1 = min(at + rng.uniform(0.2, 0.45), 0.98)
            tilt = rng.normal(0, 0.08)
            d = u * math.cos(tilt) + n * math.sin(tilt)
            p = a + u * t0 * length + n * rng.uniform(-0.15, 0.15) * w
            metal.append(_quad(p, p + d * (t1 - t0) * length, max(rng.uniform(0.15, 0.25) * w, 1.6 * _MIN_METAL)))
    return replace(anatomy, metal=anatomy.metal + tuple(metal))


def _add_break(rng: np.random.Generator, anatomy: Anatomy) -> Anatomy:
    """Cortical breaks: a dark jagged gap across a bone, the distal fragment shifted and tilted;
    sometimes a second bone is broken too (both-bone forearm fractures are common)."""
    bones = list(anatomy.bones)
    for _ in range(1 if rng.random() < 0.65 else 2):
        i, at = _pick_long_bone(rng, replace(anatomy, bones=tuple(bones)))
        w = bones[i].width
        fracture = Break(
            at=at,
            slope=rng.uniform(-0.8, 0.8),
            jitter=tuple(rng.normal(0, 0.08, size=7)),
            gap=max(rng.uniform(0.4, 0.6), 0.025 / w),
            shift=max(rng.uniform(0.5, 1.0), 0.03 / w) * rng.choice([-1, 1]),
            angle=rng.uniform(0.15, 0.4) * rng.choice([-1, 1]),
            callus=bool(rng.random() < 0.7),
        )
        bones[i] = replace(bones[i], fracture=fracture)
    return replace(anatomy, bones=tuple(bones))


def _add_degenerative(rng: np.random.Generator, anatomy: Anatomy) -> Anatomy:
    """Degenerative joints (often more than one): each gap narrowed by bright sclerotic bone,
    with osteophyte spurs at its edges."""
    if not anatomy.joints:
        return _add_break(rng, anatomy)
    central = [j for j in anatomy.joints if max(map(abs, j.center)) < _CENTRAL]
    choices = central or list(anatomy.joints)
    count = min(len(choices), 1 + int(rng.random() < 0.5) + int(rng.random() < 0.25))
    blobs = []
    for k in rng.choice(len(choices), size=count, replace=False):
        joint = choices[int(k)]
        c, u = np.asarray(joint.center), np.asarray(joint.axis, float)
        n = np.array([-u[1], u[0]])
        for side in (-1, 1):  # sclerotic bands filling most of the gap from both sides
            blobs.append(
                _ellipse(
                    c + side * u * joint.gap * 0.42,
                    joint.width * 0.45,
                    max(joint.gap * 0.5, 0.008),
                    math.atan2(n[1], n[0]),
                    n=16,
                )
            )
        for _ in range(int(rng.integers(2, 5))):  # osteophytes: spurs at the margins
            edge = c + n * rng.choice([-1, 1]) * joint.width * rng.uniform(0.48, 0.6)
            edge = edge + u * rng.choice([-1, 1]) * joint.gap * rng.uniform(0.3, 1.2)
            size = max(joint.width * rng.uniform(0.18, 0.28), 0.035)
            blobs.append(_ellipse(edge, size, size * 0.6, rng.uniform(0, np.pi), n=10))
    return replace(anatomy, sclerosis=anatomy.sclerosis + tuple(blobs))


def _plant_finding(rng: np.random.Generator, anatomy: Anatomy) -> tuple[str, Anatomy]:
    """Pick one finding for an abnormal study: hardware, a break or a degenerative joint."""
    kind = str(rng.choice(_FINDING_KINDS[0], p=_FINDING_KINDS[1]))
    if kind == "hardware":
        return kind, _add_hardware(rng, anatomy)
    if kind == "break":
        return kind, _add_break(rng, anatomy)
    return kind, _add_degenerative(rng, anatomy)


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


def _prepare(root: Path, overwrite: bool, marker: Path) -> None:
    """Refuse to write into an existing tree, unless asked to and it is one of ours.

    ``marker`` is the file every generated tree has; without it the folder may be real data,
    so it is never deleted.
    """
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{root} exists and is not empty; pass overwrite=True to replace a previously generated sample"
            )
        if not marker.is_file():
            raise FileExistsError(
                f"{root} has no {marker.name}: it does not look like a generated sample, so it is left alone"
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------------------------
# MURA-v1.1 sample.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Study:
    split: str
    part: str
    patient: int
    number: int
    abnormal: bool
    n_images: int

    @property
    def folder(self) -> str:
        label = "positive" if self.abnormal else "negative"
        return f"{MURA_DIRNAME}/{self.split}/XR_{self.part}/patient{self.patient:05d}/study{self.number}_{label}/"


def _plan_split(
    rng: np.random.Generator, split: str, parts: tuple[str, ...], patients_per_part: int, first_id: int
) -> list[_Study]:
    """Studies of one split, in CSV order; patients are shared across body parts."""
    pool = max(patients_per_part, math.ceil(0.7 * len(parts) * patients_per_part))
    chosen = [np.sort(rng.choice(pool, size=patients_per_part, replace=False)) for _ in parts]
    ids: dict[int, int] = {}  # pool index -> patient id, numbered by first appearance
    for members in chosen:
        for m in members:
            ids.setdefault(int(m), first_id + len(ids))
    studies: list[_Study] = []
    for part, members in zip(parts, chosen):
        rows = []
        for m in sorted(members, key=lambda m: ids[int(m)]):
            n_studies = int(rng.choice(_STUDIES_PER_PATIENT[0], p=_STUDIES_PER_PATIENT[1]))
            for number in range(1, n_studies + 1):
                n_images = int(rng.choice(_IMAGES_PER_STUDY[0], p=_IMAGES_PER_STUDY[1]))
                rows.append((ids[int(m)], number, n_images))
        n_abnormal = round(_ABNORMAL_FRACTION * len(rows))
        if len(rows) >= 2:
            n_abnormal = min(max(n_abnormal, 1), len(rows) - 1)
        abnormal = set(rng.choice(len(rows), size=n_abnormal, replace=False).tolist())
        studies += [
            _Study(split, part, pid, number, k in abnormal, n_images) for k, (pid, number, n_images) in enumerate(rows)
        ]
    return studies


def _write_study(root: Path, study: _Study, seed: int, index: int) -> list[str]:
    """Render and write the views of one study; returns their CSV paths."""
    rng = np.random.default_rng([seed, 0 if study.split == "train" else 1, index])
    anatomy = _LAYOUTS[study.part](rng)
    normal_shapes = _shapes(anatomy)
    abnormal_shapes = _shapes(_plant_finding(rng, anatomy)[1]) if study.abnormal else None
    shows = rng.random(study.n_images) < _FINDING_PROBABILITY
    if study.abnormal and not shows.any():
        shows[rng.integers(study.n_images)] = True
    paths = []
    for m in range(1, study.n_images + 1):
        view = _sample_view(rng)
        abnormal = study.abnormal and shows[m - 1]
        image = render_radiograph(abnormal_shapes if abnormal else normal_shapes, view, rng)
        mode = str(rng.choice(_PNG_MODES[0], p=_PNG_MODES[1]))
        relative = f"{study.folder}image{m}.png"
        target = root.parent / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_png_bytes(image, mode))
        paths.append(relative)
    return paths


def make_sample(
    out_dir: str | Path,
    patients_per_part: int = 20,
    seed: int = 0,
    valid_patients_per_part: int | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic MURA-v1.1 tree under ``out_dir`` and return ``out_dir/MURA-v1.1``.

    Same layout and CSVs as the real release, so it goes through the real loader; a
    ``SYNTHETIC_SAMPLE.txt`` beside the CSVs marks it as generated. With the defaults: about
    450 train and 200 valid images, 40% of studies abnormal, about 8 MB, 5 s. Patients per
    body part scale it; ``valid_patients_per_part`` defaults to 40% of ``patients_per_part``.
    The same seed gives byte-identical files. An existing non-empty ``MURA-v1.1`` folder is an
    error, unless ``overwrite`` is true and it holds the marker (a generated sample), in which
    case it is replaced.
    """
    if patients_per_part < 1:
        raise ValueError("patients_per_part must be at least 1")
    if valid_patients_per_part is None:
        valid_patients_per_part = max(1, round(0.4 * patients_per_part))
    root = Path(out_dir) / MURA_DIRNAME
    _prepare(root, overwrite, root / SYNTHETIC_MARKER)
    plan_rng = np.random.default_rng([seed, 7])
    train = _plan_split(plan_rng, "train", _TRAIN_PART_ORDER, patients_per_part, 1)
    first_valid = max(_FIRST_VALID_PATIENT, max(s.patient for s in train) + 1)
    valid = (
        _plan_split(plan_rng, "valid", _VALID_PART_ORDER, valid_patients_per_part, first_valid)
        if valid_patients_per_part > 0
        else []
    )
    for split, studies in (("train", train), ("valid", valid)):
        image_rows = []
        for index, study in enumerate(studies):
            image_rows += _write_study(root, study, seed, index)
        (root / f"{split}_image_paths.csv").write_text("".join(f"{row}\n" for row in image_rows), encoding="utf-8")
        (root / f"{split}_labeled_studies.csv").write_text(
            "".join(f"{s.folder},{int(s.abnormal)}\n" for s in studies), encoding="utf-8"
        )
    (root / SYNTHETIC_MARKER).write_text(
        "Synthetic MURA-v1.1-shaped sample written by mura_utils.synthetic.make_sample "
        f"(seed={seed}, patients_per_part={patients_per_part}, "
        f"valid_patients_per_part={valid_patients_per_part}).\n"
        "Cartoon radiographs, not patient data: metrics measured on it say nothing about MURA.\n",
        encoding="utf-8",
    )
    return root


# --------------------------------------------------------------------------------------------
# External (Kaggle "Bone Fracture Binary Classification") sample.
# --------------------------------------------------------------------------------------------

_EXTERNAL_REGIONS = (
    ("TIBIA_FIBULA", 0.22),
    ("ANKLE", 0.18),
    ("KNEE", 0.18),
    ("FOREARM", 0.12),
    ("WRIST", 0.1),
    ("HAND", 0.1),
    ("ELBOW", 0.1),
)
_EXTERNAL_SPLITS = (("train", 46), ("val", 40), ("test", 40))  # images before planted copies
_LABELS = ("fractured", "not fractured")


def _external_name(rng: np.random.Generator, used: set[str], suffix: str) -> str:
    """A file name in the style of the Kaggle set (``12-rotated1-rotated2.jpg``, ``image7.png``)."""
    while True:
        k = int(rng.integers(1, 400))
        style = int(rng.integers(4))
        if suffix == ".png" or style == 0:
            stem = f"image{k}"
        elif style == 1:
            stem = f"{k}-rotated{int(rng.integers(1, 4))}"
        elif style == 2:
            stem = f"{k}-rotated{int(rng.integers(1, 4))}-rotated{int(rng.integers(1, 4))}"
        else:
            stem = f"IMG{int(rng.integers(10**6, 10**7)):07d}"
        name = stem + suffix
        if name not in used:
            used.add(name)
            return name


def _external_image(rng: np.random.Generator, fractured: bool) -> np.ndarray:
    """One external-style radiograph: lower or upper limb, flat noisy contrast, maybe a break."""
    names, weights = zip(*_EXTERNAL_REGIONS)
    region = str(rng.choice(names, p=np.array(weights) / sum(weights)))
    anatomy = _LAYOUTS[region](rng)
    if fractured:
        anatomy = _add_break(rng, anatomy)
    return render_radiograph(anatomy, _sample_view(rng, (200, 360), external=True), rng)


def make_external_sample(out_dir: str | Path, seed: int = 0, *, overwrite: bool = False) -> Path:
    """Write a Kaggle-style fracture sample; return ``out_dir/Bone_Fracture_Binary_Classification``.

    Images lie in ``<root>/Bone_Fracture_Binary_Classification/{train,val,test}/{fractured,not
    fractured}/`` (nested one level, like the download). Planted quirks, listed in
    ``out_dir/external_sample_manifest.json`` by paths relative to the returned root: three
    exact duplicate groups across splits (one also across labels), three near duplicates
    (JPEG re-encode, 90% resize, +5% brightness), one JPEG truncated to half its bytes, and
    stray non-image files (README.txt, .DS_Store, an AppleDouble ``._image1.png``).
    """
    out_dir = Path(out_dir)
    root = out_dir / EXTERNAL_DIRNAME
    _prepare(root, overwrite, out_dir / EXTERNAL_MANIFEST)
    inner = root / EXTERNAL_DIRNAME
    rng = np.random.default_rng([seed, 11])
    used: dict[tuple[str, str], set[str]] = {(s, lab): set() for s, _ in _EXTERNAL_SPLITS for lab in _LABELS}
    originals: dict[tuple[str, str], list[tuple[str, np.ndarray, bytes]]] = {}

    def write(split: str, label: str, name: str, data: bytes) -> str:
        target = inner / split / label / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        used[(split, label)].add(name)
        return target.relative_to(root).as_posix()

    def encode(image: np.ndarray, suffix: str) -> bytes:
        if suffix == ".png":
            return _png_bytes(image, "L")
        return _jpeg_bytes(image, int(rng.integers(80, 96)), rgb=bool(rng.random() < 0.6))

    for split, count in _EXTERNAL_SPLITS:
        for k in range(count):
            label = _LABELS[k % 2]
            image = _external_image(rng, label == "fractured")
            suffix = ".png" if rng.random() < 0.3 else ".jpg"
            if split == "train" and label == "not fractured" and k == 1:
                name = "image1.png"  # the AppleDouble file below shadows this one
                used[(split, label)].add(name)
                suffix = ".png"
            else:
                name = _external_name(rng, used[(split, label)], suffix)
            data = encode(image, suffix)
            write(split, label, name, data)
            originals.setdefault((split, label), []).append((name, image, data))

    def source(split: str, label: str, suffix: str, nth: int = 0):
        matches = [o for o in originals[(split, label)] if o[0].endswith(suffix)]
        return matches[nth]

    def rel(split: str, label: str, name: str) -> str:
        return f"{EXTERNAL_DIRNAME}/{split}/{label}/{name}"

    exact = []
    name, _, data = source("train", "fractured", ".jpg", 0)  # same bytes, new name
    exact.append(
        [
            rel("train", "fractured", name),
            write("test", "fractured", _external_name(rng, used[("test", "fractured")], ".jpg"), data),
        ]
    )
    name, _, data = source("train", "not fractured", ".png", 0)  # same bytes, same name
    copy_name = name
    if copy_name in used[("val", "not fractured")]:
        copy_name = _external_name(rng, used[("val", "not fractured")], ".png")
    exact.append([rel("train", "not fractured", name), write("val", "not fractured", copy_name, data)])
    name, _, data = source("val", "fractured", ".jpg", 0)  # across splits and labels
    cross = [
        rel("val", "fractured", name),
        write("test", "not fractured", _external_name(rng, used[("test", "not fractured")], ".jpg"), data),
    ]
    exact.append(cross)

    near = []
    name, image, _ = source("train", "fractured", ".jpg", 1)
    near.append(
        {
            "kind": "jpeg_requality",
            "paths": [
                rel("train", "fractured", name),
                write(
                    "val",
                    "fractured",
                    _external_name(rng, used[("val", "fractured")], ".jpg"),
                    _jpeg_bytes(image, 60, rgb=True),
                ),
            ],
        }
    )
    name, image, _ = source("train", "not fractured", ".jpg", 0)
    h, w = image.shape
    small = np.asarray(Image.fromarray(image).resize((round(w * 0.9), round(h * 0.9)), Image.BILINEAR))
    near.append(
        {
            "kind": "resized_90_percent",
            "paths": [
                rel("train", "not fractured", name),
                write(
                    "test",
                    "not fractured",
                    _external_name(rng, used[("test", "not fractured")], ".jpg"),
                    _jpeg_bytes(small, 90, rgb=False),
                ),
            ],
        }
    )
    name, image, _ = source("val", "not fractured", ".jpg", 0)
    brighter = np.clip(np.rint(image.astype(np.float32) * 1.05), 0, 255).astype(np.uint8)
    near.append(
        {
            "kind": "brightness_plus_5_percent",
            "paths": [
                rel("val", "not fractured", name),
                write(
                    "test",
                    "not fractured",
                    _external_name(rng, used[("test", "not fractured")], ".jpg"),
                    _jpeg_bytes(brighter, 90, rgb=True),
                ),
            ],
        }
    )

    whole = _jpeg_bytes(_external_image(rng, True), 90, rgb=True)
    truncated = write(
        "train", "fractured", _external_name(rng, used[("train", "fractured")], ".jpg"), whole[: len(whole) // 2]
    )

    (root / "README.txt").write_text(
        "Bone fracture binary classification (synthetic sample).\n"
        "Folders: train, val, test; classes: fractured, not fractured.\n",
        encoding="utf-8",
    )
    (inner / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(56))
    apple_double = (
        b"\x00\x05\x16\x07\x00\x02\x00\x00"
        + b"Mac OS X        "
        + b"\x00\x02\x00\x00\x00\x09\x00\x00\x00\x32\x00\x00\x00\x20"
        + bytes(48)
    )
    (inner / "train" / "not fractured" / "._image1.png").write_bytes(apple_double)
    stray = ["README.txt", f"{EXTERNAL_DIRNAME}/.DS_Store", f"{EXTERNAL_DIRNAME}/train/not fractured/._image1.png"]

    counts = {
        split: {
            label: sum(
                1
                for p in (inner / split / label).iterdir()
                if p.suffix in (".jpg", ".png") and not p.name.startswith("._")
            )
            for label in _LABELS
        }
        for split, _ in _EXTERNAL_SPLITS
    }
    manifest = {
        "root": EXTERNAL_DIRNAME,
        "exact_duplicate_groups": exact,
        "cross_label_duplicate_group": cross,
        "near_duplicate_groups": near,
        "truncated": [truncated],
        "stray_files": stray,
        "image_counts": counts,
    }
    (out_dir / EXTERNAL_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return root
