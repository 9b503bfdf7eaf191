"""One table row per external image: split, label, hashes, and the duplicate group it belongs to."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mura_utils.data.external.hashing import (
    DEFAULT_MAX_DISTANCE,
    KIND_ORDER,
    MIN_CORRELATION,
    ROTATION_MAX_DISTANCE,
    ROTATION_MIN_CORRELATION,
    components,
    find_links,
    image_descriptors,
)
from mura_utils.data.external.layout import MAX_NESTING, SPLITS, list_files
from mura_utils.data.imaging import IMAGE_SUFFIXES, read_grayscale
from mura_utils.utils.progress import progress_bar

COLUMNS = [
    "path",
    "relpath",
    "split",
    "label",
    "sha1",
    "phash",
    "near_group",
    "duplicate_kind",
    "duplicate_detail",
    "readable",
    "error",
    "width",
    "height",
]


def _hash_file(path: str) -> dict[str, Any]:
    """sha1 of the bytes and perceptual descriptors of the decoded grayscale image; a bad file
    becomes an error row."""
    row: dict[str, Any] = {"sha1": None, "readable": False, "error": "", "width": None, "height": None, "hashes": None}
    try:
        digest = hashlib.sha1()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        row["sha1"] = digest.hexdigest()
        gray = read_grayscale(path)  # the same pixels the training pipeline sees
        row["hashes"] = image_descriptors(gray)
        row["height"], row["width"] = gray.shape
        row["readable"] = True
    except Exception as error:  # noqa: BLE001 - one bad file must not stop a 10k-file scan
        message = str(error)
        row["error"] = message if path in message else f"{path}: {type(error).__name__}: {message}"
    return row


def _default_workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def _hash_all(paths: list[str], num_workers: int, progress: bool) -> list[dict[str, Any]]:
    """Decoding dominates the cost, so spread it over processes; small jobs stay in-process."""

    def bar(items):
        return progress_bar(items, total=len(paths), desc="hashing images", unit="img", disable=not progress)

    if num_workers <= 1 or len(paths) < 4 * num_workers:
        return list(bar(map(_hash_file, paths)))
    chunksize = max(1, min(64, len(paths) // (num_workers * 8)))
    with ProcessPoolExecutor(max_workers=num_workers) as pool:
        return list(bar(pool.map(_hash_file, paths, chunksize=chunksize)))


def hash_files(paths: list[str], num_workers: int | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """sha1 and perceptual descriptors of every file (``readable``/``error`` per row), over processes."""
    return _hash_all(list(paths), _default_workers() if num_workers is None else num_workers, progress)


def group_duplicates(
    sha1: list[str | None],
    descriptors: list[dict[str, np.ndarray] | None],
    max_distance: int = DEFAULT_MAX_DISTANCE,
    rotation_max_distance: int = ROTATION_MAX_DISTANCE,
    min_correlation: float = MIN_CORRELATION,
    rotation_min_correlation: float = ROTATION_MIN_CORRELATION,
) -> pd.DataFrame:
    """near_group, duplicate_kind and duplicate_detail per file.

    Identical bytes always join (unreadable copies included); readable files also join through
    verified perceptual links (``hashing.find_links``), computed once per distinct sha1. A file's
    kind is its closest link: 'exact' (same bytes as another member), 'near' (same orientation:
    re-encoded, resized, brightness), 'transformed' (quarter turn, mirror or small rotation of
    another member); '' for a file in no group.
    """
    n = len(sha1)
    keys = pd.Series(sha1, dtype=object)
    present = np.flatnonzero(keys.notna().to_numpy())
    first_of = pd.Series(present).groupby(pd.factorize(keys.iloc[present])[0]).transform("min").to_numpy()
    edges = [(first, row, "exact", "identical bytes") for row, first in zip(present.tolist(), first_of.tolist())]
    edges = [edge for edge in edges if edge[0] != edge[1]]
    firsts = set(first_of.tolist())
    representatives = [row for row in range(n) if descriptors[row] is not None and row in firsts]
    links = find_links(
        [descriptors[row] for row in representatives],
        max_distance,
        rotation_max_distance,
        min_correlation,
        rotation_min_correlation,
    )
    edges += [(representatives[x.left], representatives[x.right], x.kind, x.detail) for x in links]
    left = np.array([edge[0] for edge in edges], dtype=np.int64)
    right = np.array([edge[1] for edge in edges], dtype=np.int64)
    groups = components(n, left, right)

    # a file's kind: its closest link; a byte copy of a transformed file is 'exact'
    best = np.full(n, len(KIND_ORDER), dtype=np.int64)
    detail = [""] * n
    for a, b, kind, text in edges:
        for row in (a, b):
            if KIND_ORDER[kind] < best[row]:
                best[row], detail[row] = KIND_ORDER[kind], text
    names = {order: kind for kind, order in KIND_ORDER.items()} | {len(KIND_ORDER): ""}
    return pd.DataFrame(
        {"near_group": groups, "duplicate_kind": [names[int(v)] for v in best], "duplicate_detail": detail}
    )


def load_external_index(
    root: str | Path, *, max_distance: int = DEFAULT_MAX_DISTANCE, num_workers: int | None = None, progress: bool = True
) -> pd.DataFrame:
    """One row per image under ``root``'s train|val|test / fractured|not fractured folders.

    Columns: path, relpath, split, label (1 fractured, 0 not fractured), sha1, phash (hex, None if
    unreadable), near_group, duplicate_kind ('exact' / 'near' / 'transformed' / ''),
    duplicate_detail (e.g. "quarter turn (90 degrees)", "small rotation (+7.5 degrees)"), readable, error, width, height.
    Rows are sorted by split (train, val, test) then path. Unreadable files stay as rows so they are
    reported, not silently lost. ``index.attrs`` holds ``root``, ``ignored`` (every other file
    under root) and ``max_distance``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"external data root {str(root)!r} is not a directory")
    images, ignored = list_files(root)
    if not images:
        raise ValueError(
            f"no images found under {str(root)!r}: expected train|val|test folders (at most "
            f"{MAX_NESTING} levels down) holding 'fractured' and 'not fractured' folders of "
            f"{'/'.join(IMAGE_SUFFIXES)} files"
        )
    order = {split: i for i, split in enumerate(SPLITS)}
    images.sort(key=lambda item: (order[item[1]], item[0]))
    paths = [path for path, _, _ in images]
    workers = _default_workers() if num_workers is None else num_workers
    index = pd.DataFrame(
        {
            "path": paths,
            "relpath": [Path(os.path.relpath(p, root)).as_posix() for p in paths],
            "split": [split for _, split, _ in images],
            "label": np.array([label for _, _, label in images], dtype=np.int64),
        }
    )
    hashed = _hash_all(paths, workers, progress)
    descriptors = [row["hashes"] for row in hashed]
    phashes = [None if d is None else f"{int(d['dihedral'][0]):016x}" for d in descriptors]
    # object dtype keeps None (pandas 3 'str' would make it NaN)
    index["sha1"] = pd.Series([row["sha1"] for row in hashed], dtype=object)
    index["phash"] = pd.Series(phashes, dtype=object)
    index["readable"] = np.array([row["readable"] for row in hashed], dtype=bool)
    index["error"] = [row["error"] for row in hashed]
    for column in ("width", "height"):
        index[column] = pd.array([row[column] for row in hashed], dtype="Int64")
    grouped = group_duplicates(index["sha1"].tolist(), descriptors, max_distance)
    for column in grouped.columns:
        index[column] = grouped[column].to_numpy()
    index = index[COLUMNS]
    index.attrs.update(root=os.path.abspath(root), ignored=ignored, max_distance=max_distance)
    return index
