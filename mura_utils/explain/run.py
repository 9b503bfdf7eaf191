"""``mura explain``: every CAM method and both baselines on the fractured test images of a dataset
with fracture boxes (FracAtlas), scored per image, summarized with image-bootstrap intervals and
written out with the method table and the galleries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mura_utils.data.augment import normalize
from mura_utils.data.imaging import letterbox, read_grayscale
from mura_utils.evaluation.bootstrap import DEFAULT_RESAMPLES, ClusterBootstrap
from mura_utils.explain.boxes import COCO_FILE, AnnotationSizeError, FractureAnnotation, read_coco
from mura_utils.explain.cam import cam_heatmaps
from mura_utils.explain.frames import to_image_frame
from mura_utils.explain.localization import (
    BASELINES,
    POINTING_TOLERANCE,
    SCORES,
    baseline_scores,
    image_scores,
    near_mask,
    summarize,
)
from mura_utils.explain.methods import ROAD_SCORES, check_methods, road_scores
from mura_utils.explain.names import DEFAULT_CAM_METHOD, DEFAULT_METHODS, DEFAULT_ROAD_PERCENTILES
from mura_utils.utils.formatting import plain_json
from mura_utils.utils.io import atomic_write_text


@dataclass
class Explainer:
    """A single model and its input contract (letterbox size, normalization) for CAMs and ROAD."""

    model: torch.nn.Module
    model_name: str
    img_size: int
    mean: float
    std: float

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> Explainer:
        from mura_utils.models.ensemble import checkpoint_img_size, checkpoint_normalization, is_ensemble
        from mura_utils.models.restore import load_model

        model, checkpoint = load_model(path, device)
        if is_ensemble(checkpoint):
            raise ValueError(f"{path}: an ensemble checkpoint; mura explain scores the maps of one model")
        mean, std = checkpoint_normalization(checkpoint)
        return cls(model.eval(), checkpoint["model_name"], checkpoint_img_size(checkpoint), mean, std)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def letterboxed(self, grays: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 (N, 1, S, S) letterboxed images on the model's device."""
        return torch.from_numpy(np.stack([letterbox(gray, self.img_size) for gray in grays]))[:, None].to(self.device)

    def heatmaps(self, images: torch.Tensor, method: str) -> np.ndarray:
        """(N, S, S) maps of ``method`` on the letterboxed canvas."""
        return cam_heatmaps(self.model, self.model_name, images, mean=self.mean, std=self.std, method=method)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        logits = self.model(normalize(images, self.mean, self.std))["abnormality"]
        return torch.sigmoid(logits.float()).cpu().numpy()

    def image_maps(self, grays: Sequence[np.ndarray], method: str) -> list[np.ndarray]:
        """``method``'s map of each image, on the image's own pixels."""
        maps = self.heatmaps(self.letterboxed(grays), method)
        return [to_image_frame(heatmap, *gray.shape) for heatmap, gray in zip(maps, grays)]


def explain_cases(
    explainer: Explainer,
    cases: pd.DataFrame,
    annotations: dict[str, FractureAnnotation],
    methods: Sequence[str] = DEFAULT_METHODS,
    batch_size: int = 16,
    road_percentiles: Sequence[int] | None = DEFAULT_ROAD_PERCENTILES,
    road_limit: int | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[dict]]:
    """One row per (image, method or baseline) of ``cases`` (columns image = file name, path):
    the localization scores, the model's probability and, for the first ``road_limit`` images (all
    when None; none without ``road_percentiles``), the ROAD scores. Images whose file does not fit
    their annotations' size are left out and returned as {"image", "reason"}."""
    methods = check_methods(methods)
    rows, skipped, road_done = [], [], 0
    for start in range(0, len(cases), batch_size):
        batch, grays, masks = cases.iloc[start : start + batch_size], [], []
        for image, path in zip(batch["image"], batch["path"]):
            gray = read_grayscale(path)
            try:
                annotation = annotations[image].scaled(gray.shape[1], gray.shape[0])
            except AnnotationSizeError as error:
                skipped.append({"image": image, "reason": str(error)})
                continue
            grays.append((image, str(path), gray))
            boxes = annotation.box_mask()
            near_boxes = near_mask(boxes, POINTING_TOLERANCE, annotation.pixel_size)  # in original pixels
            masks.append((boxes, annotation.polygon_mask(), near_boxes))
        if not grays:
            continue
        images = explainer.letterboxed([gray for _, _, gray in grays])
        probabilities = explainer.probabilities(images)
        road_count = len(grays) if road_limit is None else max(0, min(len(grays), road_limit - road_done))
        if not road_percentiles:
            road_count = 0
        road_done += road_count
        for (image, path, _), (boxes, polygons, near_boxes), probability in zip(grays, masks, probabilities):
            for name, scores in baseline_scores(boxes, polygons, near_boxes).items():
                rows.append({"image": image, "path": path, "method": name, "probability": probability, **scores})
        for method in methods:
            heatmaps = explainer.heatmaps(images, method)
            road = {}
            if road_count:
                inputs = normalize(images[:road_count], explainer.mean, explainer.std)
                road = road_scores(
                    explainer.model, inputs, heatmaps[:road_count], percentiles=road_percentiles, seed=seed
                )
            for position, ((image, path, gray), (boxes, polygons, near_boxes)) in enumerate(zip(grays, masks)):
                scores = image_scores(to_image_frame(heatmaps[position], *gray.shape), boxes, polygons, near_boxes)
                faithfulness = {
                    name: float(values[position]) if position < road_count else float("nan")
                    for name, values in road.items()
                }
                row = {"image": image, "path": path, "method": method, "probability": probabilities[position]}
                rows.append({**row, **scores, **faithfulness})
    table = pd.DataFrame(rows)
    for name in ROAD_SCORES:
        if name not in table:
            table[name] = np.nan
    return table, skipped


def fractured_cases(
    index: pd.DataFrame, annotations: dict[str, FractureAnnotation], limit: int | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """The positive images of ``index`` (columns path, label) that have annotations, as (image, path)
    sorted by file name (the first ``limit``), and the names of positives without any annotation."""
    positives = index[index["label"] == 1]
    names = positives["path"].map(lambda path: Path(path).name)
    if names.duplicated().any():
        raise ValueError(f"file names repeat among the positive images: {sorted(set(names[names.duplicated()]))[:5]}")
    cases = pd.DataFrame({"image": names.to_numpy(), "path": positives["path"].astype(str).to_numpy()})
    annotated = cases["image"].isin(list(annotations))
    cases = cases[annotated].sort_values("image", kind="stable").reset_index(drop=True)
    if limit is not None:
        cases = cases.head(limit)
    return cases, sorted(set(names) - set(annotations))


def _test_index(data_root: str | Path) -> pd.DataFrame:
    """The held-out split of the dataset at ``data_root``, which must have fracture boxes."""
    from mura_utils.data.registry import dataset_info, load_index

    info = dataset_info(data_root)
    if not info.has_boxes:
        raise ValueError(
            f"{data_root}: dataset {info.title} has no fracture boxes to check heatmaps against; "
            "mura explain needs one that has (FracAtlas)"
        )
    return load_index(data_root, dataset=info.name, splits=(info.test_split,))


def run_explain(
    checkpoint: str | Path,
    data_root: str | Path,
    out: str | Path,
    methods: Sequence[str] = DEFAULT_METHODS,
    limit: int | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    road_percentiles: Sequence[int] | None = DEFAULT_ROAD_PERCENTILES,
    road_limit: int | None = None,
    batch_size: int = 16,
    device: str = "auto",
    annotations_path: str | Path | None = None,
    gallery_method: str | None = None,
    per_group: int = 4,
    index: pd.DataFrame | None = None,
) -> dict:
    """Score every method on the fractured test images and write per_image.csv, localization.json,
    methods.csv/.md and the galleries to ``out``; returns localization.json's contents. ``index``
    replaces the dataset's test split (columns path, label)."""
    from mura_utils.explain.report import methods_markdown, methods_table, write_figures
    from mura_utils.utils.runtime import resolve_device

    methods = check_methods(methods)
    gallery_method = gallery_method or (DEFAULT_CAM_METHOD if DEFAULT_CAM_METHOD in methods else methods[0])
    check_methods([gallery_method])
    index = _test_index(data_root) if index is None else index
    annotations_path = Path(annotations_path) if annotations_path else Path(data_root) / COCO_FILE
    annotations = read_coco(annotations_path)
    cases, unannotated = fractured_cases(index, annotations, limit)
    if cases.empty:
        raise ValueError(f"{data_root}: no positive test image has an annotation in {annotations_path}")
    explainer = Explainer.from_checkpoint(checkpoint, resolve_device(device))
    per_image, skipped = explain_cases(
        explainer, cases, annotations, methods, batch_size, road_percentiles, road_limit, seed
    )
    if per_image.empty:
        raise ValueError(f"{data_root}: every chosen image was left out: {skipped[:3]}")
    bootstrap = ClusterBootstrap(per_image["image"].unique(), n_resamples, seed, unit="image")
    reference = DEFAULT_CAM_METHOD if DEFAULT_CAM_METHOD in methods else methods[0]
    scores = (*SCORES, *ROAD_SCORES) if road_percentiles else SCORES
    summary = summarize(per_image, bootstrap, scores, references=(reference, *BASELINES))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "per_image.csv", per_image.to_csv(index=False))
    table = methods_table(summary, [*methods, *BASELINES], (reference, "centre"))
    atomic_write_text(out / "methods.csv", table.to_csv(index=False))
    result = {
        "checkpoint": str(checkpoint),
        "model_name": explainer.model_name,
        "img_size": explainer.img_size,
        "data_root": str(data_root),
        "dataset": getattr(index.attrs.get("dataset"), "title", None),
        "split": getattr(index.attrs.get("dataset"), "test_split", "test"),
        "positive_label": getattr(index.attrs.get("dataset"), "positive_label", "positive"),
        "annotations": str(annotations_path),
        "images": int(per_image["image"].nunique()),
        "methods": methods,
        "baselines": list(BASELINES),
        "reference": reference,
        "pointing": {
            "tolerance_px": POINTING_TOLERANCE,
            "frame": "maps brought back through the letterbox onto the image files, boxes scaled from the listed "
            "COCO size to the files; the tolerance in pixels of the listed (original) size",
            "strict": "pointing: the map's maximum inside a box",
            "tolerant": f"pointing_tol{POINTING_TOLERANCE}: the maximum closer than {POINTING_TOLERANCE} px to a box",
        },
        "bootstrap": {"unit": "image", "resamples": bootstrap.n_resamples, "seed": seed, "level": bootstrap.level},
        "road": {
            "percentiles": list(road_percentiles or []),
            "images": int(per_image.loc[per_image["method"] == methods[0], "road_combined"].notna().sum()),
            "target": "probability of the positive class",
        },
        "skipped": skipped,
        "unannotated": unannotated,
        "summary": summary,
    }
    result["figures"] = write_figures(explainer, per_image, annotations, out, gallery_method, methods, per_group)
    atomic_write_text(out / "methods.md", methods_markdown(table, result))
    result = plain_json(result)
    atomic_write_text(out / "localization.json", json.dumps(result, indent=2, allow_nan=False))
    return result
