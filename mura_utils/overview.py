"""A first look at a MURA tree: counts per body part and label, and a grid of sample images."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .constants import BODY_PARTS
from .imaging import load_letterboxed
from .io import atomic_path


def counts_table(index: pd.DataFrame) -> pd.DataFrame:
    """Images and studies per split, body part and label (normal / abnormal)."""
    label = index["label"].map({0: "normal", 1: "abnormal"})
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
    """One row per body part: normal and abnormal examples side by side, labelled."""
    rng = np.random.default_rng(seed)
    figure, axes = plt.subplots(len(BODY_PARTS), per_part, figsize=(per_part * 1.9, len(BODY_PARTS) * 2.0))
    for row, part in enumerate(BODY_PARTS):
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
                    f"{part.lower()} · {'abnormal' if record['label'] else 'normal'}",
                    fontsize=8,
                    color="firebrick" if record["label"] else "black",
                )
    figure.tight_layout()
    if path is not None:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=120, format="png")
    return figure
