"""A checkpoint's predictions on a dataset split (one row per image) and their metrics.json.

The metrics and the study probability are defined once, in ``mura_utils.evaluation.metrics``;
their intervals come from ``mura_utils.evaluation.bootstrap``. MURA is scored per *study*, and
Cohen's kappa of the thresholded study predictions is the headline number.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from mura_utils.data.augment import normalize
from mura_utils.data.constants import BODY_PARTS
from mura_utils.evaluation.bootstrap import DEFAULT_RESAMPLES, confidence_intervals
from mura_utils.evaluation.metrics import point_metrics, study_table


@torch.no_grad()
def predict_batches(
    model: torch.nn.Module,
    loader: DataLoader,
    device: torch.device,
    mean: float,
    std: float,
    amp_dtype: torch.dtype | None = None,
    tta: bool = False,
    with_plain: bool = False,
) -> dict:
    """Run the model over a loader of raw uint8 batches; returns positions and head outputs (arrays).

    ``tta`` averages the probabilities of two views closed under a horizontal flip, the image and
    its mirror (a batch's ``mirrored_image`` when the loader gives it, see ``tta.MirroredViews``;
    else the letterboxed image flipped), so a mirrored input gets the same probability. With
    ``with_plain`` (and ``tta``), the identity view's own outputs come along under ``"plain"`` (the
    numbers a pass without ``tta`` gives), so plain and TTA predictions cost one pass."""
    with_plain = with_plain and tta
    model.eval()
    positions, probabilities, part_probabilities = [], [], []
    plain_probabilities, plain_part_probabilities = [], []
    for batch in loader:
        images = normalize(batch["image"].to(device, non_blocking=True), mean, std)
        views = [images]
        if tta:
            mirrored = batch.get("mirrored_image")
            views.append(
                torch.flip(images, dims=[-1]) if mirrored is None else normalize(mirrored.to(device), mean, std)
            )
        view_probabilities, view_part_probabilities = [], []
        for view in views:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = model(view)
            view_probabilities.append(torch.sigmoid(outputs["abnormality"].float()))
            if "body_part" in outputs:
                view_part_probabilities.append(torch.softmax(outputs["body_part"].float(), dim=1))
        probabilities.append(torch.stack(view_probabilities).mean(0).cpu())
        if view_part_probabilities:
            part_probabilities.append(torch.stack(view_part_probabilities).mean(0).cpu())
        if with_plain:
            plain_probabilities.append(view_probabilities[0].cpu())
            plain_part_probabilities += [view_part_probabilities[0].cpu()] if view_part_probabilities else []
        positions.append(torch.as_tensor(batch["position"]))
    result = {"position": torch.cat(positions).numpy(), "probability": torch.cat(probabilities).numpy()}
    if part_probabilities:
        result["body_part_probabilities"] = torch.cat(part_probabilities).numpy()
    if with_plain:
        result["plain"] = {"position": result["position"], "probability": torch.cat(plain_probabilities).numpy()}
        if plain_part_probabilities:
            result["plain"]["body_part_probabilities"] = torch.cat(plain_part_probabilities).numpy()
    return result


def predictions_table(
    index: pd.DataFrame, outputs: dict[str, np.ndarray], body_parts: tuple[str, ...] = BODY_PARTS
) -> pd.DataFrame:
    """Join model outputs to their index rows: one row per image, each image exactly once;
    ``body_parts`` is the model's body-part vocabulary (its head's output order)."""
    order = np.argsort(outputs["position"], kind="stable")
    positions = outputs["position"][order]
    if len(np.unique(positions)) != len(positions) or len(positions) != len(index):
        raise ValueError(
            f"predictions cover {len(np.unique(positions))} of {len(index)} images "
            f"with {len(positions) - len(np.unique(positions))} duplicates"
        )
    table = index.reset_index(drop=True).iloc[positions].reset_index(drop=True).copy()
    table["probability"] = outputs["probability"][order]
    if "body_part_probabilities" in outputs:
        part_probabilities = outputs["body_part_probabilities"][order]
        if part_probabilities.shape[1] != len(body_parts):
            raise ValueError(
                f"the body-part head has {part_probabilities.shape[1]} outputs, the vocabulary {len(body_parts)} names"
            )
        table["predicted_body_part"] = np.asarray(body_parts)[part_probabilities.argmax(1)]
        table["body_part_probability"] = part_probabilities.max(1)
    else:
        table["predicted_body_part"] = None
        table["body_part_probability"] = np.nan
    return table


def body_part_order(parts) -> list[str]:
    """The body parts present, MURA's order where they are MURA's, else alphabetical."""
    present = set(parts)
    if present <= set(BODY_PARTS):
        return [part for part in BODY_PARTS if part in present]
    return sorted(present)


def compute_metrics(
    predictions: pd.DataFrame,
    threshold: float = 0.5,
    image_threshold: float = 0.5,
    model_body_parts: tuple[str, ...] | None = None,
    source: str | None = None,
) -> dict:
    """The full metrics.json: image and study level, per body part, body-part accuracy.

    ``threshold`` is the study-level threshold (MURA scores studies; a validation-chosen threshold is
    chosen on studies); image-level metrics use ``image_threshold``, each at the level it belongs to.
    Body-part accuracy counts the images whose true part is in ``model_body_parts`` (the model's
    vocabulary, matched by name: a MURA model on FracAtlas is scored on HAND and SHOULDER images).
    """
    studies = study_table(predictions, source=source)
    per_body_part = {}
    for part in body_part_order(studies["body_part"]):
        part_studies = studies[studies["body_part"] == part]
        if part_studies.empty:
            continue
        part_metrics = point_metrics(part_studies["label"], part_studies["probability"], threshold)
        per_body_part[part] = {
            "study_kappa": part_metrics["kappa"],
            "study_auroc": part_metrics["auroc"],
            "studies": int(len(part_studies)),
        }
    has_parts = predictions["predicted_body_part"].notna().any() if "predicted_body_part" in predictions else False
    scored = predictions
    if has_parts and model_body_parts is not None:
        scored = predictions[predictions["body_part"].isin(model_body_parts)]
    has_parts = has_parts and len(scored) > 0
    return {
        "image": point_metrics(predictions["label"], predictions["probability"], image_threshold),
        "study": point_metrics(studies["label"], studies["probability"], threshold),
        "per_body_part": per_body_part,
        "body_part_accuracy": (
            float((scored["predicted_body_part"] == scored["body_part"]).mean()) if has_parts else None
        ),
        "n_images": int(len(predictions)),
        "n_studies": int(len(studies)),
        "n_patients": int(predictions["patient"].nunique()) if "patient" in predictions else None,
        "threshold": float(threshold),
        "image_threshold": float(image_threshold),
    }


def add_confidence_intervals(
    metrics: dict, predictions: pd.DataFrame, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> dict:
    """metrics.json plus ``ci``: patient-bootstrap intervals of every study and image metric at the
    metrics' own thresholds (``n_resamples`` 0: no ``ci``)."""
    if n_resamples <= 0:
        return metrics
    intervals = confidence_intervals(
        predictions, n_resamples, metrics["threshold"], metrics.get("image_threshold", 0.5), seed
    )
    return {**metrics, "ci": intervals}


def choose_threshold(predictions: pd.DataFrame, criterion: str = "kappa") -> float:
    """A study-level threshold chosen on *validation* predictions (never on the test set):
    the one maximising kappa (or Youden's J with ``criterion='youden'``)."""
    studies = study_table(predictions)
    candidates = np.unique(np.round(studies["probability"].to_numpy(), 4))
    if len(candidates) == 0 or studies["label"].nunique() < 2:
        return 0.5

    def score(threshold: float) -> float:
        metrics = point_metrics(studies["label"], studies["probability"], threshold)
        if criterion == "youden":
            return metrics["sensitivity"] + metrics["specificity"] - 1
        return metrics["kappa"]

    scores = [score(threshold) for threshold in candidates]
    return float(candidates[int(np.argmax(scores))])


def evaluate_checkpoint(
    checkpoint_path: str | Path,
    data_root: str | Path,
    split: str | None = None,
    threshold: float | str = 0.5,
    batch_size: int = 64,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    tta: bool = False,
    dataset: str = "auto",
    index: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Predict every image of a dataset split with a checkpoint; returns (predictions, metrics).

    ``split`` defaults to the dataset's held-out test split (MURA: valid; FracAtlas and manifests: test).
    The body-part vocabulary and the label's meaning come from the checkpoint; the data may be another
    dataset (a cross-dataset test: per-body-part metrics follow the data's parts, body-part accuracy
    counts the parts both share by name). ``index`` scores only those rows of the dataset (a subset of
    the split, e.g. without images that also occur in the model's training data).

    ``threshold`` is a number or 'val', the study-level threshold chosen on the patient-level
    validation split during training (stored in the checkpoint), never one tuned on this split.
    An ensemble checkpoint runs each member at its own input size; ``tta`` adds the mirror view.
    """
    view = "tta" if tta else "plain"
    options = dict(threshold=threshold, batch_size=batch_size, device=device, cache_dir=cache_dir)
    options.update(use_cache=use_cache, progress=progress, dataset=dataset, index=index)
    return evaluate_checkpoint_views(checkpoint_path, data_root, split, views=(view,), **options)[view]


def evaluate_checkpoint_views(
    checkpoint_path: str | Path,
    data_root: str | Path,
    split: str | None = None,
    views: tuple[str, ...] = ("plain", "tta"),
    threshold: float | str = 0.5,
    batch_size: int = 64,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    dataset: str = "auto",
    index: pd.DataFrame | None = None,
) -> dict[str, tuple[pd.DataFrame, dict]]:
    """``evaluate_checkpoint`` for several ``views`` ("plain", "tta") in one pass over the images:
    {view: (predictions, metrics)}. The TTA pass computes the identity view anyway, so the plain
    predictions come with it (the same numbers as a pass of their own)."""
    from mura_utils.data.dataset import RadiographDataset, open_image_cache
    from mura_utils.data.registry import dataset_info, load_index
    from mura_utils.evaluation.tta import MirroredViews
    from mura_utils.models.checkpoint import checkpoint_dataset
    from mura_utils.models.ensemble import is_ensemble, mean_outputs, members_of, threshold_origin
    from mura_utils.models.restore import load_model
    from mura_utils.utils.runtime import resolve_device

    unknown = set(views) - {"plain", "tta"}
    if unknown or not views:
        raise ValueError(f"views must be 'plain' and/or 'tta', not {sorted(unknown) or 'none'}")
    tta = "tta" in views
    torch_device = resolve_device(device)
    model, checkpoint = load_model(checkpoint_path, torch_device)
    model_info, data_info = checkpoint_dataset(checkpoint), dataset_info(data_root, dataset)
    split = split or data_info.test_split
    if index is None:
        index = load_index(data_root, dataset, splits=(split,))
    if index.empty:
        raise ValueError(f"{data_root}: the {data_info.title} index has no images in split {split!r}")
    members, member_outputs = members_of(model, checkpoint), []
    for member in members:
        cache = open_image_cache(index, member.img_size, data_root, cache_dir, progress, dataset) if use_cache else None
        images = RadiographDataset(index, member.img_size, raw=True, cache=cache, body_parts=data_info.body_parts)
        loader = DataLoader(MirroredViews(images) if tta else images, batch_size=batch_size, shuffle=False)
        member_outputs.append(
            predict_batches(
                member.model, loader, torch_device, member.mean, member.std, tta=tta, with_plain="plain" in views
            )
        )
    chosen = float(checkpoint.get("threshold", 0.5)) if threshold == "val" else float(threshold)
    if threshold == "val" and is_ensemble(checkpoint):
        warnings.warn(
            f"{checkpoint_path}: the 'val' threshold {chosen:.4f} of this ensemble is not one chosen on a validation "
            f"split: {threshold_origin(checkpoint)}. Pass a number with --threshold to set it yourself.",
            UserWarning,
            stacklevel=3,  # the caller of evaluate_checkpoint, its usual way in
        )
    about = {  # what every view's metrics.json says about the data and the model
        "dataset": data_info.name,
        "dataset_title": data_info.title,
        "positive_label": data_info.positive_label,
        "model_dataset": model_info.name,
        "model_positive_label": model_info.positive_label,
        "checkpoint": str(checkpoint_path),
        "model": checkpoint["model_name"],
        "multitask": bool(checkpoint["multitask"]),
        "split": split,
        **({"members": [member.model_name for member in members]} if len(members) > 1 else {}),
        **(
            {"threshold_source": checkpoint.get("threshold_source", "unknown")}
            if is_ensemble(checkpoint) and threshold == "val"
            else {}
        ),
    }
    results = {}
    for view in views:
        outputs = [output["plain"] for output in member_outputs] if view == "plain" and tta else member_outputs
        predictions = predictions_table(index, mean_outputs(outputs), model_info.body_parts)
        metrics = compute_metrics(
            predictions, chosen, model_body_parts=model_info.body_parts, source=f"{checkpoint_path} on {split}"
        )
        results[view] = (predictions, {**metrics, **about, "tta": view == "tta"})
    return results
