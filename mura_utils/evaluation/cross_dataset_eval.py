"""Cross-dataset tests: a checkpoint trained on one dataset, scored on another dataset's held-out images.

Public sets share images (the external "fracture multi-region" set holds about a hundred FracAtlas
radiographs byte for byte). An image of the evaluated set that also occurs in the model's training
dataset, as the same bytes or as a resized, re-encoded, mirrored or turned copy (the external set's
duplicate audit, ``external.group_duplicates``), is left out and counted: a model must not be scored on
what it was trained on. Body parts are matched by name (a MURA model on FracAtlas: HAND and SHOULDER).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mura_utils.utils.formatting import format_interval, json_default


def training_overlap(evaluated_paths: list[str], training_paths: list[str], progress: bool = False) -> pd.DataFrame:
    """One row per evaluated path: ``overlap_kind`` ('' when none; else 'exact', 'near' or 'transformed':
    the evaluated image's closest link in its duplicate group) and ``overlap_with`` (one training file of
    that group). Both sets are hashed and grouped together with the duplicate audit's own rules."""
    from mura_utils.data.external.index import _default_workers, group_duplicates, hash_files

    paths = list(evaluated_paths) + list(training_paths)
    hashed = hash_files(paths, _default_workers(), progress)
    grouped = group_duplicates([row["sha1"] for row in hashed], [row["hashes"] for row in hashed])
    groups = grouped["near_group"].to_numpy()
    n_evaluated = len(evaluated_paths)
    training_member: dict[int, str] = {}
    for group, path in zip(groups[n_evaluated:], training_paths):
        training_member.setdefault(int(group), path)
    kinds, partners = [], []
    for row in range(n_evaluated):
        partner = training_member.get(int(groups[row]), "")
        partners.append(partner)
        kinds.append((grouped["duplicate_kind"].iloc[row] or "near") if partner else "")
    return pd.DataFrame({"path": list(evaluated_paths), "overlap_kind": kinds, "overlap_with": partners})


def training_images(checkpoint: dict) -> tuple[list[str], str]:
    """Every image of the dataset(s) a checkpoint (or each ensemble member) was trained on (all splits: a
    copy of a test image is excluded too), and a note; an empty list, with the reason, when that dataset is
    not on this machine. The data root recorded at training (resolved) wins over the config's as typed."""
    from mura_utils.data.base import DatasetLayoutError
    from mura_utils.data.registry import load_index

    paths, notes = [], []
    for record in checkpoint.get("members") or [checkpoint]:
        config = record.get("config") or {}
        root = record.get("data_root") or config.get("data_root")
        if not root:
            return [], "the checkpoint does not record its training data_root"
        try:
            table = load_index(root, config.get("dataset", "auto"))
        except (DatasetLayoutError, FileNotFoundError, ValueError) as error:
            return [], f"training data not readable here ({error})"
        if f"{len(table)} images of {root}" not in notes:
            paths += table["path"].tolist()
            notes.append(f"{len(table)} images of {root}")
    return list(dict.fromkeys(paths)), "; ".join(notes)


def evaluate_cross_dataset(
    checkpoint: str | Path,
    data_root: str | Path,
    out_dir: str | Path,
    dataset: str = "auto",
    n_resamples: int = 1000,
    device: str = "auto",
    seed: int = 0,
    name: str | None = None,
    progress: bool = False,
) -> dict:
    """Score ``checkpoint`` on the held-out split of the dataset at ``data_root``: body parts shared by name
    (all images when the evaluated set has no part the model knows), training-data copies left out and
    counted; writes ``cross_<name>.json``, ``cross_<name>.md`` and ``cross_<name>_predictions.csv``."""
    from mura_utils.data.registry import dataset_info, load_index
    from mura_utils.evaluation.predictions import add_confidence_intervals, evaluate_checkpoint
    from mura_utils.models.checkpoint import checkpoint_dataset, read_checkpoint
    from mura_utils.utils.io import atomic_write_text

    record = read_checkpoint(checkpoint)
    model_info, data_info = checkpoint_dataset(record), dataset_info(data_root, dataset)
    name = name or Path(checkpoint).parent.name
    index = load_index(data_root, dataset, splits=(data_info.test_split,))
    shared = sorted(set(index["body_part"]) & set(model_info.body_parts))
    kept = index[index["body_part"].isin(shared)] if shared else index
    training_paths, training_note = training_images(record)
    overlap = training_overlap(kept["path"].tolist(), training_paths, progress) if training_paths else None
    if overlap is not None:
        kept = kept[overlap["overlap_kind"].to_numpy() == ""]
    kept = kept.reset_index(drop=True)
    if kept.empty:
        raise ValueError(f"{data_root}: no {data_info.title} test image is left to score {checkpoint} on")
    predictions, metrics = evaluate_checkpoint(checkpoint, data_root, device=device, dataset=dataset, index=kept)
    metrics = add_confidence_intervals(metrics, predictions, n_resamples, seed)
    overlap_counts = (
        overlap.loc[overlap["overlap_kind"] != "", "overlap_kind"].value_counts().to_dict()
        if overlap is not None
        else {}
    )
    summary = {
        "model": name,
        "checkpoint": str(checkpoint),
        "trained_on": model_info.title,
        "model_positive_label": model_info.positive_label,
        "evaluated_on": data_info.title,
        "positive_label": data_info.positive_label,
        "split": data_info.test_split,
        "images_in_split": int(len(index)),
        "body_parts_kept": shared or "all (no shared body-part names)",
        "images_of_kept_parts": int(len(index) if not shared else index["body_part"].isin(shared).sum()),
        "training_overlap_checked": overlap is not None,
        "training_overlap_note": training_note,
        "left_out_as_training_copies": {kind: int(count) for kind, count in overlap_counts.items()},
        "images_scored": int(len(kept)),
        "metrics": metrics,
    }
    out = Path(out_dir)
    atomic_write_text(out / f"cross_{name}.json", json.dumps(summary, indent=2, default=json_default))
    atomic_write_text(out / f"cross_{name}_predictions.csv", predictions.to_csv(index=False))
    if overlap is not None:
        atomic_write_text(out / f"cross_{name}_overlap.csv", overlap[overlap["overlap_kind"] != ""].to_csv(index=False))
    atomic_write_text(out / f"cross_{name}.md", cross_markdown(summary))
    return summary


def _with_interval(metrics: dict, level: str, key: str) -> str:
    value = metrics[level].get(key)
    if value is None:
        return "n/a"
    interval = metrics.get("ci", {}).get(level, {}).get(key)
    return f"{value:.3f}" + (f" {format_interval(*interval)}" if interval else "")


def cross_markdown(summary: dict) -> str:
    """The report section of one cross-dataset test."""
    metrics = summary["metrics"]
    left_out = summary["left_out_as_training_copies"]
    lines = [
        f"## {summary['model']} ({summary['trained_on']}) on {summary['evaluated_on']} {summary['split']}",
        "",
        f"Label 1 means *{summary['model_positive_label']}* to the model and *{summary['positive_label']}* in the "
        "evaluated set; the model is applied unchanged, at 0.5 (no threshold tuned on this set).",
        "",
        f"- body parts kept (matched by name): {summary['body_parts_kept']} "
        f"({summary['images_of_kept_parts']} of {summary['images_in_split']} images)",
        (
            f"- left out as copies of training images: {sum(left_out.values())}"
            + (f" ({', '.join(f'{k} {v}' for k, v in left_out.items())})" if left_out else "")
            + f"; checked against {summary['training_overlap_note']}"
            if summary["training_overlap_checked"]
            else f"- copies of training images NOT checked: {summary['training_overlap_note']}"
        ),
        f"- scored: {summary['images_scored']} images, {metrics['n_studies']} studies",
        "",
        "| level | AUROC [95% CI] | kappa | sensitivity | specificity |",
        "|---|---|---|---|---|",
    ]
    for level in ("study", "image"):
        lines.append(
            f"| {level} | {_with_interval(metrics, level, 'auroc')} | {_with_interval(metrics, level, 'kappa')} | "
            f"{_with_interval(metrics, level, 'sensitivity')} | {_with_interval(metrics, level, 'specificity')} |"
        )
    per_part = metrics.get("per_body_part", {})
    if per_part:
        lines += ["", "| body part | studies | study AUROC | study kappa |", "|---|---|---|---|"]
        for part, values in per_part.items():
            auroc = "n/a" if values["study_auroc"] is None else f"{values['study_auroc']:.3f}"
            lines.append(f"| {part} | {values['studies']} | {auroc} | {values['study_kappa']:.3f} |")
    return "\n".join(lines) + "\n"
