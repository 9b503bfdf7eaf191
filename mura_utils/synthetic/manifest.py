"""A small labelled collection described by a CSV manifest (path,label,body_part,patient,study,split).

This is how a user brings their own radiographs: images in folders of their choosing and one CSV. The
sample mixes PNG (8-bit and RGB-encoded) and JPEG files in two "site" folders, has several images per
study for most studies, more than one study for some patients, and a train/test split by patient.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mura_utils.synthetic.anatomy import _LAYOUTS
from mura_utils.synthetic.findings import _plant_finding
from mura_utils.synthetic.mura import SYNTHETIC_MARKER, _prepare
from mura_utils.synthetic.render import _jpeg_bytes, _png_bytes, _sample_view, _shapes, render_radiograph

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("path", "label", "body_part", "patient", "study", "split")
_SITES = ("site_a", "site_b")
# A user's own collection usually covers a few body parts; few parts also leave enough images per
# (body part, label) stratum for training's stratified validation split.
_BODY_PARTS = (("WRIST", "ELBOW", "HAND"), (0.5, 0.3, 0.2))
_STUDIES_PER_PATIENT = ((1, 2), (0.7, 0.3))
_IMAGES_PER_STUDY = ((1, 2, 3), (0.3, 0.45, 0.25))
_ABNORMAL = 0.4
_TEST_EVERY = 3  # patients 3, 6, 9, ... (1-based) are held out: a third of them, never both sides


def make_manifest_sample(root: str | Path, n_patients: int = 24, seed: int = 0, *, overwrite: bool = False) -> Path:
    """Write a synthetic image collection and its ``manifest.csv`` into ``root``; return the CSV's path.

    Columns ``path,label,body_part,patient,study,split``: paths relative to the CSV, label 1 = abnormal
    (one planted finding in every view of the study), three MURA body parts, ``split`` train or test by
    patient (every third patient is test; both splits get both labels). ``manifest.json`` beside the CSV
    names the collection and its label; ``SYNTHETIC_SAMPLE.txt`` marks it as generated. With the
    defaults about 60 images, 0.7 MB, 0.6 s: enough for training's stratified validation split. The same seed gives byte-identical files. A non-empty ``root`` is
    an error, unless ``overwrite`` is true and it holds the marker, in which case it is replaced.
    """
    if n_patients < 6:
        raise ValueError(f"n_patients must be at least 6 (two test patients, both labels per split), not {n_patients}")
    root = Path(root)
    _prepare(root, overwrite, root / SYNTHETIC_MARKER)
    rng = np.random.default_rng([seed, 31])
    rows = [",".join(MANIFEST_COLUMNS)]
    for p in range(1, n_patients + 1):
        patient = f"P{p:03d}"
        split = "test" if p % _TEST_EVERY == 0 else "train"
        site = _SITES[p % 2]
        n_studies = int(rng.choice(_STUDIES_PER_PATIENT[0], p=_STUDIES_PER_PATIENT[1]))
        for s in range(1, n_studies + 1):
            part = str(rng.choice(_BODY_PARTS[0], p=_BODY_PARTS[1]))
            # The first study of patients 1-3 and 6 fixes both labels in both splits; the rest are drawn.
            forced = {1: True, 2: False, 3: True, 6: False}.get(p) if s == 1 else None
            abnormal = bool(rng.random() < _ABNORMAL) if forced is None else forced
            anatomy = _LAYOUTS[part](rng)
            shapes = _shapes(_plant_finding(rng, anatomy)[1] if abnormal else anatomy)
            n_images = int(rng.choice(_IMAGES_PER_STUDY[0], p=_IMAGES_PER_STUDY[1]))
            study = f"{patient}_s{s}"
            for v in range(1, n_images + 1):
                image = render_radiograph(shapes, _sample_view(rng, (160, 256)), rng)
                kind = int(rng.integers(3))
                if kind == 0:
                    relative, data = f"{site}/{part.lower()}/{study}_view{v}.jpg", _jpeg_bytes(image, 90, rgb=False)
                else:
                    mode = "L" if kind == 1 else "RGB"
                    relative, data = f"{site}/{part.lower()}/{patient}/s{s}/view{v}.png", _png_bytes(image, mode)
                target = root / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                rows.append(",".join([relative, str(int(abnormal)), part, patient, study, split]))
    (root / MANIFEST_NAME).write_text("\n".join(rows) + "\n", encoding="utf-8")
    (root / "manifest.json").write_text(
        json.dumps(
            {"title": "synthetic manifest sample", "positive_label": "abnormal", "negative_label": "normal"}, indent=2
        )
        + "\n",
        encoding="utf-8",
    )
    (root / SYNTHETIC_MARKER).write_text(
        "Synthetic CSV-manifest sample written by mura_utils.synthetic.make_manifest_sample "
        f"(seed={seed}, n_patients={n_patients}).\n"
        "Cartoon radiographs, not patient data: metrics measured on it say nothing about real images.\n",
        encoding="utf-8",
    )
    return root / MANIFEST_NAME
