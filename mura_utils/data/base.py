"""What a dataset is, besides its images: the record that travels with every model trained on it.

Each public collection (``mura``, ``fracatlas``) and a user's CSV ``manifest`` turns its own layout into
one index table (path, split, body_part, patient, study, label) and one :class:`DatasetInfo`. Training
stores the info in config, checkpoints and run folders, so the body-part head, class weights, per-part
metrics, reports, predict and export read the vocabulary and the label's meaning from there, never
from MURA's constants.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

INDEX_COLUMNS = ["path", "split", "body_part", "patient", "study", "label"]


class DatasetLayoutError(ValueError):
    """A dataset folder or file is not what it claims to be; the message names the file and the problem."""


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset's vocabulary and conventions (plain values: saved in checkpoints and JSON)."""

    name: str  # "mura" | "fracatlas" | "manifest"
    title: str  # shown in reports: "MURA-v1.1", "FracAtlas", "manifest my_set.csv"
    body_parts: tuple[str, ...]  # the body-part head's classes, in output order
    positive_label: str  # what label 1 means: "abnormal" (MURA), "fractured" (FracAtlas)
    negative_label: str
    has_patients: bool  # False: each image is its own patient and study (no patient-level leakage control)
    test_split: str  # the held-out split that `mura evaluate` scores by default
    train_split: str = "train"
    citation: str = ""
    licence: str = ""
    has_boxes: bool = False  # fracture boxes to check explanations against (`mura explain`)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["body_parts"] = list(self.body_parts)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> DatasetInfo:
        known = {item.name for item in fields(cls)}
        kept = {key: value for key, value in values.items() if key in known}
        kept["body_parts"] = tuple(kept.get("body_parts", ()))
        return cls(**kept)


@dataclass(frozen=True)
class DatasetType:
    """How the package finds, reads and names one dataset layout. Each dataset module in ``mura_utils.data``
    declares one as ``DATASET``; ``data.registry`` lists the modules, and detection, loading, the CLI's
    ``--dataset`` choices, config validation and the default cache folder all read it from there."""

    name: str  # the --dataset value and DatasetInfo.name
    looks_like: Callable[[Path], bool]  # does this path hold the layout? (detection)
    layout: str  # what looks_like checks, for the error of a path that is no dataset
    read: Callable[[str | Path, tuple[str, ...] | None], tuple[pd.DataFrame, DatasetInfo]]  # index table + info
    info: Callable[[str | Path], DatasetInfo]  # the info alone (cheap where it is a constant)
    folder: Callable[[str | Path], Path] = lambda root: Path(root).expanduser().resolve()  # the data's own folder
    # folder beside which the decode-once cache goes (the data's folder -> the cache's parent); None: the
    # user cache ($MURA_CACHE_DIR or ~/.cache/mura_utils), for downloads that are often read-only
    cache_parent: Callable[[Path], Path] | None = None


def stable_rank(keys: pd.Series, salt: str) -> np.ndarray:
    """A seeded order of ``keys`` that depends on nothing but the keys and the salt (sha256), so a
    split drawn from it is the same on every machine, library version and operating system."""
    return np.array([hashlib.sha256(f"{salt}/{key}".encode()).hexdigest() for key in keys])


def held_out_split(
    table: pd.DataFrame, fraction: float = 0.2, salt: str = "held-out-v1", group: str = "patient"
) -> pd.Series:
    """'test' for a fixed ``fraction`` of whole ``group``s in every (body_part, label) stratum, else 'train'.

    Each group's stratum is that of its first row. Within a stratum the groups are ordered by a salted
    hash and the first round(fraction * n) are held out: stratified, grouped (no patient on both sides),
    and reproducible without any random generator or library version in the loop.
    """
    firsts = table.drop_duplicates(group)[[group, "body_part", "label"]]
    held_out: set = set()
    for _, members in firsts.groupby(["body_part", "label"], sort=True):
        ranked = members[group].to_numpy()[np.argsort(stable_rank(members[group], salt), kind="stable")]
        held_out.update(ranked[: int(round(fraction * len(ranked)))])
    return pd.Series(np.where(table[group].isin(held_out), "test", "train"), index=table.index, name="split")
