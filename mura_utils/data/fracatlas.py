"""FracAtlas (Abedeen et al., Scientific Data 2023; CC BY 4.0) read from its official layout:

    FracAtlas/dataset.csv                       image_id, hand, leg, hip, shoulder, mixed, ..., fractured
    FracAtlas/images/Fractured/IMG*.jpg         label 1 = fractured
    FracAtlas/images/Non_fractured/IMG*.jpg     label 0
    FracAtlas/Annotations/COCO JSON/COCO_fracture_masks.json   a box and polygon per fracture

The full-size official files and a reduced copy read alike (RGB-encoded or 8-bit grayscale JPEGs: the
decoder takes either). FracAtlas has no patient or study ids: each image is its own patient and study,
so two radiographs of one person can fall on both sides of a split (``multiscan`` marks scans that
hold several views). The held-out test split is a fixed 20% of the images, stratified by body part and
label, drawn from a salted hash of the file names: every run and every user scores the same images.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mura_utils.data.base import INDEX_COLUMNS, DatasetInfo, DatasetLayoutError, DatasetType, held_out_split

REGIONS = ("hand", "leg", "hip", "shoulder")
LABEL_FOLDERS = {1: "Fractured", 0: "Non_fractured"}
BOXES_FILE = Path("Annotations") / "COCO JSON" / "COCO_fracture_masks.json"
TEST_FRACTION = 0.2
SPLIT_SALT = "fracatlas-test-v1"
TEST_SPLIT_FILE = Path(__file__).with_name("fracatlas_test_split.csv")

INFO = DatasetInfo(
    name="fracatlas",
    title="FracAtlas",
    body_parts=("HAND", "HIP", "LEG", "MIXED", "SHOULDER"),
    positive_label="fractured",
    negative_label="not fractured",
    has_patients=False,
    test_split="test",
    citation=(
        "Abedeen I, Rahman MA, Prottyasha FZ, Ahmed T, Chowdhury TM, Shatabda S. FracAtlas: A Dataset for "
        "Fracture Classification, Localization and Segmentation of Musculoskeletal Radiographs. "
        "Scientific Data 10, 521 (2023). doi:10.1038/s41597-023-02432-4"
    ),
    licence="CC BY 4.0",
    has_boxes=True,
)


def is_fracatlas(root: str | Path) -> bool:
    root = Path(root)
    return (root / "dataset.csv").is_file() and (root / "images").is_dir()


def body_part_of(flags: pd.DataFrame) -> pd.Series:
    """HAND / LEG / HIP / SHOULDER from the region flags; several regions, or ``mixed``, is MIXED."""
    regions = flags[list(REGIONS)].astype(int)
    single = regions.sum(axis=1) == 1
    named = regions.idxmax(axis=1).str.upper()
    mixed = ~single | (flags["mixed"].astype(int) == 1)
    return named.where(~mixed, "MIXED")


def listed_test_ids() -> set[str]:
    """The fixed test split shipped with the package (image ids), drawn once from the 4,024-image copy."""
    listing = pd.read_csv(TEST_SPLIT_FILE, comment="#", dtype=str)
    return set(listing["image_id"])


def test_split_of(index: pd.DataFrame, image_ids: pd.Series) -> pd.Series:
    """'test'/'train' per row: the shipped list where this copy holds >= 95% of its ids (the reduced copy, the
    official release: the same test images, extra images train), else a fresh draw by the same rule (a
    subset or a synthetic sample: 20% of each body part x label stratum by salted hash)."""
    listed = listed_test_ids()
    present = set(image_ids)
    if len(listed & present) >= 0.95 * len(listed):
        return pd.Series(["test" if name in listed else "train" for name in image_ids], index=index.index, name="split")
    return held_out_split(index, TEST_FRACTION, SPLIT_SALT)


def load_fracatlas_index(root: str | Path, splits: tuple[str, ...] | None = None) -> pd.DataFrame:
    """One row per listed image: path, split ('train'/'test'), body_part, patient, study, label (1 = fractured),
    plus FracAtlas's own columns (image_id, hardware, multiscan, fracture_count, views) for inspection."""
    root = Path(root).expanduser().resolve()
    csv_path = root / "dataset.csv"
    if not csv_path.is_file():
        raise DatasetLayoutError(f"{csv_path}: FracAtlas's dataset.csv is missing")
    try:
        table = pd.read_csv(csv_path, dtype={"image_id": str})
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DatasetLayoutError(f"{csv_path}: cannot parse CSV ({error})") from error
    required = ["image_id", *REGIONS, "mixed", "fractured"]
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise DatasetLayoutError(f"{csv_path}: missing column(s) {missing} (FracAtlas's dataset.csv has {required})")
    bad_labels = table.loc[~table["fractured"].isin([0, 1]), "image_id"].tolist()
    if bad_labels:
        raise DatasetLayoutError(
            f"{csv_path}: 'fractured' is not 0 or 1 for {len(bad_labels)} row(s), first {bad_labels[0]}"
        )
    flags = table[[*REGIONS, "mixed"]]
    no_region = table.loc[flags[list(REGIONS)].sum(axis=1).eq(0) & flags["mixed"].eq(0), "image_id"].tolist()
    if no_region:
        raise DatasetLayoutError(
            f"{csv_path}: {len(no_region)} image(s) have no body-region flag, first {no_region[0]}"
        )
    duplicated = table.loc[table["image_id"].duplicated(), "image_id"].tolist()
    if duplicated:
        raise DatasetLayoutError(f"{csv_path}: image {duplicated[0]!r} is listed twice")
    labels = table["fractured"].astype(int)
    paths = [str(root / "images" / LABEL_FOLDERS[label] / name) for name, label in zip(table["image_id"], labels)]
    absent = [path for path in paths if not os.path.isfile(path)]
    if absent:
        raise DatasetLayoutError(
            f"{csv_path}: {len(absent)} listed image(s) are missing on disk, first: {absent[0]} "
            "(images live in images/Fractured or images/Non_fractured by their 'fractured' label)"
        )
    stem = table["image_id"].str.rsplit(".", n=1).str[0]
    index = pd.DataFrame(
        {"path": paths, "split": "", "body_part": body_part_of(table), "patient": stem, "study": stem, "label": labels}
    )
    index["split"] = test_split_of(index, table["image_id"])
    extras = [
        c
        for c in ("image_id", "hardware", "multiscan", "fracture_count", "frontal", "lateral", "oblique")
        if c in table
    ]
    index = pd.concat([index[INDEX_COLUMNS], table[extras].reset_index(drop=True)], axis=1)
    if splits is not None:
        index = index[index["split"].isin(splits)].reset_index(drop=True)
    return index


DATASET = DatasetType(
    name="fracatlas",
    looks_like=is_fracatlas,
    layout="FracAtlas (dataset.csv with images/Fractured and images/Non_fractured)",
    read=lambda root, splits: (load_fracatlas_index(root, splits), INFO),
    info=lambda root: INFO,
)
