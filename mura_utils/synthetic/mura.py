"""The MURA-v1.1 tree writer: same folders, same four header-less CSVs, same quirks as the release."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mura_utils.data.constants import BODY_PARTS
from mura_utils.synthetic.anatomy import _LAYOUTS
from mura_utils.synthetic.findings import _plant_finding
from mura_utils.synthetic.render import _png_bytes, _sample_view, _shapes, render_radiograph

MURA_DIRNAME = "MURA-v1.1"
EXTERNAL_DIRNAME = "Bone_Fracture_Binary_Classification"
EXTERNAL_MANIFEST = "external_sample_manifest.json"
# Written into every generated MURA-v1.1 folder (mura_utils.training.experiment.is_synthetic looks for it).
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
_PNG_MODES = (("L", "RGB", "LA", "I;16"), (0.76, 0.12, 0.06, 0.06))


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


# train patients per body part of the embedded sample (`mura sample`, `make sample`, a notebook opened alone):
# ~450 train / ~200 valid images, enough for every model to learn within `make demo`'s budget on 2 CPU cores
DEFAULT_PATIENTS_PER_PART = 20


def make_sample(
    out_dir: str | Path,
    patients_per_part: int = DEFAULT_PATIENTS_PER_PART,
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
