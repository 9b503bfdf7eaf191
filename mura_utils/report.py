"""The comparison report over finished training runs: one table with study-resampled bootstrap
CIs, figures, Grad-CAM galleries and an ``index.md`` that says what was run, on what data, when.

It reads the run folders that ``mura_utils.experiment`` writes (run.json, history.csv,
test_predictions.csv, best.pt) and knows nothing about notebooks: pure functions that return
DataFrames or write files. Every file is written atomically (temp file + rename).
"""

from __future__ import annotations

import json
import subprocess
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import wraps
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, cohen_kappa_score, confusion_matrix, roc_auc_score, roc_curve

from .constants import BODY_PARTS
from .evaluate import binary_metrics, bootstrap_ci, compute_metrics, study_table
from .io import atomic_path, atomic_write_text

ENSEMBLE_NAME = "ensemble (multi-task mean)"
MODEL_ORDER = ("custom_cnn", "resnet50", "densenet169", "efficientnet_b0")
MODEL_LABELS = {
    "custom_cnn": "Custom CNN",
    "resnet50": "ResNet50",
    "densenet169": "DenseNet169",
    "efficientnet_b0": "EfficientNet-B0",
    "ensemble": "Ensemble (multi-task mean)",
}
VARIANT_LABELS = {"multitask": "multi-task", "single_task": "single-task"}
TEXT_COLUMNS = ("path", "split", "body_part", "patient", "study", "predicted_body_part")
REQUIRED_COLUMNS = ("path", "body_part", "study", "label", "probability")
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
GROUPS = {
    "TP": "True positives\n(abnormal, flagged)",
    "FP": "False positives\n(normal, flagged)",
    "FN": "False negatives\n(abnormal, missed)",
}
# What the earlier notebooks reached on MURA valid, and the MURA paper on its hidden test set.
BASELINES = [
    ("EfficientNet-B0 (earlier notebook)", "80.6%", "0.871", "0.609"),
    ("DenseNet169 (earlier notebook)", "79.2%", "0.854", "0.580"),
    ("ResNet50 (earlier notebook)", "75.1%", "0.824", "0.493"),
    ("Custom CNN (earlier notebook)", "66.3%", "0.727", "—"),
    ("MURA paper DenseNet-169 (hidden test set, study level)", "—", "0.929", "0.705"),
]


# ----------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One finished training run: its run.json, test predictions (one row per image) and history."""

    name: str
    model: str
    variant: str  # "multitask" | "single_task"
    info: dict
    predictions: pd.DataFrame
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    path: Path | None = None

    @property
    def multitask(self) -> bool:
        return self.variant == "multitask"

    @property
    def label(self) -> str:
        """How figures and tables name the run: 'ResNet50 · multi-task'."""
        if self.model == "ensemble":
            return MODEL_LABELS["ensemble"]
        return f"{MODEL_LABELS.get(self.model, self.model)} · {VARIANT_LABELS.get(self.variant, self.variant)}"


def _read_predictions(path: Path) -> pd.DataFrame:
    """test_predictions.csv with text columns kept as text and the required columns checked."""
    header = pd.read_csv(path, nrows=0).columns
    table = pd.read_csv(path, dtype={column: str for column in TEXT_COLUMNS if column in header})
    missing = [column for column in REQUIRED_COLUMNS if column not in table]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    if table.empty:
        raise ValueError(f"{path}: no predictions")
    table["label"] = table["label"].astype(int)
    return table


def _sort_key(run: Run) -> tuple:
    model_rank = MODEL_ORDER.index(run.model) if run.model in MODEL_ORDER else len(MODEL_ORDER)
    return (model_rank, run.model, not run.multitask, run.name)


def load_run(folder: str | Path) -> Run:
    """Read one run folder; raises naming the folder when its test predictions are missing."""
    folder = Path(folder)
    try:
        info = json.loads((folder / "run.json").read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{folder / 'run.json'}: not valid JSON ({error})") from error
    predictions_path = folder / "test_predictions.csv"
    if not predictions_path.is_file():
        raise FileNotFoundError(
            f"{folder}: has run.json but no test_predictions.csv (the run did not finish its test-set evaluation)"
        )
    predictions = _read_predictions(predictions_path)
    history_path = folder / "history.csv"
    history = pd.read_csv(history_path) if history_path.is_file() else pd.DataFrame()
    has_parts = "predicted_body_part" in predictions and predictions["predicted_body_part"].notna().any()
    variant = info.get("variant") or ("multitask" if has_parts else "single_task")
    return Run(
        name=info.get("run_name", folder.name),
        model=info.get("model", "unknown"),
        variant=variant,
        info=info,
        predictions=predictions,
        history=history,
        path=folder,
    )


def load_runs(runs_dir: str | Path) -> list[Run]:
    """Every run folder under ``runs_dir`` (folders without run.json are skipped), ordered by model
    and then multi-task before single-task, so tables and legends read the same way every time."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"{runs_dir}: runs folder not found")
    folders = sorted(folder for folder in runs_dir.iterdir() if (folder / "run.json").is_file())
    return sorted((load_run(folder) for folder in folders), key=_sort_key)


def ensemble_predictions(runs: Sequence[Run]) -> pd.DataFrame:
    """Mean image probability over the multi-task runs, matched by path; since a study's
    probability is the mean of its images', its study probability is the mean of theirs too."""
    members = [run for run in runs if run.multitask and run.model != "ensemble"]
    if not members:
        raise ValueError("no multi-task runs to ensemble")
    index_columns = [
        c for c in ("path", "split", "body_part", "patient", "study", "label") if c in members[0].predictions
    ]
    base = members[0].predictions[index_columns].reset_index(drop=True)
    if base["path"].duplicated().any():
        raise ValueError(f"run {members[0].name}: test_predictions.csv lists an image twice")
    probabilities = []
    for run in members:
        table = run.predictions.set_index("path")
        if table.index.duplicated().any() or set(table.index) != set(base["path"]):
            raise ValueError(
                f"run {run.name} was tested on other images than run {members[0].name}; "
                "an ensemble needs the same test set"
            )
        if (table["label"].reindex(base["path"]).to_numpy() != base["label"].to_numpy()).any():
            raise ValueError(f"run {run.name} labels some test images differently from run {members[0].name}")
        probabilities.append(table["probability"].reindex(base["path"]).to_numpy(dtype=float))
    ensemble = base.copy()
    ensemble["probability"] = np.mean(probabilities, axis=0)
    ensemble["predicted_body_part"] = None  # the members' body-part probabilities are not stored
    ensemble["body_part_probability"] = np.nan
    ensemble.attrs["name"] = ENSEMBLE_NAME
    ensemble.attrs["members"] = [run.name for run in members]
    return ensemble


def ensemble_run(runs: Sequence[Run]) -> Run | None:
    """The ensemble as a Run (so figures treat it like a model); None with fewer than two
    multi-task runs, where an 'ensemble' would just repeat one run."""
    members = [run for run in runs if run.multitask and run.model != "ensemble"]
    if len(members) < 2:
        return None

    def total(key: str) -> float:
        values = [run.info.get(key) for run in members]
        return float(sum(values)) if all(isinstance(v, (int, float)) for v in values) else float("nan")

    info = {
        "run_name": ENSEMBLE_NAME,
        "model": "ensemble",
        "variant": "multitask",
        "threshold": 0.5,
        "members": [run.name for run in members],
        "parameters": total("parameters"),
        "train_seconds": total("train_seconds"),
    }
    return Run(ENSEMBLE_NAME, "ensemble", "multitask", info, ensemble_predictions(members))


# ----------------------------------------------------------------------------- table


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


# ----------------------------------------------------------------------------- figures

STYLE = {
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.titlesize": 11,
    "axes.labelsize": 9,
    "figure.titlesize": 12,
    "figure.titleweight": "bold",
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def _styled(plot: Callable) -> Callable:
    """Run a plotting function under the one report style (white, 150 dpi, light grid)."""

    @wraps(plot)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return plot(*args, **kwargs)

    return wrapper


def _figure(width: float, height: float) -> Figure:
    """A figure outside pyplot: no global state, no GUI backend, nothing to leak."""
    return Figure(figsize=(width, height), layout="constrained")


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=150)  # constrained layout already fits legends
    return path


def _color(model: str):
    """One colour per model in every figure (colour-blind safe); the ensemble is black."""
    if model == "ensemble":
        return "black"
    palette = sns.color_palette("colorblind", 10)  # blue, orange, green, purple: easy to tell apart
    return palette[(0, 1, 2, 4)[MODEL_ORDER.index(model)] if model in MODEL_ORDER else 7]


def _line_style(run: Run) -> dict:
    """Same colour for one model's two variants; single-task dashed, the ensemble thick black."""
    return {
        "color": _color(run.model),
        "linestyle": "-" if run.multitask else "--",
        "linewidth": 2.2 if run.model == "ensemble" else 1.5,
    }


def _labels(runs: Sequence[Run]) -> list[str]:
    """Legend names; two runs of the same model and variant (other seeds) get their run names."""
    labels = [run.label for run in runs]
    return [f"{label} [{run.name}]" if labels.count(label) > 1 else label for label, run in zip(labels, runs)]


def _scores(run: Run, level: str) -> tuple[np.ndarray, np.ndarray]:
    if level not in ("study", "image"):
        raise ValueError(f"level must be 'study' or 'image', not {level!r}")
    table = study_table(run.predictions) if level == "study" else run.predictions
    return table["label"].to_numpy(dtype=int), table["probability"].to_numpy(dtype=float)


@_styled
def plot_roc(runs: Sequence[Run], level: str, path: str | Path) -> Path:
    """All models' ROC curves overlaid at one level, AUROC in the legend, chance diagonal."""
    figure = _figure(6.2, 5.4)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="chance (AUROC 0.5)")
    n_units = 0
    for run, label in zip(runs, _labels(runs)):
        labels, probabilities = _scores(run, level)
        n_units = len(labels)
        if len(np.unique(labels)) < 2:
            continue
        false_positive, true_positive, _ = roc_curve(labels, probabilities)
        axes.plot(
            false_positive,
            true_positive,
            label=f"{label} (AUROC {_auroc(labels, probabilities):.3f})",
            **_line_style(run),
        )
    axes.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        aspect="equal",
        xlabel="False positive rate (1 − specificity)",
        ylabel="True positive rate (sensitivity)",
        title=f"ROC, {level} level (MURA valid, n = {n_units} {'studies' if level == 'study' else 'images'})",
    )
    axes.legend(loc="lower right")
    return _save(figure, path)


@_styled
def plot_per_body_part_kappa(runs: Sequence[Run], path: str | Path) -> Path:
    """Grouped bars of study-level Cohen's kappa (threshold 0.5): body part x model."""
    per_run = [compute_metrics(run.predictions, 0.5)["per_body_part"] for run in runs]
    parts = [part for part in BODY_PARTS if any(part in metrics for metrics in per_run)]
    figure = _figure(max(7.5, 1.3 * len(parts) + 3), 4.4)
    axes = figure.subplots()
    width = 0.8 / max(len(runs), 1)
    positions = np.arange(len(parts))
    for i, (run, label, metrics) in enumerate(zip(runs, _labels(runs), per_run)):
        kappas = [metrics.get(part, {}).get("study_kappa", np.nan) for part in parts]
        axes.bar(
            positions - 0.4 + width * (i + 0.5),
            kappas,
            width,
            label=label,
            color=_color(run.model),
            hatch=None if run.multitask else "///",
            edgecolor="white",
            linewidth=0.5,
        )
    counts = [next((metrics[part]["studies"] for metrics in per_run if part in metrics), 0) for part in parts]
    axes.set_xticks(positions, [f"{part.title()}\n({count} studies)" for part, count in zip(parts, counts)])
    axes.axhline(0, color="0.3", linewidth=0.8)
    axes.grid(axis="x", visible=False)
    axes.set(
        ylabel="Cohen's κ (study level)",
        xlabel="Body part",
        title="Study-level Cohen's κ per body part (threshold 0.5)",
    )
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(figure, path)


@_styled
def plot_confusion_matrices(runs: Sequence[Run], path: str | Path, threshold: float = 0.5) -> Path:
    """One study-level confusion matrix per model, counts and row percentages in the cells."""
    columns = min(3, max(len(runs), 1))
    rows = int(np.ceil(len(runs) / columns)) or 1
    figure = _figure(3.3 * columns, 3.1 * rows)
    grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    names = ["normal", "abnormal"]
    for axes, run, label in zip(grid, runs, _labels(runs)):
        studies = study_table(run.predictions)
        counts = confusion_matrix(studies["label"], (studies["probability"] >= threshold).astype(int), labels=[0, 1])
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(counts):
            axes.text(
                j,
                i,
                f"{count}\n({shares[i, j]:.0%})",
                ha="center",
                va="center",
                fontsize=10,
                color="white" if shares[i, j] > 0.6 else "black",
            )
        kappa = binary_metrics(studies["label"], studies["probability"], threshold)["kappa"]
        axes.set_xticks([0, 1], names)
        axes.set_yticks([0, 1], names, rotation=90, va="center")
        axes.set(xlabel="Predicted", ylabel="True", title=f"{label}\nκ = {kappa:.3f}")
        axes.grid(False)
    for axes in grid[len(runs) :]:
        axes.set_visible(False)
    figure.suptitle(f"Study-level confusion matrices (MURA valid, threshold {threshold:g})")
    return _save(figure, path)


@_styled
def plot_training_curves(runs: Sequence[Run], path: str | Path) -> Path:
    """Training loss and validation study AUROC per epoch; a star marks each run's best epoch."""
    figure = _figure(10, 4.2)
    loss_axes, auroc_axes = figure.subplots(1, 2)
    for run, label in zip(runs, _labels(runs)):
        history = run.history
        if history.empty or "epoch" not in history:
            continue
        style = _line_style(run)
        if "train_loss" in history:
            loss_axes.plot(history["epoch"], history["train_loss"], marker="o", markersize=3, label=label, **style)
        if "val_study_auroc" in history:
            auroc_axes.plot(
                history["epoch"], history["val_study_auroc"], marker="o", markersize=3, label=label, **style
            )
            best = history[history["epoch"] == run.info.get("best_epoch")]
            auroc_axes.plot(
                best["epoch"],
                best["val_study_auroc"],
                marker="*",
                markersize=12,
                color=style["color"],
                linestyle="none",
            )
    loss_axes.set(xlabel="Epoch", ylabel="Training loss", title="Training loss")
    auroc_axes.set(xlabel="Epoch", ylabel="Study AUROC (validation)", title="Validation study AUROC (★ best epoch)")
    for axes in (loss_axes, auroc_axes):
        axes.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = loss_axes.get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncol=min(4, len(handles)))
    figure.suptitle("Training curves (validation = patient-level split of MURA train)")
    return _save(figure, path)


@_styled
def plot_reliability(runs: Sequence[Run], path: str | Path, n_bins: int = 10) -> Path:
    """Study-level calibration: observed abnormal fraction per probability bin vs the diagonal."""
    figure = _figure(6.2, 5.4)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="perfectly calibrated")
    for run, label in zip(runs, _labels(runs)):
        labels, probabilities = _scores(run, "study")
        observed, predicted = calibration_curve(labels, probabilities, n_bins=n_bins, strategy="uniform")
        brier = brier_score_loss(labels, probabilities)
        axes.plot(
            predicted, observed, marker="o", markersize=4, label=f"{label} (Brier {brier:.3f})", **_line_style(run)
        )
    axes.set(
        xlim=(0, 1),
        ylim=(-0.02, 1.02),
        aspect="equal",
        xlabel="Mean predicted probability (study)",
        ylabel="Observed fraction abnormal",
        title=f"Reliability, study level ({n_bins} equal-width bins)",
    )
    figure.legend(loc="outside lower center", ncol=2)
    return _save(figure, path)


@_styled
def plot_ablation(table: pd.DataFrame, path: str | Path) -> Path:
    """Multi-task vs single-task per model (study AUROC and kappa) with 95% CI error bars."""
    rows = table[table["model"] != "ensemble"]
    models = sorted(rows["model"].unique(), key=lambda m: (MODEL_ORDER.index(m) if m in MODEL_ORDER else 99, m))
    figure = _figure(max(8, 2.2 * len(models) + 3), 4.2)
    panels = figure.subplots(1, 2)
    width = 0.38
    for axes, metric, title in zip(panels, ("study_auroc", "study_kappa"), ("Study AUROC", "Study Cohen's κ")):
        for offset, variant in ((-width / 2, "multitask"), (width / 2, "single_task")):
            for x, model in enumerate(models):
                match = rows[(rows["model"] == model) & (rows["variant"] == variant)]
                if match.empty:
                    continue
                row = match.iloc[0]
                error = [[row[metric] - row[f"{metric}_ci_low"]], [row[f"{metric}_ci_high"] - row[metric]]]
                axes.bar(
                    x + offset,
                    row[metric],
                    width,
                    yerr=np.nan_to_num(error),
                    capsize=3,
                    color=_color(model),
                    hatch=None if variant == "multitask" else "///",
                    edgecolor="white",
                    linewidth=0.5,
                    error_kw={"elinewidth": 1, "ecolor": "0.25"},
                )
                top = np.nanmax([row[metric], row[f"{metric}_ci_high"]])
                axes.text(x + offset, top + 0.015, f"{row[metric]:.3f}", ha="center", va="bottom", fontsize=7)
        axes.set_xticks(range(len(models)), [MODEL_LABELS.get(m, m) for m in models])
        axes.axhline(0, color="0.3", linewidth=0.8)
        axes.grid(axis="x", visible=False)
        axes.set(ylabel=title, title=title, ylim=(min(0, rows[f"{metric}_ci_low"].min() - 0.05), 1.08))
    legend = [
        Patch(facecolor="0.5", label="multi-task (with body-part head)"),
        Patch(facecolor="0.5", hatch="///", edgecolor="white", label="single-task"),
    ]
    figure.legend(handles=legend, loc="outside lower center", ncol=2)
    figure.suptitle("Ablation: multi-task vs single-task (threshold 0.5, 95% bootstrap CI)")
    return _save(figure, path)


# ----------------------------------------------------------------------------- Grad-CAM


def gallery_cases(predictions: pd.DataFrame, threshold: float, per_group: int = 3) -> pd.DataFrame:
    """True positives, false positives and false negatives among the test *images* at a threshold,
    most confident first, at most one image per study (so a tile row shows different patients'
    studies). Column ``group`` is TP, FP or FN."""
    predicted = predictions["probability"] >= threshold
    abnormal = predictions["label"] == 1
    selections = {
        "TP": (abnormal & predicted, False),
        "FP": (~abnormal & predicted, False),
        "FN": (abnormal & ~predicted, True),
    }
    chosen = []
    for group, (mask, ascending) in selections.items():
        rows = predictions[mask].sort_values("probability", ascending=ascending, kind="stable")
        chosen.append(rows.drop_duplicates("study").head(per_group).assign(group=group))
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


@_styled
def cam_gallery(run: Run, path: str | Path, per_group: int = 3, img_size: int | None = None) -> pd.DataFrame:
    """Grad-CAM of the abnormality head for TP/FP/FN test images at the run's threshold, as a grid
    (rows TP, FP, FN). Returns the chosen cases; reads best.pt on the CPU."""
    import torch

    from .cam import gradcam_heatmaps, overlay
    from .checkpoint import load_model
    from .imaging import load_letterboxed
    from .models import get_spec

    if run.path is None:
        raise ValueError(f"run {run.name} has no folder, so no best.pt for Grad-CAM")
    model, checkpoint = load_model(Path(run.path) / "best.pt", "cpu")
    model_name = checkpoint["model_name"]
    size = img_size or checkpoint.get("img_size") or get_spec(model_name).default_img_size
    threshold = float(run.info.get("threshold", checkpoint.get("threshold", 0.5)))
    cases = gallery_cases(run.predictions, threshold, per_group)
    heatmaps, grays = np.zeros((0, size, size)), np.zeros((0, size, size), dtype=np.uint8)
    if len(cases):
        grays = np.stack([load_letterboxed(_image_path(p, run), size) for p in cases["path"]])
        heatmaps = gradcam_heatmaps(model, model_name, torch.from_numpy(grays).unsqueeze(1))

    columns = max(per_group, 1)
    figure = _figure(2.3 * columns + 1.2, 2.45 * len(GROUPS) + 0.9)
    grid = figure.subplots(len(GROUPS), columns, squeeze=False)
    for row, (group, row_label) in enumerate(GROUPS.items()):
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
            truth = "abnormal" if case["label"] == 1 else "normal"
            axes.set_title(f"p = {case['probability']:.2f} · {truth}\n{str(case['body_part']).title()}", fontsize=8)
    figure.suptitle(
        f"Grad-CAM, abnormality head: {MODEL_LABELS.get(model_name, model_name)} "
        f"({'multi-task' if checkpoint.get('multitask') else 'single-task'}), run {run.name}"
    )
    figure.supxlabel(
        f"threshold {threshold:.2f} (chosen on validation); most confident first; "
        "red = regions that raise the abnormal score",
        fontsize=8,
        color="0.3",
    )
    _save(figure, path)
    return cases


# ----------------------------------------------------------------------------- index.md


def git_commit() -> str:
    """Short commit of the code that wrote the report (with a note if the tree was modified)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0 or not head.stdout.strip():
            return "unknown"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = " (with uncommitted changes)" if status.stdout.strip() else ""
        return head.stdout.strip() + dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _runs_markdown(runs: Sequence[Run]) -> str:
    header = [
        "Run",
        "Model",
        "Variant",
        "Pretrained",
        "Image size",
        "Epochs (best)",
        "Seed",
        "Val threshold",
        "Test images / studies",
    ]
    rows = []
    for run in runs:
        info = run.info
        rows.append(
            [
                run.name,
                MODEL_LABELS.get(run.model, run.model),
                VARIANT_LABELS.get(run.variant, run.variant),
                str(info.get("pretrained", "—")),
                str(info.get("img_size", "—")),
                f"{info.get('epochs', '—')} ({info.get('best_epoch', '—')})",
                str(info.get("seed", "—")),
                _plain(_number(info.get("threshold")), 3),
                f"{len(run.predictions)} / {run.predictions['study'].nunique()}",
            ]
        )
    return markdown_table(header, rows)


def _index_markdown(
    runs: Sequence[Run],
    table: pd.DataFrame,
    written: dict[str, Path],
    out_dir: Path,
    data_description: str,
    synthetic: bool,
    skipped: dict[str, str],
) -> str:
    from . import __version__

    def link(key: str) -> str:
        return written[key].relative_to(out_dir).as_posix()

    lines = []
    if synthetic:
        lines += [
            "> **SYNTHETIC SAMPLE — these numbers say nothing about real radiographs.** "
            "The data are the embedded synthetic sample, not MURA; the report only shows that the "
            "pipeline runs end to end.",
            "",
        ]
    data_roots = sorted({str(run.info.get("data_root")) for run in runs if run.info.get("data_root")})
    test_splits = sorted({str(run.info.get("test_split", "valid")) for run in runs})
    lines += [
        "# MURA abnormality detection: model comparison",
        "",
        f"- **Generated:** {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- **Code:** commit `{git_commit()}`, mura_utils {__version__}",
        f"- **Data:** {data_description}"
        + (f" (data_root: {', '.join(f'`{r}`' for r in data_roots)})" if data_roots else ""),
        f"- **Test set:** MURA *{', '.join(test_splits)}* (held out; thresholds and model selection used a "
        "patient-level validation split of MURA *train*).",
        "- **Label:** MURA's positive class is **abnormal**: fractures, but also hardware, degenerative "
        "joint disease, lesions and other findings. It is not a fracture-only label.",
        "",
        "## Runs",
        "",
        _runs_markdown(runs),
        "## Results",
        "",
        f"Full table: [comparison.md]({link('comparison_md')}), "
        f"all columns: [comparison.csv]({link('comparison_csv')}).",
        "",
        comparison_markdown(table),
        "The ensemble averages the multi-task runs' image probabilities (so also their study "
        "probabilities); its parameters and training time are the members' sums.",
        "",
        "## The bar: earlier results",
        "",
        "What the earlier notebooks reported on MURA valid (their AUROC and κ as the notebooks computed "
        "them), and the MURA paper (Rajpurkar et al., 2018) on its hidden test set (study level; "
        "not comparable one to one with MURA valid).",
        "",
        markdown_table(["Model", "Image accuracy", "AUROC", "Cohen's κ"], BASELINES, [False, True, True, True]),
        "## Figures",
        "",
    ]
    captions = {
        "roc_study": "ROC, study level",
        "roc_image": "ROC, image level",
        "per_body_part_kappa": "Study-level κ per body part",
        "confusion_matrices": "Confusion matrices",
        "training_curves": "Training curves",
        "reliability": "Reliability (calibration)",
        "ablation": "Ablation: multi-task vs single-task",
    }
    for key, caption in captions.items():
        lines += [f"### {caption}", "", f"![{caption}]({link(key)})", ""]
    extras = [
        (name, caption)
        for name, caption in (
            ("external.md", "External generalization (fracture set)"),
            ("figures/sample_images.png", "Sample images per body part"),
            ("runs/reproduce.json", "Parameters and provenance of this run"),
        )
        if (out_dir / name).is_file()
    ]
    if extras:
        lines += ["## More", ""] + [f"- [{caption}]({name})" for name, caption in extras] + [""]
    lines += [
        "## Grad-CAM galleries",
        "",
        "Images the model flagged correctly (TP), flagged wrongly (FP) and missed (FN) at the run's "
        "validation threshold. Grad-CAM shows where the abnormality score is sensitive, "
        "not where a finding is.",
        "",
    ]
    for run in runs:
        key = f"gradcam/{run.name}"
        if key in written:
            lines += [f"- [{run.label}]({link(key)})"]
        else:
            lines += [f"- {run.label}: not drawn ({skipped.get(run.name, 'unknown reason')})"]
    return "\n".join(lines) + "\n"


def write_report(
    runs_dir: str | Path,
    out_dir: str | Path,
    data_description: str,
    synthetic: bool,
    n_resamples: int = 1000,
    cam_per_group: int = 3,
) -> dict[str, Path]:
    """Everything: comparison table (csv + md), figures, Grad-CAM galleries and index.md.

    ``synthetic`` is also switched on when any run.json says its data was the synthetic sample,
    so a report of synthetic numbers can never go out without the warning. Returns the paths.
    """
    from .checkpoint import CheckpointError
    from .imaging import ImageReadError

    out_dir, figures = Path(out_dir), Path(out_dir) / "figures"
    runs = load_runs(runs_dir)
    if not runs:
        raise ValueError(f"{runs_dir}: no run folders (with run.json) to report on")
    synthetic = bool(synthetic or any(run.info.get("synthetic") for run in runs))
    ensemble = ensemble_run(runs)
    everyone = runs + ([ensemble] if ensemble is not None else [])
    table = comparison_table(everyone, n_resamples)
    written = write_comparison(table, out_dir)
    written["roc_study"] = plot_roc(everyone, "study", figures / "roc_study.png")
    written["roc_image"] = plot_roc(everyone, "image", figures / "roc_image.png")
    written["per_body_part_kappa"] = plot_per_body_part_kappa(everyone, figures / "per_body_part_kappa.png")
    written["confusion_matrices"] = plot_confusion_matrices(everyone, figures / "confusion_matrices.png")
    written["training_curves"] = plot_training_curves(runs, figures / "training_curves.png")
    written["reliability"] = plot_reliability(everyone, figures / "reliability.png")
    written["ablation"] = plot_ablation(table, figures / "ablation.png")
    skipped = {}
    for run in runs:
        gallery = figures / "gradcam" / f"{run.name}.png"
        try:
            cam_gallery(run, gallery, per_group=cam_per_group)
            written[f"gradcam/{run.name}"] = gallery
        except (CheckpointError, ImageReadError) as error:
            skipped[run.name] = str(error)
            warnings.warn(f"Grad-CAM gallery for run {run.name} not drawn: {error}", stacklevel=2)
    written["index"] = out_dir / "index.md"
    atomic_write_text(
        written["index"], _index_markdown(runs, table, written, out_dir, data_description, synthetic, skipped)
    )
    return written


__all__ = [
    "Run",
    "load_run",
    "load_runs",
    "ensemble_predictions",
    "ensemble_run",
    "comparison_table",
    "comparison_markdown",
    "write_comparison",
    "markdown_table",
    "plot_roc",
    "plot_per_body_part_kappa",
    "plot_confusion_matrices",
    "plot_training_curves",
    "plot_reliability",
    "plot_ablation",
    "gallery_cases",
    "cam_gallery",
    "git_commit",
    "write_report",
]
