"""Error analysis of one finished run: which test *studies* it gets wrong, per body part, the most
confident mistakes first, with Grad-CAM of the image that drove each mistake, and (in Jupyter) an
ipywidgets browser over them. Notebook 06 is a few calls into this module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mura_utils.evaluation.metrics import study_table
from mura_utils.evaluation.predictions import body_part_order
from mura_utils.report.runs import load_runs, run_dataset


def pick_run(runs_dir: str | Path, model: str = "custom_cnn", variant: str = "multitask"):
    """The finished run of ``model``/``variant`` under ``runs_dir`` (the lowest seed when there are
    several), chosen by its run.json fields, never by folder name."""
    runs = [run for run in load_runs(runs_dir) if run.model == model and run.variant == variant]
    if not runs:
        raise FileNotFoundError(f"{runs_dir}: no finished {model} {variant} run (run.json with test predictions)")
    return min(runs, key=lambda run: (run.info.get("seed", 0), run.name))


def error_cases(predictions: pd.DataFrame, threshold: float = 0.5, per_part: int = 2) -> pd.DataFrame:
    """Per body part, the ``per_part`` most confident false-negative and false-positive *studies*
    at ``threshold``, each with the image that drove the mistake (FN: its lowest-probability
    image, FP: its highest). Columns: body_part, error (FN/FP), study, label, study_probability,
    images, path, probability (of that image), confidence (distance of the study from the threshold)."""
    studies = study_table(predictions).rename(columns={"probability": "study_probability"})
    predicted = studies["study_probability"] >= threshold
    studies["error"] = np.where((studies["label"] == 1) & ~predicted, "FN", None)
    studies.loc[(studies["label"] == 0) & predicted, "error"] = "FP"
    studies = studies[studies["error"].notna()].copy()
    studies["confidence"] = (studies["study_probability"] - threshold).abs()
    studies = studies.sort_values(["confidence", "study"], ascending=[False, True], kind="stable")
    studies = studies.groupby(["body_part", "error"], sort=False).head(per_part)
    images = predictions.sort_values(["study", "probability", "path"], kind="stable")
    lowest = images.groupby("study").head(1).set_index("study")
    highest = images.groupby("study").tail(1).set_index("study")
    driver = np.where(studies["error"] == "FN", "low", "high")
    studies["path"] = [
        (lowest if which == "low" else highest).loc[study, "path"] for study, which in zip(studies["study"], driver)
    ]
    studies["probability"] = [
        (lowest if which == "low" else highest).loc[study, "probability"]
        for study, which in zip(studies["study"], driver)
    ]
    part_rank = {part: rank for rank, part in enumerate(body_part_order(studies["body_part"]))}
    studies["_part"] = studies["body_part"].map(part_rank)
    studies = studies.sort_values(["_part", "error", "confidence"], ascending=[True, True, False], kind="stable")
    columns = ["body_part", "error", "study", "label", "study_probability", "images", "path", "probability"]
    return studies[[*columns, "confidence"]].reset_index(drop=True)


def study_error_table(
    predictions: pd.DataFrame, threshold: float = 0.5, positive_label: str = "abnormal"
) -> pd.DataFrame:
    """Per body part (and all): studies, positive studies (the column is named by the dataset's label 1:
    'abnormal' for MURA, 'fractured' for FracAtlas), false negatives, false positives, error rate,
    sensitivity and specificity of the study-level calls at ``threshold``."""
    studies = study_table(predictions)
    studies["predicted"] = (studies["probability"] >= threshold).astype(int)
    rows = []
    for part, group in [*studies.groupby("body_part", sort=False), ("all", studies)]:
        abnormal, normal = group["label"] == 1, group["label"] == 0
        false_negatives = int((abnormal & (group["predicted"] == 0)).sum())
        false_positives = int((normal & (group["predicted"] == 1)).sum())
        rows.append(
            {
                "body_part": part,
                "studies": len(group),
                positive_label: int(abnormal.sum()),
                "false_negatives": false_negatives,
                "false_positives": false_positives,
                "error_rate": (false_negatives + false_positives) / len(group),
                "sensitivity": 1 - false_negatives / abnormal.sum() if abnormal.any() else np.nan,
                "specificity": 1 - false_positives / normal.sum() if normal.any() else np.nan,
            }
        )
    table = pd.DataFrame(rows)
    order = {part: rank for rank, part in enumerate([*body_part_order(studies["body_part"]), "all"])}
    return table.sort_values("body_part", key=lambda column: column.map(order)).reset_index(drop=True)


def _image_file(path: str, data_root: str | None) -> Path:
    """A prediction row's image; a relative path is tried under the run's data_root and its parent."""
    candidate = Path(path)
    if candidate.is_file() or candidate.is_absolute() or not data_root:
        return candidate
    for base in (Path(data_root), Path(data_root).parent):
        if (base / candidate).is_file():
            return base / candidate
    return candidate


def case_overlays(run, cases: pd.DataFrame, img_size: int | None = None) -> list[np.ndarray]:
    """Grad-CAM overlays (RGB uint8) of the abnormality head for each case's image, read from
    the run's best.pt on the CPU at the size it was trained at."""
    import torch

    from mura_utils.data.imaging import load_letterboxed
    from mura_utils.explain.cam import cam_heatmaps, overlay
    from mura_utils.models.ensemble import checkpoint_normalization
    from mura_utils.models.restore import load_model

    if cases.empty:
        return []
    model, checkpoint = load_model(Path(run.path) / "best.pt", "cpu")
    size = img_size or int(checkpoint["img_size"])
    grays = np.stack([load_letterboxed(_image_file(p, run.info.get("data_root")), size) for p in cases["path"]])
    mean, std = checkpoint_normalization(checkpoint)
    heatmaps = cam_heatmaps(model, checkpoint["model_name"], torch.from_numpy(grays).unsqueeze(1), mean=mean, std=std)
    return [overlay(gray, heatmap) for gray, heatmap in zip(grays, heatmaps)]


def _caption(case: pd.Series) -> str:
    return (
        f"{case['error']} · {str(case['body_part']).title()}\nstudy p = {case['study_probability']:.2f}"
        f" ({case['images']} img), this image {case['probability']:.2f}"
    )


def _render(overlays: list[np.ndarray], cases: pd.DataFrame, title: str):
    """A matplotlib Figure (no pyplot, so it never touches the notebook's backend): one row per
    body part with mistakes, its false negatives then its false positives."""
    from matplotlib.figure import Figure

    parts = list(dict.fromkeys(cases["body_part"])) or ["none"]
    columns = max(1, int(cases.groupby("body_part").size().max()) if len(cases) else 1)
    figure = Figure(figsize=(2.4 * columns + 0.6, 2.6 * len(parts) + 0.8), layout="constrained")
    grid = np.asarray(figure.subplots(len(parts), columns, squeeze=False))
    for axes in grid.ravel():
        axes.set_axis_off()
    for row, part in enumerate(parts):
        for column, position in enumerate(np.flatnonzero(cases["body_part"].to_numpy() == part)):
            grid[row, column].imshow(overlays[position])
            grid[row, column].set_title(_caption(cases.iloc[position]), fontsize=7)
    if cases.empty:
        grid[0, 0].text(0.5, 0.5, "no study-level mistakes", ha="center", va="center")
    figure.suptitle(title, fontsize=9)
    return figure


def error_figure(run, cases: pd.DataFrame, path: str | Path, threshold: float = 0.5) -> Path:
    """The static error gallery (PNG): per body part the most confident false negatives, then
    false positives, each a Grad-CAM overlay captioned with the study's and the image's probability."""
    from mura_utils.utils.io import atomic_path

    positive = run_dataset(run.info)["positive_label"]
    title = (
        f"Most confident study-level mistakes of run {run.name} at threshold {threshold:.2f}\n"
        f"Grad-CAM of the image that drove each mistake (red: regions that raise the {positive!r} score)"
    )
    figure = _render(case_overlays(run, cases), cases, title)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    return Path(path)


def error_browser(run, cases: pd.DataFrame, interactive: bool = True):
    """An ipywidgets browser over ``cases`` (pick a body part and a mistake; see its Grad-CAM),
    or None when not interactive (papermill, scripts): then the static figure is the record."""
    if not interactive or cases.empty:
        return None
    import io

    import ipywidgets as widgets

    overlays = case_overlays(run, cases)
    labels = [
        (f"{case.body_part.title()} {case.error} p={case.study_probability:.2f} {case.study}", position)
        for position, case in enumerate(cases.itertuples())
    ]
    chooser = widgets.Dropdown(options=labels, description="mistake", layout=widgets.Layout(width="90%"))
    picture = widgets.Image(format="png", width=420)
    details = widgets.HTML()

    def show(change=None) -> None:
        position = chooser.value
        figure = _render([overlays[position]], cases.iloc[[position]], str(cases.iloc[position]["study"]))
        buffer = io.BytesIO()
        figure.savefig(buffer, dpi=110, format="png")
        picture.value = buffer.getvalue()
        details.value = cases.iloc[[position]].drop(columns=["confidence"]).to_html(index=False)

    chooser.observe(show, names="value")
    show()
    return widgets.VBox([chooser, picture, details])
