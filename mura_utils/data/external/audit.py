"""The duplicate audit of an external index (``DuplicateReport``) and its de-duplication."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mura_utils.data.external.hashing import (
    DEFAULT_MAX_DISTANCE,
    MIN_CORRELATION,
    ROTATION_MAX_DISTANCE,
    ROTATION_MIN_CORRELATION,
)
from mura_utils.data.external.layout import LABEL_NAMES, SPLITS

_KEEP_ORDER = {"test": 0, "val": 1, "train": 2}  # deduplicate keeps the test copy of a group
DUPLICATE_KINDS = ("exact", "near", "transformed")


def _sorted_splits(values: pd.Series) -> list[str]:
    present = set(values)
    return [split for split in SPLITS if split in present]


def _group_table(index: pd.DataFrame, key: str) -> pd.DataFrame:
    """One row per ``key`` value shared by 2+ files, with the splits, labels and files involved."""
    rows = index[index[key].notna()]
    rows = rows[rows.groupby(key)[key].transform("size") >= 2]
    columns = [key, "size", "distinct_files", "splits", "labels", "cross_split", "cross_label", "files", "file_kinds"]
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
            "file_kinds": group["duplicate_detail"].tolist() if "duplicate_detail" in group else [""] * len(group),
        }
        for name, group in rows.groupby(key, sort=False)
    ]
    return pd.DataFrame(table, columns=columns)


@dataclass(eq=False)
class DuplicateReport:
    """What is duplicated, conflicting, unreadable or ignored in an external index.

    ``exact`` has one row per sha1 shared by 2+ files; ``groups`` one row per near_group of 2+
    files (``kind`` 'exact' when all its files are byte-identical, 'transformed' when one is a
    quarter turn, mirror image or small rotation of another, else 'near'). ``copies`` counts the
    redundant files (all but the one ``deduplicate`` keeps per group) by the kind of their link.
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
    copies: dict[str, int] = field(default_factory=dict)

    @property
    def near_groups(self) -> pd.DataFrame:
        return self.groups[self.groups["kind"] == "near"]

    @property
    def transformed_groups(self) -> pd.DataFrame:
        return self.groups[self.groups["kind"] == "transformed"]

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
            "transformed_groups": int(len(self.transformed_groups)),
            "duplicate_groups": int(len(self.groups)),
            "files_in_duplicate_groups": int(self.groups["size"].sum()) if len(self.groups) else 0,
            "redundant_copies": int(sum(self.copies.values())),
            **{f"{kind}_copies": int(self.copies.get(kind, 0)) for kind in DUPLICATE_KINDS},
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
            "Duplicate groups: byte-identical files always share a group; other files join when a "
            f"64-bit perceptual hash (pHash) of one is within {self.max_distance} bits of the pHash of the "
            "other under any quarter turn or mirror (8 orientations), or when a centre crop is within "
            f"{ROTATION_MAX_DISTANCE} bits of the other's crop rotated by -10..10 degrees or rescaled "
            "(augmented copies: small rotations with black or cropped corners), and their aligned "
            f"thumbnails then correlate at >= {MIN_CORRELATION} (rotations: {ROTATION_MIN_CORRELATION}) after "
            "a high-pass filter (so distinct "
            "radiographs with the same layout stay apart). Groups are joined transitively. Copies "
            "count every file but the one kept per group, by how it is linked: exact (same bytes), "
            "near (same orientation: re-encoded, resized, brightness), transformed (turned, mirrored, "
            "rotated).",
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
            ("Near-duplicate groups (same orientation, not all byte-identical)", self.near_groups),
            ("Transformed-copy groups (quarter turns, mirror images, small rotations)", self.transformed_groups),
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
    kinds = row.get("file_kinds") or [""] * len(row["files"])
    files = ", ".join(
        f"`{path}`" + (f" ({kind})" if kind and kind != "identical bytes" else "")
        for path, kind in zip(row["files"], kinds)
    )
    return (
        f"- {row['size']} files; splits {'/'.join(row['splits'])}; labels {'/'.join(map(str, row['labels']))}: {files}"
    )


def find_duplicates(index: pd.DataFrame) -> DuplicateReport:
    """Exact and near-duplicate groups, split and label conflicts, unreadable and ignored files."""
    root = index.attrs.get("root") or os.path.commonpath(index["path"].tolist())
    if "relpath" not in index:
        index = index.assign(relpath=[os.path.relpath(p, root) for p in index["path"]])
    groups = _group_table(index, "near_group")
    transformed = (
        index.groupby("near_group")["duplicate_kind"].agg(lambda kinds: (kinds == "transformed").any())
        if "duplicate_kind" in index
        else pd.Series(dtype=bool)
    )
    has_transformed = groups["near_group"].map(transformed).fillna(False).astype(bool).to_numpy()
    groups.insert(
        1, "kind", np.where(groups["distinct_files"] == 1, "exact", np.where(has_transformed, "transformed", "near"))
    )
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
        copies=_copies_by_kind(index),
    )


def _copies_by_kind(index: pd.DataFrame) -> dict[str, int]:
    """Files beyond the first of each group (in deduplicate's keep order), by duplicate_kind."""
    if "duplicate_kind" not in index:
        return {}
    ranked = index.assign(_order=index["split"].map(_KEEP_ORDER)).sort_values(["_order", "path"])
    redundant = ranked[ranked.duplicated("near_group")]
    counts = redundant["duplicate_kind"].replace("", "near").value_counts()
    return {kind: int(counts.get(kind, 0)) for kind in DUPLICATE_KINDS}


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
