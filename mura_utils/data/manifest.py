"""A user's own labelled collection as a CSV manifest, checked like MURA:

    path,label[,body_part,patient,study,split]
    wrist/p001/s1/a.png,1,WRIST,p001,p001_s1,train

``path`` is relative to the CSV's folder; ``label`` is 0 or 1; ``split`` is ``train`` or ``test``
(without the column a fixed, seeded 20% of patients, stratified by body part and label, is held out).
Without ``patient`` each study is its own patient; without ``study`` each image is its own study.
An optional ``<manifest>.json`` beside the CSV names the collection and its label:
``{"title": ..., "positive_label": "fractured", "negative_label": "not fractured", "citation": ..., "licence": ...}``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from mura_utils.data.base import INDEX_COLUMNS, DatasetInfo, DatasetLayoutError, DatasetType, held_out_split

SPLITS = ("train", "test")
SPLIT_SALT = "manifest-test-v1"
_META_KEYS = ("title", "positive_label", "negative_label", "citation", "licence")


def _read(csv_path: Path) -> pd.DataFrame:
    if not csv_path.is_file():
        raise DatasetLayoutError(f"{csv_path}: manifest file not found")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DatasetLayoutError(f"{csv_path}: cannot parse the manifest CSV ({error})") from error
    table.columns = [column.strip().lower() for column in table.columns]
    missing = [column for column in ("path", "label") if column not in table.columns]
    if missing:
        raise DatasetLayoutError(
            f"{csv_path}: missing column(s) {missing}; a manifest has path,label[,body_part,patient,study,split]"
        )
    return table.apply(lambda column: column.str.strip())


def _metadata(csv_path: Path) -> dict:
    sidecar = csv_path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        values = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetLayoutError(f"{sidecar}: not a JSON object ({error})") from error
    unknown = sorted(set(values) - set(_META_KEYS)) if isinstance(values, dict) else ["<not an object>"]
    if unknown:
        raise DatasetLayoutError(f"{sidecar}: unknown key(s) {unknown}; allowed: {list(_META_KEYS)}")
    return values


def load_manifest(csv_path: str | Path) -> tuple[pd.DataFrame, DatasetInfo]:
    """The whole manifest as an index table (both splits) and its DatasetInfo; every problem names the CSV
    and the row (1-based, header = row 1)."""
    csv_path = Path(csv_path).expanduser().resolve()
    table = _read(csv_path)
    row_number = table.index + 2
    if table.empty:
        raise DatasetLayoutError(f"{csv_path}: the manifest lists no images")
    bad = ~table["label"].isin(["0", "1"])
    if bad.any():
        first = bad.idxmax()
        raise DatasetLayoutError(
            f"{csv_path}: row {row_number[first]}: label {table.at[first, 'label']!r} is not 0 or 1 "
            f"({int(bad.sum())} such row(s))"
        )
    paths = [str((csv_path.parent / path).resolve()) if path else "" for path in table["path"]]
    absent = [(number, path) for number, path in zip(row_number, paths) if not path or not os.path.isfile(path)]
    if absent:
        raise DatasetLayoutError(
            f"{csv_path}: {len(absent)} listed image(s) are missing on disk, first: row {absent[0][0]}: "
            f"{absent[0][1] or '(empty path)'} (paths are relative to the manifest's folder)"
        )
    duplicated = pd.Series(paths).duplicated()
    if duplicated.any():
        raise DatasetLayoutError(f"{csv_path}: row {row_number[int(duplicated.idxmax())]}: image listed twice")
    for column in ("patient", "study"):  # a column given for some rows only would hide leakage: all or none
        if column in table and (table[column] == "").any() and (table[column] != "").any():
            first = int((table[column] == "").idxmax())
            raise DatasetLayoutError(
                f"{csv_path}: row {row_number[first]}: empty {column!r}; fill it for every row or drop the column"
            )
    index = pd.DataFrame({"path": paths, "label": table["label"].astype(int).to_numpy()})
    index["body_part"] = table["body_part"].str.upper().replace("", "ALL") if "body_part" in table else "ALL"
    has_patients = "patient" in table and (table["patient"] != "").all()
    has_studies = "study" in table and (table["study"] != "").all()
    # ids from the CSV's own text (never absolute paths), so the held-out split survives moving the folder;
    # a study id is local to its patient (MURA's study1 under every patient)
    relative = table["path"].str.replace("\\", "/", regex=False)
    studies = table["study"] if has_studies else relative
    index["patient"] = table["patient"].to_numpy() if has_patients else studies.to_numpy()
    index["study"] = (table["patient"] + "/" + studies).to_numpy() if has_patients else studies.to_numpy()
    _check_studies(index, csv_path, row_number)
    if "split" in table and (table["split"] != "").any():
        splits = table["split"].str.lower()
        unknown = ~splits.isin(SPLITS)
        if unknown.any():
            first = unknown.idxmax()
            raise DatasetLayoutError(
                f"{csv_path}: row {row_number[first]}: split {table.at[first, 'split']!r} is not one of {list(SPLITS)}"
            )
        index["split"] = splits.to_numpy()
    else:
        index["split"] = held_out_split(index, 0.2, SPLIT_SALT)
    both = index.groupby("patient")["split"].nunique()
    if (both > 1).any():
        raise DatasetLayoutError(
            f"{csv_path}: patient {both[both > 1].index[0]!r} is in both the train and the test split "
            "(a patient on both sides leaks into the test score)"
        )
    metadata = _metadata(csv_path)
    info = DatasetInfo(
        name="manifest",
        title=metadata.get("title", f"manifest {csv_path.name}"),
        body_parts=tuple(sorted(index["body_part"].unique())),
        positive_label=metadata.get("positive_label", "positive"),
        negative_label=metadata.get("negative_label", "negative"),
        has_patients=bool(has_patients),
        test_split="test",
        citation=metadata.get("citation", ""),
        licence=metadata.get("licence", ""),
    )
    return index[INDEX_COLUMNS], info


def _check_studies(index: pd.DataFrame, csv_path: Path, row_number) -> None:
    """A study has one label, one body part and one patient (its images are scored together)."""
    for column in ("label", "body_part", "patient"):
        counts = index.groupby("study")[column].nunique()
        if (counts > 1).any():
            study = counts[counts > 1].index[0]
            rows = [int(number) for number in row_number[index["study"] == study][:3]]
            raise DatasetLayoutError(f"{csv_path}: study {study!r} (rows {rows}) has more than one {column}")


def is_manifest(path: Path) -> bool:
    """A path ending in .csv is a manifest; a missing one is named at once."""
    if path.suffix.lower() != ".csv":
        return False
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: manifest file not found")
    return True


def read_manifest(csv_path: str | Path, splits: tuple[str, ...] | None = None) -> tuple[pd.DataFrame, DatasetInfo]:
    """The manifest's table (only ``splits`` when given) and its info."""
    table, info = load_manifest(csv_path)
    if splits is not None:
        table = table[table["split"].isin(splits)].reset_index(drop=True)
    return table, info


DATASET = DatasetType(
    name="manifest",
    looks_like=is_manifest,
    layout="a manifest (pass the .csv file itself: path,label[,body_part,patient,study,split])",
    read=read_manifest,
    info=lambda root: load_manifest(root)[1],
    folder=lambda root: Path(root).expanduser().resolve().parent,
    cache_parent=lambda folder: folder,
)
