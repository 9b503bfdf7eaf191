"""From any dataset's index table (``data.registry``) to what training reads: the patient-level
validation split, the split file a run keeps, class weights, the default cache folder, and
``RadiographDataset``, a thin Dataset of letterboxed uint8 images with their labels and body parts."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mura_utils.data.augment import AugmentConfig, batch_augment, normalize
from mura_utils.data.constants import BODY_PART_TO_INDEX, BODY_PARTS
from mura_utils.data.imaging import load_letterboxed


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
    from mura_utils.data.registry import dataset_folder
    from mura_utils.utils.io import atomic_write_text

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

    from mura_utils.data.registry import dataset_type

    kind = dataset_type(data_root, dataset)
    folder = kind.folder(data_root)
    if kind.cache_parent is not None:
        return kind.cache_parent(folder) / "mura_cache"
    base = Path(os.environ.get("MURA_CACHE_DIR") or Path.home() / ".cache" / "mura_utils")
    return base / f"{kind.name}_{hashlib.sha256(str(folder).encode()).hexdigest()[:10]}"


def open_image_cache(
    index: pd.DataFrame,
    img_size: int,
    data_root: str | Path,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    dataset: str = "auto",
):
    """The uint8 memory-mapped cache at ``img_size``, built if missing or stale (see
    ``mura_utils.data.cache``). It always covers the *whole* dataset (every split), so
    ``mura prepare``, training and evaluation share one cache instead of decoding twice."""
    from mura_utils.data.cache import prepare_index_cache
    from mura_utils.data.registry import load_index

    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(data_root, dataset)
    cache = prepare_index_cache(load_index(data_root, dataset), img_size, cache_dir, progress=progress)
    for path in index["path"]:
        cache.row_of(path)  # an index from elsewhere fails here, naming the image, not mid-epoch
    return cache


class RadiographDataset(Dataset):
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
            from mura_utils.models.registry import get_spec

            spec = get_spec(model)
            if (mean, std) not in ((None, None), (spec.mean, spec.std)):
                raise ValueError(
                    f"RadiographDataset: mean/std {mean}/{std} contradict model {model!r} ({spec.mean}/{spec.std})"
                )
            mean, std = spec.mean, spec.std
        if not raw and (mean is None or std is None):
            raise ValueError(
                "RadiographDataset(raw=False) normalizes images: pass the model they feed (model='resnet50') "
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
            raise ValueError(f"RadiographDataset: body part(s) {unknown} are not in the vocabulary {list(body_parts)}")
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
