"""Stanford MURA-v1.1 (official CSVs + PNG tree); the reader itself lives in ``mura_utils.data``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..constants import BODY_PARTS, NEGATIVE_LABEL, POSITIVE_LABEL
from .base import DatasetInfo

INFO = DatasetInfo(
    name="mura",
    title="MURA-v1.1",
    body_parts=BODY_PARTS,
    positive_label=POSITIVE_LABEL,
    negative_label=NEGATIVE_LABEL,
    has_patients=True,
    test_split="valid",
    citation=(
        "Rajpurkar P, Irvin J, Bagul A, et al. MURA: Large Dataset for Abnormality Detection in Musculoskeletal "
        "Radiographs. arXiv:1712.06957 (2017)"
    ),
    licence="Stanford MURA research use agreement",
)


def is_mura(root: str | Path) -> bool:
    root = Path(root)
    return any(
        (folder / f"{split}_image_paths.csv").is_file()
        for folder in (root, root / "MURA-v1.1")
        for split in ("train", "valid")
    )


def load_mura(root: str | Path, splits: tuple[str, ...] | None = None) -> pd.DataFrame:
    from ..data import SPLITS, load_mura_index

    return load_mura_index(root, splits=tuple(splits) if splits is not None else SPLITS)
