"""A first look at a dataset (MURA, FracAtlas, a manifest): counts per body part and label, and a grid of
sample images. The class names come from the dataset (``index.attrs["dataset"]``; MURA's by default)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mura_utils.data.imaging import load_letterboxed
from mura_utils.data.registry import info_from_record
from mura_utils.utils.io import atomic_path


def _info(index: pd.DataFrame):
    return info_from_record(index.attrs.get("dataset"))


def counts_table(index: pd.DataFrame) -> pd.DataFrame:
    """Images and studies per split, body part and label (e.g. normal / abnormal, not fractured / fractured)."""
    info = _info(index)
    label = index["label"].map({0: info.negative_label, 1: info.positive_label})
    images = index.assign(label=label).pivot_table(
        index="body_part", columns=["split", "label"], values="path", aggfunc="count", fill_value=0
    )
    studies = (
        index.drop_duplicates("study")
        .assign(label=label)
        .pivot_table(index="body_part", columns=["split", "label"], values="study", aggfunc="count", fill_value=0)
    )
    table = pd.concat({"images": images, "studies": studies}, axis=1)
    table.loc["TOTAL"] = table.sum()
    return table


def plot_sample_grid(
    index: pd.DataFrame, path: str | Path | None = None, per_part: int = 4, img_size: int = 160, seed: int = 0
):
    """One row per body part: negative and positive examples side by side, labelled."""
    info = _info(index)
    parts = [part for part in info.body_parts if (index["body_part"] == part).any()]
    rng = np.random.default_rng(seed)
    figure, axes = plt.subplots(len(parts), per_part, figsize=(per_part * 1.9, len(parts) * 2.0), squeeze=False)
    for row, part in enumerate(parts):
        part_rows = index[index["body_part"] == part]
        picks = []
        for label in (0, 1):
            candidates = part_rows[part_rows["label"] == label]
            take = min(len(candidates), per_part // 2 + (label == 1) * (per_part % 2))
            picks += [candidates.iloc[i] for i in rng.choice(len(candidates), take, replace=False)] if take else []
        for column, axis in enumerate(np.atleast_1d(axes[row])):
            axis.axis("off")
            if column < len(picks):
                record = picks[column]
                axis.imshow(load_letterboxed(record["path"], img_size), cmap="gray", vmin=0, vmax=255)
                axis.set_title(
                    f"{part.lower()} · {info.positive_label if record['label'] else info.negative_label}",
                    fontsize=8,
                    color="firebrick" if record["label"] else "black",
                )
    figure.tight_layout()
    if path is not None:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=120, format="png")
    return figure
