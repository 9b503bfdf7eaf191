"""Index, audit and deduplicate the Kaggle "fracture multi-region X-ray data" external test set.

A MURA-trained model is tested for generalization on this set. It holds exact and near duplicates
(across splits and even across classes), augmented copies shipped as extra images (quarter turns,
mirror images, small rotations: ``12-rotated1.jpg``) and a few truncated files, so every metric on
it is only trustworthy after an audit: ``load_external_index`` -> ``find_duplicates`` -> ``deduplicate``.

Labels here: 1 = fractured, 0 = not fractured. MURA's 1 means "abnormal", a broader finding
(fractures, but also hardware, degenerative disease, lesions), so the two labels are not the same
question; a MURA model's "abnormal" score is only a proxy for "fractured".

One module per concern: ``layout`` (split/class folders), ``hashing`` (perceptual descriptors and
verified links), ``index`` (the table), ``audit`` (``DuplicateReport``, ``deduplicate``).
"""

from __future__ import annotations

from mura_utils.data.external.audit import DUPLICATE_KINDS, DuplicateReport, deduplicate, find_duplicates
from mura_utils.data.external.hashing import (
    DEFAULT_MAX_DISTANCE,
    MIN_CORRELATION,
    ROTATION_MAX_DISTANCE,
    ROTATION_MIN_CORRELATION,
    group_hashes,
    hamming_pairs,
)
from mura_utils.data.external.index import group_duplicates, load_external_index
from mura_utils.data.external.layout import LABEL_NAMES, SPLITS

__all__ = [
    "SPLITS",
    "LABEL_NAMES",
    "DEFAULT_MAX_DISTANCE",
    "ROTATION_MAX_DISTANCE",
    "MIN_CORRELATION",
    "ROTATION_MIN_CORRELATION",
    "DUPLICATE_KINDS",
    "DuplicateReport",
    "load_external_index",
    "find_duplicates",
    "deduplicate",
    "group_duplicates",
    "group_hashes",
    "hamming_pairs",
]
