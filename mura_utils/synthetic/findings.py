"""Findings planted in abnormal studies: metal hardware, a displaced cortical break, a degenerative joint."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from mura_utils.synthetic.anatomy import Anatomy, Bone, Break, _ellipse, _quad

_FINDING_KINDS = (("hardware", "break", "degenerative"), (0.45, 0.3, 0.25))  # MURA: ~half metal

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
