"""Anatomy primitives and one layout function per body part (normalized units, y points down)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
