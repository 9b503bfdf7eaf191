"""Index, audit and deduplicate the Kaggle "fracture multi-region X-ray data" external test set.

A MURA-trained model is tested for generalization on this set. It holds exact and near duplicates
(across splits and even across classes) and a few truncated files, so every metric on it is only
trustworthy after an audit: ``load_external_index`` -> ``find_duplicates`` -> ``deduplicate``.

Labels here: 1 = fractured, 0 = not fractured. MURA's 1 means "abnormal", a broader finding
(fractures, but also hardware, degenerative disease, lesions), so the two labels are not the same
question; a MURA model's "abnormal" score is only a proxy for "fractured".
"""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

from mura_utils.imaging import IMAGE_SUFFIXES, read_grayscale

try:
    from tqdm.auto import tqdm
except ImportError:  # progress bars are a convenience, never a requirement
    tqdm = None

SPLITS: tuple[str, ...] = ("train", "val", "test")
LABEL_NAMES: dict[int, str] = {1: "fractured", 0: "not fractured"}
DEFAULT_MAX_DISTANCE = 6  # bits of 64: re-encoding or light resizing moves a phash by a few bits
MAX_NESTING = 3  # split folders may sit under up to this many wrapper folders (zips nest them)

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
_CLASS_ALIASES = {"fractured": 1, "notfractured": 0, "nonfractured": 0, "unfractured": 0}
_KEEP_ORDER = {"test": 0, "val": 1, "train": 2}  # deduplicate keeps the test copy of a group
_COLUMNS = ["path", "relpath", "split", "label", "sha1", "phash", "near_group", "readable", "error", "width", "height"]


def _normalize(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


def _split_name(name: str) -> str | None:
    """'Train', 'valid', 'Validation', 'TEST' -> canonical split name, else None."""
    return _SPLIT_ALIASES.get(_normalize(name))


def _class_label(name: str) -> int | None:
    """'Fractured' -> 1; 'not fractured', 'Not_Fractured', 'not-fractured' -> 0; else None."""
    return _CLASS_ALIASES.get(_normalize(name))


def _is_image(path: Path) -> bool:
    # AppleDouble "._x.png" and other dot files carry an image suffix but are not images.
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _find_split_dirs(root: Path) -> list[tuple[Path, str]]:
    """Split folders (those holding at least one class folder), at most MAX_NESTING levels down.

    A found split folder is not searched further, so a nested copy inside it is not a second split.
    """
    found, frontier = [], [root]
    for _ in range(MAX_NESTING + 1):
        deeper = []
        for folder in frontier:
            children = sorted(
                p
                for p in folder.iterdir()
                if p.is_dir() and not p.is_symlink() and not p.name.startswith((".", "__MACOSX"))
            )
            for child in children:
                split = _split_name(child.name)
                if split and any(_class_label(c.name) is not None for c in child.iterdir() if c.is_dir()):
                    found.append((child, split))
                else:
                    deeper.append(child)
        frontier = deeper
    return found


def _list_files(root: Path) -> tuple[list[tuple[str, str, int]], list[str]]:
    """(path, split, label) for every image in a class folder, and every other file as ignored."""
    images: list[tuple[str, str, int]] = []
    for split_dir, split in _find_split_dirs(root):
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            label = _class_label(class_dir.name)
            if label is None:
                continue
            images += [
                (os.path.abspath(p), split, label) for p in sorted(class_dir.iterdir()) if p.is_file() and _is_image(p)
            ]
    indexed = {path for path, _, _ in images}
    ignored = sorted(
        os.path.abspath(os.path.join(folder, name))
        for folder, _, names in os.walk(root)
        for name in names
        if os.path.abspath(os.path.join(folder, name)) not in indexed
    )
    return images, ignored


def _hash_file(path: str) -> dict[str, Any]:
    """sha1 of the bytes, phash of the decoded grayscale image; a bad file becomes an error row."""
    row: dict[str, Any] = {"sha1": None, "phash": None, "readable": False, "error": "", "width": None, "height": None}
    try:
        digest = hashlib.sha1()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        row["sha1"] = digest.hexdigest()
        gray = read_grayscale(path)  # the same pixels the training pipeline sees
        row["phash"] = str(imagehash.phash(Image.fromarray(gray)))
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
    bar = (
        (lambda it: tqdm(it, total=len(paths), desc="hashing images", unit="img", disable=not progress))
        if tqdm is not None
        else (lambda it: it)
    )
    if num_workers <= 1 or len(paths) < 4 * num_workers:
        return list(bar(map(_hash_file, paths)))
    chunksize = max(1, min(64, len(paths) // (num_workers * 8)))
    with ProcessPoolExecutor(max_workers=num_workers) as pool:
        return list(bar(pool.map(_hash_file, paths, chunksize=chunksize)))


# ------------------------------------------------------------------ near-duplicate grouping

_POPCOUNT8 = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def _popcount64_lut(values: np.ndarray) -> np.ndarray:
    """Bits set per uint64 via a byte lookup table (fallback for numpy < 2.0)."""
    values = np.ascontiguousarray(values, dtype=np.uint64)
    return _POPCOUNT8[values.view(np.uint8)].reshape(*values.shape, 8).sum(axis=-1, dtype=np.uint8)


_popcount64 = getattr(np, "bitwise_count", _popcount64_lut)


def hamming_pairs(hashes: np.ndarray, max_distance: int = DEFAULT_MAX_DISTANCE) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of uint64 hashes within ``max_distance`` differing bits.

    All-pairs XOR + popcount in row blocks of ~4M comparisons: O(n^2) but vectorized, so 10k hashes
    (50M pairs) take well under a second, with bounded memory.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    block = max(1, (1 << 22) // max(n, 1))
    lefts, rights = [], []
    for start in range(0, n, block):
        rows = hashes[start : start + block]
        distance = _popcount64(rows[:, None] ^ hashes[None, start:])
        i, j = np.nonzero(distance <= max_distance)
        upper = j > i  # column j is hash start+j, row i is hash start+i
        lefts.append(i[upper] + start)
        rights.append(j[upper] + start)
    if not lefts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(lefts).astype(np.int64), np.concatenate(rights).astype(np.int64)


def _components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Union-find over n items; returns component ids 0, 1, ... numbered by first appearance."""
    parent = list(range(n))

    def find(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for a, b in zip(left.tolist(), right.tolist()):
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)
    roots = np.array([find(item) for item in range(n)], dtype=np.int64)
    return pd.factorize(roots)[0].astype(np.int64)


def group_hashes(hashes: np.ndarray, max_distance: int = DEFAULT_MAX_DISTANCE) -> np.ndarray:
    """Group id per uint64 hash: hashes within ``max_distance`` bits are joined, transitively.

    Identical hashes are collapsed first, so a file copied fifty times costs one comparison row.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    unique, inverse = np.unique(hashes, return_inverse=True)
    left, right = hamming_pairs(unique, max_distance)
    groups = _components(len(unique), left, right)[inverse.reshape(-1)]
    return pd.factorize(groups)[0].astype(np.int64)


def _same_key_edges(keys: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Edges (row, first row with the same key) for rows with a non-missing key."""
    present = keys.notna().to_numpy()
    rows = np.flatnonzero(present)
    codes = pd.factorize(keys[present])[0]
    first = pd.Series(rows).groupby(codes).transform("min").to_numpy()
    return rows.astype(np.int64), first.astype(np.int64)


# ------------------------------------------------------------------ index


def load_external_index(
    root: str | Path, *, max_distance: int = DEFAULT_MAX_DISTANCE, num_workers: int | None = None, progress: bool = True
) -> pd.DataFrame:
    """One row per image under ``root``'s train|val|test / fractured|not fractured folders.

    Columns: path, relpath, split, label (1 fractured, 0 not fractured), sha1, phash (hex, None if
    unreadable), near_group, readable, error, width, height. Rows are sorted by split (train, val,
    test) then path. Unreadable files stay as rows so they are reported, not silently lost.
    ``index.attrs`` holds ``root``, ``ignored`` (every other file under root) and ``max_distance``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"external data root {str(root)!r} is not a directory")
    images, ignored = _list_files(root)
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
    for column in ("sha1", "phash"):  # object dtype keeps None (pandas 3 'str' would make it NaN)
        index[column] = pd.Series([row[column] for row in hashed], dtype=object)
    index["readable"] = np.array([row["readable"] for row in hashed], dtype=bool)
    index["error"] = [row["error"] for row in hashed]
    for column in ("width", "height"):
        index[column] = pd.array([row[column] for row in hashed], dtype="Int64")
    index["near_group"] = _near_groups(index, max_distance)
    index = index[_COLUMNS]
    index.attrs.update(root=os.path.abspath(root), ignored=ignored, max_distance=max_distance)
    return index


def _near_groups(index: pd.DataFrame, max_distance: int) -> np.ndarray:
    """Join rows by close perceptual hash or identical bytes (which covers unreadable copies)."""
    readable = np.flatnonzero(index["readable"].to_numpy())
    hashes = np.array([int(value, 16) for value in index["phash"].iloc[readable]], dtype=np.uint64)
    phash_groups = pd.Series(np.full(len(index), np.nan))
    phash_groups.iloc[readable] = group_hashes(hashes, max_distance)
    edges = [_same_key_edges(phash_groups), _same_key_edges(index["sha1"])]
    left = np.concatenate([a for a, _ in edges])
    right = np.concatenate([b for _, b in edges])
    return _components(len(index), left, right)


# ------------------------------------------------------------------ report


def _sorted_splits(values: pd.Series) -> list[str]:
    present = set(values)
    return [split for split in SPLITS if split in present]


def _group_table(index: pd.DataFrame, key: str) -> pd.DataFrame:
    """One row per ``key`` value shared by 2+ files, with the splits, labels and files involved."""
    rows = index[index[key].notna()]
    rows = rows[rows.groupby(key)[key].transform("size") >= 2]
    columns = [key, "size", "distinct_files", "splits", "labels", "cross_split", "cross_label", "files"]
    table = [
        {
            key: name,
            "size": len(group),
            "distinct_files": group["sha1"].nunique(),
            "splits": _sorted_splits(group["split"]),
            "labels": sorted(int(v) for v in group["label"].unique()),
            "cross_split": group["split"].nunique() > 1,
            "cross_label": group["label"].nunique() > 1,
            "files": group["relpath"].tolist(),
        }
        for name, group in rows.groupby(key, sort=False)
    ]
    return pd.DataFrame(table, columns=columns)


@dataclass(eq=False)
class DuplicateReport:
    """What is duplicated, conflicting, unreadable or ignored in an external index.

    ``exact`` has one row per sha1 shared by 2+ files; ``groups`` one row per near_group of 2+
    files (``kind`` 'exact' when all its files are byte-identical, else 'near').
    """

    root: str
    max_distance: int
    n_images: int
    n_after_dedup: int
    exact: pd.DataFrame
    groups: pd.DataFrame
    unreadable: pd.DataFrame
    ignored: list[str] = field(default_factory=list)
    per_split: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def near_groups(self) -> pd.DataFrame:
        return self.groups[self.groups["kind"] == "near"]

    @property
    def cross_split(self) -> pd.DataFrame:
        return self.groups[self.groups["cross_split"]]

    @property
    def cross_label(self) -> pd.DataFrame:
        return self.groups[self.groups["cross_label"]]

    def summary(self) -> dict[str, Any]:
        """Counts only, as plain ints: safe for json.dumps and for comparing runs."""
        per_split = {
            split: {LABEL_NAMES[label].replace(" ", "_"): int(row[label]) for label in (1, 0)}
            for split, row in self.per_split.iterrows()
        }
        return {
            "images": int(self.n_images),
            "readable": int(self.n_images - len(self.unreadable)),
            "unreadable": int(len(self.unreadable)),
            "ignored_files": int(len(self.ignored)),
            "exact_groups": int(len(self.exact)),
            "exact_redundant_files": int((self.exact["size"] - 1).sum()) if len(self.exact) else 0,
            "near_groups": int(len(self.near_groups)),
            "duplicate_groups": int(len(self.groups)),
            "files_in_duplicate_groups": int(self.groups["size"].sum()) if len(self.groups) else 0,
            "cross_split_groups": int(len(self.cross_split)),
            "cross_label_groups": int(len(self.cross_label)),
            "images_after_dedup": int(self.n_after_dedup),
            "per_split": per_split,
        }

    def to_markdown(self, max_examples: int = 10) -> str:
        """A report section: counts, example groups (root-relative paths), every unreadable file."""
        counts = self.summary()
        lines = [
            "## External set audit: duplicates and unreadable files",
            "",
            f"Root: `{self.root}`. Labels: 1 = fractured, 0 = not fractured. MURA's label 1 means "
            '"abnormal", a broader finding (fractures, but also hardware, degenerative disease, '
            "lesions), so a MURA model's abnormal score is only a proxy for this label.",
            "",
            f"Near duplicates: perceptual hashes (64-bit phash) within {self.max_distance} bits, "
            "joined transitively; byte-identical files are always in one group.",
            "",
            "| | count |",
            "|---|---:|",
        ]
        lines += [f"| {name.replace('_', ' ')} | {value} |" for name, value in counts.items() if name != "per_split"]
        lines += ["", "| split | fractured (1) | not fractured (0) | total |", "|---|---:|---:|---:|"]
        for split, row in counts["per_split"].items():
            lines.append(
                f"| {split} | {row['fractured']} | {row['not_fractured']} | {row['fractured'] + row['not_fractured']} |"
            )
        sections = [
            ("Exact duplicate groups (identical bytes)", self.exact),
            ("Near-duplicate groups (not all byte-identical)", self.near_groups),
            ("Cross-split conflicts (one group in several splits)", self.cross_split),
            ("Cross-label conflicts (one group with both labels)", self.cross_label),
        ]
        for title, table in sections:
            lines += ["", f"### {title}: {len(table)}", ""]
            lines += [_describe_group(row) for row in table.head(max_examples).to_dict("records")]
            if len(table) > max_examples:
                lines.append(f"- ... and {len(table) - max_examples} more")
        lines += ["", f"### Unreadable files: {len(self.unreadable)}", ""]
        lines += [
            f"- `{row['relpath']}` ({row['split']}, label {row['label']}): "
            f"{' '.join(str(row['error']).replace(row['path'] + ': ', '').split())}"
            for row in self.unreadable.to_dict("records")
        ]
        lines += ["", f"### Ignored files (not images in a split/class folder): {len(self.ignored)}", ""]
        lines += [f"- `{os.path.relpath(path, self.root)}`" for path in self.ignored[:max_examples]]
        if len(self.ignored) > max_examples:
            lines.append(f"- ... and {len(self.ignored) - max_examples} more")
        return "\n".join(lines) + "\n"


def _describe_group(row: dict[str, Any]) -> str:
    files = ", ".join(f"`{path}`" for path in row["files"])
    return (
        f"- {row['size']} files; splits {'/'.join(row['splits'])}; labels {'/'.join(map(str, row['labels']))}: {files}"
    )


def find_duplicates(index: pd.DataFrame) -> DuplicateReport:
    """Exact and near-duplicate groups, split and label conflicts, unreadable and ignored files."""
    root = index.attrs.get("root") or os.path.commonpath(index["path"].tolist())
    if "relpath" not in index:
        index = index.assign(relpath=[os.path.relpath(p, root) for p in index["path"]])
    groups = _group_table(index, "near_group")
    groups.insert(1, "kind", np.where(groups["distinct_files"] == 1, "exact", "near"))
    per_split = pd.crosstab(index["split"], index["label"]).reindex(
        index=[s for s in SPLITS if s in set(index["split"])], columns=[1, 0], fill_value=0
    )
    return DuplicateReport(
        root=str(root),
        max_distance=int(index.attrs.get("max_distance", DEFAULT_MAX_DISTANCE)),
        n_images=len(index),
        n_after_dedup=len(deduplicate(index)),
        exact=_group_table(index, "sha1"),
        groups=groups,
        unreadable=index.loc[~index["readable"], ["path", "relpath", "split", "label", "error"]].reset_index(drop=True),
        ignored=list(index.attrs.get("ignored", [])),
        per_split=per_split,
    )


def deduplicate(index: pd.DataFrame, drop_label_conflicts: bool = True) -> pd.DataFrame:
    """Readable rows, one per near_group, so no image is counted twice in an external metric.

    The copy kept is the first by split (test, val, train) then path: the test copy survives, so the
    Kaggle test split stays as close as possible to the one other papers report on. A group holding
    both labels has no trustworthy ground truth (the same radiograph is called fractured and not),
    so with ``drop_label_conflicts`` it is dropped entirely rather than resolved by a guess.
    Rows keep the index's order; unreadable files are dropped (they are listed by the report).
    """
    rows = index[index["readable"]]
    if drop_label_conflicts:
        conflicted = index.groupby("near_group")["label"].nunique() > 1
        rows = rows[~rows["near_group"].map(conflicted).astype(bool)]
    ranked = rows.assign(_order=rows["split"].map(_KEEP_ORDER)).sort_values(["_order", "path"])
    keep = ranked.drop_duplicates("near_group").index
    return rows.loc[rows.index.isin(keep)].reset_index(drop=True)


__all__ = [
    "SPLITS",
    "LABEL_NAMES",
    "DEFAULT_MAX_DISTANCE",
    "DuplicateReport",
    "load_external_index",
    "find_duplicates",
    "deduplicate",
    "group_hashes",
    "hamming_pairs",
]
