"""Grad-CAM galleries: true positives, false positives and false negatives of one run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from mura_utils.evaluation.metrics import image_study_probability
from mura_utils.report.figures import _figure, _save, _styled
from mura_utils.report.runs import Run, report_model_label
from mura_utils.utils.io import atomic_write_text


def gallery_groups(positive: str = "abnormal", negative: str = "normal") -> dict[str, str]:
    """Row labels of a gallery in the dataset's words ('fractured, flagged')."""
    return {
        "TP": f"True positives\n({positive}, flagged)",
        "FP": f"False positives\n({negative}, flagged)",
        "FN": f"False negatives\n({positive}, missed)",
    }


def gallery_cases(predictions: pd.DataFrame, threshold: float, per_group: int = 3) -> pd.DataFrame:
    """True positives, false positives and false negatives among the test *studies* at a
    study-level threshold (the level the validation threshold is chosen at), most confident first;
    each study is shown by its highest-scoring image (the one that pulls its mean up most), so a
    tile row shows different studies. Column ``group`` is TP, FP or FN; ``study_probability`` the
    mean of the study's image probabilities."""
    images = predictions.assign(study_probability=image_study_probability(predictions))
    top_images = images.sort_values("probability", ascending=False, kind="stable").drop_duplicates("study")
    predicted = top_images["study_probability"] >= threshold
    abnormal = top_images["label"] == 1
    selections = {
        "TP": (abnormal & predicted, False),
        "FP": (~abnormal & predicted, False),
        "FN": (abnormal & ~predicted, True),
    }
    chosen = []
    for group, (mask, ascending) in selections.items():
        rows = top_images[mask].sort_values(["study_probability", "study"], ascending=[ascending, True], kind="stable")
        chosen.append(rows.head(per_group).assign(group=group))
    return pd.concat(chosen, ignore_index=True)


def _image_path(path: str, run: Run) -> Path:
    """The image file of a prediction row; a relative path is tried under the run's data_root."""
    candidate = Path(path)
    data_root = run.info.get("data_root")
    if not candidate.is_file() and not candidate.is_absolute() and data_root:
        under_root = Path(data_root) / candidate
        if under_root.is_file():
            return under_root
    return candidate


# bump when the drawing changes (this file, cam.py, overlay, letterbox, the figure style): the key below
# covers the run's files and settings, not the code, so galleries drawn before are redrawn only then
GALLERY_VERSION = 1


def gallery_key(run: Run, per_group: int, img_size: int | None) -> dict:
    """What a gallery shows depends on: the weights (best.pt's bytes), the test predictions, the
    threshold, the size and number of tiles, the dataset's words, and the drawing code's version."""
    digest = hashlib.sha256()
    with open(Path(run.path) / "best.pt", "rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    columns = [column for column in ("path", "study", "label", "probability", "body_part") if column in run.predictions]
    predictions = pd.util.hash_pandas_object(run.predictions[columns], index=False).to_numpy()
    return {
        "version": GALLERY_VERSION,
        "best_pt_sha256": digest.hexdigest(),
        "predictions_hash": hashlib.sha256(predictions.tobytes()).hexdigest(),
        "threshold": run.info.get("threshold"),
        "per_group": per_group,
        "img_size": img_size,
        "dataset": {key: run.dataset.get(key) for key in ("name", "positive_label", "negative_label")},
    }


def cam_gallery(
    run: Run, path: str | Path, per_group: int = 3, img_size: int | None = None, reuse: bool = True
) -> pd.DataFrame:
    """Grad-CAM of the abnormality head for TP/FP/FN test studies at the run's threshold, as a grid
    (rows TP, FP, FN). Returns the chosen cases; reads best.pt on the CPU. With ``reuse``, a gallery
    at ``path`` whose sidecar (``.json``) records the same weights, predictions and settings is kept
    as it is (notebooks 01-03 draw the galleries the report shows: they are not drawn twice)."""
    if run.path is None:
        raise ValueError(f"run {run.name} has no folder, so no best.pt for Grad-CAM")
    path, sidecar = Path(path), Path(path).with_suffix(".json")
    if not (Path(run.path) / "best.pt").is_file():
        return _draw_gallery(run, path, per_group, img_size)  # load_model names what is missing
    key = gallery_key(run, per_group, img_size)
    if reuse and run.info.get("threshold") is not None and path.is_file() and sidecar.is_file():
        try:
            if json.loads(sidecar.read_text()) == key:
                return gallery_cases(run.predictions, float(run.info["threshold"]), per_group)
        except (OSError, ValueError):
            pass  # an unreadable sidecar: draw again
    sidecar.unlink(missing_ok=True)  # an old record must never vouch for the new picture
    cases = _draw_gallery(run, path, per_group, img_size)
    atomic_write_text(sidecar, json.dumps(key, indent=1))  # after the PNG: a crash in between redraws
    return cases


@_styled
def _draw_gallery(run: Run, path: Path, per_group: int, img_size: int | None) -> pd.DataFrame:
    import torch

    from mura_utils.data.imaging import load_letterboxed
    from mura_utils.explain.cam import cam_heatmaps, overlay
    from mura_utils.models.ensemble import checkpoint_normalization
    from mura_utils.models.registry import get_spec
    from mura_utils.models.restore import load_model

    model, checkpoint = load_model(Path(run.path) / "best.pt", "cpu")
    model_name = checkpoint["model_name"]
    size = img_size or checkpoint.get("img_size") or get_spec(model_name).default_img_size
    threshold = float(run.info.get("threshold", checkpoint.get("threshold", 0.5)))
    cases = gallery_cases(run.predictions, threshold, per_group)
    heatmaps, grays = np.zeros((0, size, size)), np.zeros((0, size, size), dtype=np.uint8)
    if len(cases):
        grays = np.stack([load_letterboxed(_image_path(p, run), size) for p in cases["path"]])
        mean, std = checkpoint_normalization(checkpoint)
        heatmaps = cam_heatmaps(model, model_name, torch.from_numpy(grays).unsqueeze(1), mean=mean, std=std)

    dataset = run.dataset
    positive, negative = dataset["positive_label"], dataset["negative_label"]
    groups = gallery_groups(positive, negative)
    columns = max(per_group, 1)
    figure = _figure(2.3 * columns + 1.2, 2.45 * len(groups) + 0.9)
    grid = figure.subplots(len(groups), columns, squeeze=False)
    for row, (group, row_label) in enumerate(groups.items()):
        positions = np.flatnonzero(cases["group"].to_numpy() == group)
        for column in range(columns):
            axes = grid[row, column]
            axes.set_xticks([])
            axes.set_yticks([])
            axes.grid(False)
            for spine in axes.spines.values():
                spine.set_visible(False)
            if column == 0:
                axes.set_ylabel(row_label, fontsize=10, fontweight="bold")
            if column >= len(positions):
                if column == 0:
                    axes.text(
                        0.5, 0.5, "none", ha="center", va="center", fontsize=12, color="0.4", transform=axes.transAxes
                    )
                continue
            case = cases.iloc[positions[column]]
            axes.imshow(overlay(grays[positions[column]], heatmaps[positions[column]]))
            truth = positive if case["label"] == 1 else negative
            axes.set_title(
                f"study p = {case['study_probability']:.2f}, image p = {case['probability']:.2f}\n"
                f"{truth} · {str(case['body_part']).title()}",
                fontsize=8,
            )
    head = "abnormality head" if dataset["name"] == "mura" else f"{positive!r} score"
    figure.suptitle(
        f"Grad-CAM, {head}: {report_model_label(model_name)} "
        f"({'multi-task' if checkpoint.get('multitask') else 'single-task'})\nrun {run.name}",
        fontsize=10,
    )
    figure.supxlabel(
        f"study threshold {threshold:.2f} (chosen on validation studies); most confident studies first,\n"
        f"each by its highest-scoring image; red = regions that raise the {positive} score",
        fontsize=8,
        color="0.3",
    )
    _save(figure, path)
    return cases
