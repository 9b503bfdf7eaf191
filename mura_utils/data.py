"""MURA-v1.1 as a pandas table (one row per image), a patient-level split, and a thin Dataset over
any dataset's index (see ``mura_utils.datasets`` for FracAtlas and CSV manifests).

The official CSVs are the source of truth: the index is built from them without opening a
single image, and every inconsistency (missing file, label that disagrees with its folder name,
image without a labeled study) is an error that names the file, never a silent drop.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .augment import AugmentConfig, batch_augment, normalize
from .constants import BODY_PART_TO_INDEX, BODY_PARTS
from .datasets.base import INDEX_COLUMNS, DatasetLayoutError
from .imaging import load_letterboxed

SPLITS = ("train", "valid")
_IGNORED_NAMES = (".DS_Store", "Thumbs.db")


class MuraIndexError(DatasetLayoutError):
    """The MURA tree or its CSVs are inconsistent; the message names the offending file."""


def resolve_mura_root(root: str | Path) -> Path:
    """Accept the ``MURA-v1.1`` folder itself or the folder that contains it."""
    root = Path(root).expanduser().resolve()
    for candidate in (root, root / "MURA-v1.1"):
        if (candidate / "train_image_paths.csv").is_file() or (candidate / "valid_image_paths.csv").is_file():
            return candidate
    raise MuraIndexError(
        f"{root}: not a MURA-v1.1 folder: expected {root / 'MURA-v1.1' / 'train_image_paths.csv'} "
        f"or {root / 'train_image_paths.csv'} (download MURA-v1.1 from Stanford and unzip it, "
        "or run `mura sample DIR` for the synthetic sample)"
    )


def _read_csv(csv_path: Path, columns: list[str]) -> pd.DataFrame:
    if not csv_path.is_file():
        raise MuraIndexError(f"{csv_path}: official CSV is missing")
    try:
        table = pd.read_csv(
            csv_path, header=None, names=columns, dtype=str, skip_blank_lines=True, keep_default_na=False
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise MuraIndexError(f"{csv_path}: cannot parse CSV ({error})") from error
    for column in columns:
        table[column] = table[column].str.strip()
    return table[table[columns[0]] != ""]


def _relative_parts(paths: list[str], csv_path: Path, n_parts: int) -> list[list[str]]:
    """Split 'MURA-v1.1/train/XR_WRIST/patient00001/study1_positive[/image1.png]' into its parts.

    The first component is dropped, so a renamed top folder still works. Plain Python string
    splitting: ~20x faster than pandas .str on 40k rows.
    """
    parts = [path.replace("\\", "/").strip("/").split("/")[1:] for path in paths]
    for row, path in zip(parts, paths):
        if len(row) != n_parts - 1:
            raise MuraIndexError(
                f"{csv_path}: malformed row {path!r} (expected "
                "MURA-v1.1/<split>/XR_<PART>/<patient>/<study>_<positive|negative>/...)"
            )
    return parts


def _check_parts(parts: list[list[str]], split: str, csv_path: Path) -> None:
    for row in parts:
        if row[0] != split:
            raise MuraIndexError(f"{csv_path}: row {'/'.join(row)!r} is not under {split}/")
        if row[1].removeprefix("XR_") not in BODY_PART_TO_INDEX:
            raise MuraIndexError(f"{csv_path}: unknown body part folder {row[1]!r} in {'/'.join(row)!r}")
        if not row[3].endswith(("_positive", "_negative")):
            raise MuraIndexError(f"{csv_path}: study folder {row[3]!r} does not end in _positive/_negative")


def _is_os_debris(path: str) -> bool:
    """AppleDouble ``._image1.png`` (macOS zips), ``.DS_Store``, ``Thumbs.db``: not radiographs."""
    name = path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return name.startswith("._") or name in _IGNORED_NAMES


def _load_split(mura_root: Path, split: str, ignored: list[str]) -> pd.DataFrame:
    """One split's rows; CSV rows naming OS debris are skipped and appended to ``ignored``."""
    images_csv = mura_root / f"{split}_image_paths.csv"
    studies_csv = mura_root / f"{split}_labeled_studies.csv"
    listed = _read_csv(images_csv, ["image"])["image"].tolist()
    studies = _read_csv(studies_csv, ["study_path", "label"])

    ignored.extend(f"{images_csv.name}: {path}" for path in listed if _is_os_debris(path))
    # drop repeated rows, keep order; never index macOS/Windows debris even when a CSV lists it
    image_paths = list(dict.fromkeys(path for path in listed if not _is_os_debris(path)))
    image_parts = _relative_parts(image_paths, images_csv, 6)
    study_parts = _relative_parts(studies["study_path"].tolist(), studies_csv, 5)
    _check_parts(image_parts, split, images_csv)
    _check_parts(study_parts, split, studies_csv)

    study_labels: dict[str, int] = {}
    for row, label in zip(study_parts, studies["label"]):
        study = "/".join(row)
        if label not in ("0", "1"):
            raise MuraIndexError(f"{studies_csv}: label {label!r} for {study!r} is not 0 or 1")
        folder_label = 1 if study.endswith("_positive") else 0
        if int(label) != folder_label:
            raise MuraIndexError(
                f"{studies_csv}: label {label} for {study!r} disagrees with its folder name "
                "(_positive = 1, _negative = 0)"
            )
        study_labels.setdefault(study, int(label))

    study_folders = ["/".join(row[:4]) for row in image_parts]
    labels = []
    for folder, path in zip(study_folders, image_paths):
        if folder not in study_labels:
            raise MuraIndexError(f"{images_csv}: image {path!r} has no study in {studies_csv}")
        labels.append(study_labels[folder])

    root_text = str(mura_root)
    absolute = [f"{root_text}/{'/'.join(row)}" for row in image_parts]
    absent = [path for path in absolute if not os.path.isfile(path)]
    if absent:
        raise MuraIndexError(f"{images_csv}: {len(absent)} listed image(s) are missing on disk, first: {absent[0]}")
    return pd.DataFrame(
        {
            "path": absolute,
            "split": split,
            "body_part": [row[1].removeprefix("XR_") for row in image_parts],
            "patient": [row[2] for row in image_parts],
            "study": [folder.rsplit("_", 1)[0] for folder in study_folders],
            "label": np.asarray(labels, dtype=np.int64),
        }
    )


def load_mura_index(root: str | Path, splits: tuple[str, ...] = SPLITS) -> pd.DataFrame:
    """One row per image of MURA-v1.1: path, split, body_part, patient, study, label (1 = abnormal).

    ``root`` is the ``MURA-v1.1`` folder or its parent. ``study`` is unique across the dataset
    ('train/XR_WRIST/patient00001/study1'): a patient can have a study1 under several body parts.
    CSV rows naming OS debris (``._*`` AppleDouble files, ``.DS_Store``, ``Thumbs.db``) are skipped
    and listed, as ``"<csv name>: <row>"``, in ``index.attrs["ignored_csv_rows"]``.
    """
    mura_root = resolve_mura_root(root)
    ignored: list[str] = []
    tables = [_load_split(mura_root, split, ignored) for split in splits]
    index = pd.concat(tables, ignore_index=True)[INDEX_COLUMNS]
    index.attrs["ignored_csv_rows"] = ignored
    return index


def patient_split(index: pd.DataFrame, val_fraction: float = 0.1, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split MURA *train* rows into train/validation by patient (no patient on both sides).

    Stratified by body part and label as far as whole patients allow (sklearn's
    StratifiedGroupKFold; one fold of round(1/val_fraction) is validation). MURA's own valid
    split is the held-out test set: it is never used here.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    train_rows = index[index["split"] == "train"]
    if train_rows.empty:
        raise ValueError("patient_split: the index has no 'train' rows")
    patients = train_rows["patient"].nunique()
    if patients < 2:
        raise ValueError(f"patient_split: the training split has {patients} patient(s); a validation split needs 2+")
    strata = train_rows["body_part"] + "_" + train_rows["label"].astype(str)
    # sklearn refuses more folds than the largest stratum has rows (tiny collections): fewer, larger folds
    folds = max(2, min(round(1 / val_fraction), patients, int(strata.value_counts().max())))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # small strata in a tiny sample: "as far as groups allow"
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        train_positions, val_positions = next(splitter.split(train_rows, strata, groups=train_rows["patient"]))
    return (
        train_rows.iloc[np.sort(train_positions)].reset_index(drop=True),
        train_rows.iloc[np.sort(val_positions)].reset_index(drop=True),
    )


def write_split_file(
    path: str | Path, data_root: str | Path, train_index: pd.DataFrame, val_index: pd.DataFrame, test_index=None
) -> None:
    """The images each side of a run saw, as a CSV (path relative to the dataset, split, label, body part),
    so anyone can check which images trained, selected and scored a model."""
    from .datasets import dataset_folder
    from .io import atomic_write_text

    base = dataset_folder(data_root)
    tables = [(train_index, "train"), (val_index, "validation")] + (
        [(test_index, "test")] if test_index is not None else []
    )
    rows = []
    for table, side in tables:
        part = table[["path", "patient", "study", "body_part", "label"]].copy()
        part["path"] = [os.path.relpath(path, base) for path in part["path"]]
        part.insert(1, "split", side)
        rows.append(part)
    atomic_write_text(path, pd.concat(rows, ignore_index=True).to_csv(index=False))


def class_weights(train_index: pd.DataFrame, body_parts: tuple[str, ...] = BODY_PARTS) -> pd.DataFrame:
    """Per-body-part loss weights from the MURA paper: w_abnormal = N/(A+N), w_normal = A/(A+N).

    A and N count abnormal and normal *training* images of that body part, so the rarer class
    of each body part weighs more. Rows follow ``body_parts`` (the dataset's vocabulary, the body-part
    head's order); a part without training images weighs 0.5/0.5.
    """
    counts = train_index.groupby("body_part")["label"].agg(abnormal="sum", total="count")
    counts["normal"] = counts["total"] - counts["abnormal"]
    weights = pd.DataFrame(
        {"w_abnormal": counts["normal"] / counts["total"], "w_normal": counts["abnormal"] / counts["total"]}
    )
    return weights.reindex(list(body_parts)).fillna(0.5)


def default_cache_dir(data_root: str | Path, dataset: str = "auto") -> Path:
    """The decode-once cache: beside the MURA-v1.1 folder, or beside a manifest CSV; for FracAtlas
    (often a read-only download) under ``$MURA_CACHE_DIR`` or ``~/.cache/mura_utils``, one folder per
    dataset location."""
    import hashlib

    from .datasets import dataset_folder, detect_dataset

    name = detect_dataset(data_root) if dataset in (None, "", "auto") else dataset
    folder = dataset_folder(data_root, name)
    if name == "mura":
        return folder.parent / "mura_cache"
    if name == "manifest":
        return folder / "mura_cache"
    base = Path(os.environ.get("MURA_CACHE_DIR") or Path.home() / ".cache" / "mura_utils")
    return base / f"{name}_{hashlib.sha256(str(folder).encode()).hexdigest()[:10]}"


def open_image_cache(
    index: pd.DataFrame,
    img_size: int,
    data_root: str | Path,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    dataset: str = "auto",
):
    """The uint8 memory-mapped cache at ``img_size``, built if missing or stale (see
    ``mura_utils.cache``). It always covers the *whole* dataset (every split), so
    ``mura prepare``, training and evaluation share one cache instead of decoding twice."""
    from .cache import prepare_index_cache
    from .datasets import load_index

    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(data_root, dataset)
    cache = prepare_index_cache(load_index(data_root, dataset), img_size, cache_dir, progress=progress)
    for path in index["path"]:
        cache.row_of(path)  # an index from elsewhere fails here, naming the image, not mid-epoch
    return cache


class MuraDataset(Dataset):
    """Thin Dataset over an index table: one letterboxed grayscale image per row.

    ``raw=True`` yields uint8 pixels for the training loop to augment a whole batch on its
    device (fast path); ``raw=False`` yields float tensors normalized with the mean/std of the
    model they feed (``model="resnet50"``, or explicit ``mean=``/``std=``; there is no default,
    since a wrong one silently degrades a pretrained backbone), augmented per item when ``train``
    is set (convenient in a notebook). ``body_parts`` is the dataset's vocabulary (MURA's seven by
    default; ``DatasetInfo.body_parts`` otherwise). ``cache`` may be a decode-once cache
    (anything with ``row_of(path)`` and ``images``) so epochs after the first never decode PNGs.
    """

    def __init__(
        self,
        index: pd.DataFrame,
        img_size: int,
        train: bool = False,
        raw: bool = False,
        mean: float | None = None,
        std: float | None = None,
        cache=None,
        augment: AugmentConfig = AugmentConfig(),
        model: str | None = None,
        body_parts: tuple[str, ...] = BODY_PARTS,
    ):
        if model is not None:
            from .models import get_spec

            spec = get_spec(model)
            if (mean, std) not in ((None, None), (spec.mean, spec.std)):
                raise ValueError(
                    f"MuraDataset: mean/std {mean}/{std} contradict model {model!r} ({spec.mean}/{spec.std})"
                )
            mean, std = spec.mean, spec.std
        if not raw and (mean is None or std is None):
            raise ValueError(
                "MuraDataset(raw=False) normalizes images: pass the model they feed (model='resnet50') "
                "or its mean= and std="
            )
        self.index = index.reset_index(drop=True)
        self.img_size, self.train, self.raw = img_size, train, raw
        self.mean, self.std, self.cache, self.augment = mean, std, cache, augment
        self.paths = self.index["path"].tolist()
        self.labels = torch.tensor(self.index["label"].to_numpy(), dtype=torch.float32)
        part_index = BODY_PART_TO_INDEX if tuple(body_parts) == BODY_PARTS else {p: i for i, p in enumerate(body_parts)}
        unknown = sorted(set(self.index["body_part"]) - set(part_index))
        if unknown:
            raise ValueError(f"MuraDataset: body part(s) {unknown} are not in the vocabulary {list(body_parts)}")
        self.body_parts = torch.tensor(self.index["body_part"].map(part_index).to_numpy(), dtype=torch.long)
        self.body_part_names = tuple(body_parts)
        self.cache_rows = None if cache is None else np.array([cache.row_of(p) for p in self.paths])

    def __len__(self) -> int:
        return len(self.paths)

    def pixels(self, position: int) -> np.ndarray:
        """The uint8 letterboxed image of one row, from the cache when there is one."""
        if self.cache_rows is not None:
            return np.asarray(self.cache.images[self.cache_rows[position]])
        return load_letterboxed(self.paths[position], self.img_size)

    def __getitem__(self, position: int) -> dict:
        image = torch.from_numpy(self.pixels(position).copy()).unsqueeze(0)
        if not self.raw:
            image = (
                batch_augment(image.unsqueeze(0), self.augment, mean=self.mean, std=self.std)[0]
                if self.train
                else normalize(image, self.mean, self.std)
            )
        return {
            "image": image,
            "label": self.labels[position],
            "body_part": self.body_parts[position],
            "position": position,
        }
