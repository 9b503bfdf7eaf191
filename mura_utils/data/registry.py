"""Datasets as one table each: MURA-v1.1, FracAtlas, or a user's CSV manifest.

``load_index(root)`` detects the layout (or takes ``dataset=``), returns the index table
(path, split, body_part, patient, study, label) with its :class:`DatasetInfo` in ``attrs["dataset"]``;
``dataset_info(root)`` gives the info alone. A folder that is none of them is a clear error naming what
was looked for.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mura_utils.data import fracatlas, mura
from mura_utils.data.base import INDEX_COLUMNS, DatasetInfo, DatasetLayoutError, held_out_split
from mura_utils.data.fracatlas import load_fracatlas_index
from mura_utils.data.manifest import load_manifest

DATASETS = ("mura", "fracatlas", "manifest")

__all__ = [
    "DATASETS",
    "INDEX_COLUMNS",
    "DatasetInfo",
    "DatasetLayoutError",
    "dataset_folder",
    "dataset_info",
    "detect_dataset",
    "held_out_split",
    "info_from_record",
    "load_fracatlas_index",
    "load_index",
    "load_manifest",
]


def detect_dataset(root: str | Path) -> str:
    """'mura', 'fracatlas' or 'manifest' from what ``root`` holds."""
    path = Path(root).expanduser()
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise DatasetLayoutError(f"{path}: manifest file not found")
        return "manifest"
    if mura.is_mura(path):
        return "mura"
    if fracatlas.is_fracatlas(path):
        return "fracatlas"
    raise DatasetLayoutError(
        f"{path}: not a dataset this package reads. Looked for MURA-v1.1 "
        f"({path / 'MURA-v1.1' / 'train_image_paths.csv'} or {path / 'train_image_paths.csv'}), "
        f"FracAtlas ({path / 'dataset.csv'} with {path / 'images' / 'Fractured'} and .../Non_fractured), "
        "or a manifest (pass the .csv file itself: path,label[,body_part,patient,study,split]). "
        "`mura sample DIR` writes a synthetic MURA-shaped sample."
    )


def _resolve(root: str | Path, dataset: str) -> str:
    if dataset in (None, "", "auto"):
        return detect_dataset(root)
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose auto or one of {list(DATASETS)}")
    return dataset


def load_index(root: str | Path, dataset: str = "auto", splits: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The dataset at ``root`` as one row per image (all splits unless ``splits``); its DatasetInfo is
    ``table.attrs["dataset"]``."""
    name = _resolve(root, dataset)
    if name == "mura":
        table, info = mura.load_mura(root, splits), mura.INFO
    elif name == "fracatlas":
        table, info = load_fracatlas_index(root, splits), fracatlas.INFO
    else:
        table, info = load_manifest(root)
        if splits is not None:
            table = table[table["split"].isin(splits)].reset_index(drop=True)
    table.attrs["dataset"] = info
    return table


def dataset_folder(root: str | Path, dataset: str = "auto") -> Path:
    """The folder that holds a dataset (resolved): the MURA-v1.1 folder, the FracAtlas folder, a manifest's folder."""
    from mura_utils.data.mura import resolve_mura_root

    name = _resolve(root, dataset)
    if name == "mura":
        return resolve_mura_root(root)
    path = Path(root).expanduser().resolve()
    return path.parent if name == "manifest" else path


def dataset_info(root: str | Path, dataset: str = "auto") -> DatasetInfo:
    """The DatasetInfo of the dataset at ``root`` (a manifest's vocabulary comes from its rows)."""
    name = _resolve(root, dataset)
    if name == "mura":
        return mura.INFO
    if name == "fracatlas":
        return fracatlas.INFO
    return load_manifest(root)[1]


def info_from_record(record: dict | None) -> DatasetInfo:
    """The DatasetInfo saved in a checkpoint, run.json or ONNX contract; MURA for files written before
    datasets were recorded."""
    if record is None:
        return mura.INFO
    stored = record.get("dataset") if isinstance(record, dict) else record
    if stored is None:  # written before datasets were recorded
        return mura.INFO
    if isinstance(stored, DatasetInfo):
        return stored
    try:
        return DatasetInfo.from_dict(stored)
    except (TypeError, AttributeError) as error:
        raise ValueError(f"unreadable dataset record {stored!r} ({error}); expected DatasetInfo fields") from error
