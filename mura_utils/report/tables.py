"""The comparison table (one row per run, bootstrap CIs) and its markdown rendering."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from ..evaluate import binary_metrics, bootstrap_ci, compute_metrics, study_table
from ..io import atomic_write_text
from .runs import MODEL_LABELS, VARIANT_LABELS, Run, ensemble_run

HEADLINE = ("image_accuracy", "image_auroc", "study_auroc", "study_kappa")
TABLE_COLUMNS = [
    "run",
    "model",
    "variant",
    "threshold",
    *[f"{name}{suffix}" for name in HEADLINE for suffix in ("", "_ci_low", "_ci_high")],
    "study_sensitivity",
    "study_specificity",
    "body_part_accuracy",
    "val_threshold",
    "study_kappa_at_val_threshold",
    "n_images",
    "n_studies",
    "bootstrap_resamples",
    "parameters",
    "train_seconds",
    "images_per_second",
]


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _study_scores(sample: pd.DataFrame) -> pd.DataFrame:
    """Study label and mean image probability, as evaluate.study_table, trimmed to the two columns
    a bootstrap resample needs (study_table's named aggregation is 5x slower; 1000s of resamples)."""
    return sample.groupby("study", sort=False)[["label", "probability"]].mean()


def _auroc(labels, probabilities) -> float:
    labels = np.asarray(labels)
    return float(roc_auc_score(labels, probabilities)) if len(np.unique(labels)) == 2 else float("nan")


def _kappa(labels, probabilities, threshold: float = 0.5) -> float:
    return float(cohen_kappa_score(np.asarray(labels, dtype=int), (np.asarray(probabilities) >= threshold).astype(int)))


def _image_accuracy(sample: pd.DataFrame) -> float:
    return float(((sample["probability"].to_numpy() >= 0.5) == sample["label"].to_numpy()).mean())


def _image_auroc(sample: pd.DataFrame) -> float:
    return _auroc(sample["label"].to_numpy(), sample["probability"].to_numpy())


def _study_auroc(sample: pd.DataFrame) -> float:
    studies = _study_scores(sample)
    return _auroc(studies["label"].to_numpy(), studies["probability"].to_numpy())


def _study_kappa(sample: pd.DataFrame) -> float:
    studies = _study_scores(sample)
    return _kappa(studies["label"].to_numpy(), studies["probability"].to_numpy())


# One bootstrap statistic per headline number: the definitions of evaluate.binary_metrics at
# threshold 0.5, without its other four metrics (the bootstrap evaluates each thousands of times).
BOOTSTRAP_STATISTICS: dict[str, Callable[[pd.DataFrame], float]] = {
    "image_accuracy": _image_accuracy,
    "image_auroc": _image_auroc,
    "study_auroc": _study_auroc,
    "study_kappa": _study_kappa,
}


def run_row(run: Run, n_resamples: int = 1000, seed: int = 0) -> dict:
    """One comparison-table row: metrics at threshold 0.5, CIs from resampling whole studies."""
    metrics = compute_metrics(run.predictions, 0.5)
    row = {
        "run": run.name,
        "model": run.model,
        "variant": run.variant,
        "threshold": 0.5,
        "image_accuracy": _number(metrics["image"]["accuracy"]),
        "image_auroc": _number(metrics["image"]["auroc"]),
        "study_auroc": _number(metrics["study"]["auroc"]),
        "study_kappa": _number(metrics["study"]["kappa"]),
        "study_sensitivity": _number(metrics["study"]["sensitivity"]),
        "study_specificity": _number(metrics["study"]["specificity"]),
        "body_part_accuracy": _number(metrics["body_part_accuracy"]) if run.multitask else float("nan"),
        "n_images": metrics["n_images"],
        "n_studies": metrics["n_studies"],
        "bootstrap_resamples": n_resamples,
    }
    for name in HEADLINE:
        low, high = bootstrap_ci(run.predictions, BOOTSTRAP_STATISTICS[name], n_resamples, seed)
        row[f"{name}_ci_low"], row[f"{name}_ci_high"] = low, high
    val_threshold = run.info.get("threshold") if run.model != "ensemble" else None
    row["val_threshold"] = _number(val_threshold)
    if val_threshold is not None:
        studies = study_table(run.predictions)
        row["study_kappa_at_val_threshold"] = binary_metrics(
            studies["label"], studies["probability"], float(val_threshold)
        )["kappa"]
    for key in ("parameters", "train_seconds", "images_per_second"):
        row[key] = _number(run.info.get(key))
    return row


def comparison_table(runs: Sequence[Run], n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per run plus the multi-task ensemble row (when there are two or more multi-task
    runs). Threshold-dependent numbers use 0.5 (column ``threshold``) so models compare on equal
    terms; ``study_kappa_at_val_threshold`` uses each run's validation-chosen threshold."""
    rows = list(runs)
    if not any(run.model == "ensemble" for run in rows):
        ensemble = ensemble_run(rows)
        rows += [ensemble] if ensemble is not None else []
    return pd.DataFrame([run_row(run, n_resamples, seed) for run in rows], columns=TABLE_COLUMNS)


# ----------------------------------------------------------------------------- markdown


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] | None = None) -> str:
    """A GitHub markdown table by hand (pandas' to_markdown needs the optional tabulate package)."""
    right = right or [False] * len(header)
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|" + "|".join("---:" if r else ":---" for r in right) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _with_ci(row: pd.Series, name: str) -> str:
    value, low, high = row[name], row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
    if pd.isna(value):
        return "—"
    if low is None or pd.isna(low) or pd.isna(high):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.2f}, {high:.2f}]"


def _plain(value, digits: int = 3) -> str:
    return "—" if pd.isna(value) else f"{value:.{digits}f}"


def _parameters(value) -> str:
    return "—" if pd.isna(value) else f"{value / 1e6:.1f} M"


def _duration(seconds) -> str:
    if pd.isna(seconds):
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _model_label(model: str, variant: str) -> tuple[str, str]:
    return MODEL_LABELS.get(model, model), "—" if model == "ensemble" else VARIANT_LABELS.get(variant, variant)


def comparison_markdown(table: pd.DataFrame) -> str:
    """The comparison table as readable markdown: "0.871 [0.85, 0.89]" cells, one row per model."""
    header = [
        "Model",
        "Variant",
        "Image accuracy",
        "Image AUROC",
        "Study AUROC",
        "Study κ",
        "Sensitivity",
        "Specificity",
        "Body-part acc.",
        "Parameters",
        "Train time",
        "Train img/s",
    ]
    rows = [
        [
            *_model_label(row["model"], row["variant"]),
            _with_ci(row, "image_accuracy"),
            _with_ci(row, "image_auroc"),
            _with_ci(row, "study_auroc"),
            _with_ci(row, "study_kappa"),
            _plain(row["study_sensitivity"]),
            _plain(row["study_specificity"]),
            _plain(row["body_part_accuracy"]),
            _parameters(row["parameters"]),
            _duration(row["train_seconds"]),
            _plain(row["images_per_second"], 0),
        ]
        for _, row in table.iterrows()
    ]
    threshold = table["threshold"].iloc[0] if len(table) else 0.5
    resamples = int(table["bootstrap_resamples"].iloc[0]) if len(table) else 0
    note = (
        f"Test set: MURA valid. Accuracy, κ, sensitivity and specificity at threshold {threshold:g}; "
        f"sensitivity, specificity and κ are study level. Brackets: 95% bootstrap CI "
        f"({resamples} resamples of whole studies).\n\n"
    )
    return note + markdown_table(header, rows, [False, False] + [True] * (len(header) - 2))


def write_comparison(table: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """comparison.csv (every column, for re-analysis) and comparison.md (for reading)."""
    out_dir = Path(out_dir)
    paths = {"comparison_csv": out_dir / "comparison.csv", "comparison_md": out_dir / "comparison.md"}
    atomic_write_text(paths["comparison_csv"], table.to_csv(index=False))
    atomic_write_text(paths["comparison_md"], comparison_markdown(table))
    return paths
