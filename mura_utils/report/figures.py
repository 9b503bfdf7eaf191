"""The report's figures: ROC, per-body-part kappa, confusion matrices, training curves,
reliability and the multi-task ablation. Figures live outside pyplot (no global state). Titles,
class names and body parts come from the runs' dataset (run.json "dataset"; MURA for older runs)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, confusion_matrix, roc_curve

from mura_utils.evaluation.metrics import point_metrics, study_table
from mura_utils.models.registry import MODEL_ORDER, model_rank
from mura_utils.report.runs import Run, dataset_short_name, report_dataset, report_model_label
from mura_utils.utils.io import atomic_path

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


SEED_MODEL_COLORS = (0, 1, 2, 4)  # colour-blind palette slots of MODEL_ORDER: blue, orange, green, purple
SPARE_COLORS = (3, 5, 6, 8, 9, 7)  # the other slots (red, brown, pink, olive, sky, grey), for other models


def model_colors(models: Iterable[str]) -> dict[str, tuple | str]:
    """One distinct colour per model (colour-blind safe): the four seed models keep theirs, other
    models take the spare colours in the order given (then evenly spaced hues), the ensemble black."""
    palette = sns.color_palette("colorblind", 10)
    colors: dict[str, tuple | str] = {"ensemble": "black"}
    colors.update((model, palette[slot]) for model, slot in zip(MODEL_ORDER, SEED_MODEL_COLORS))
    others = [model for model in dict.fromkeys(models) if model not in colors]
    spare = [palette[slot] for slot in SPARE_COLORS]
    if len(others) > len(spare):
        spare += sns.color_palette("husl", len(others) - len(spare))
    colors.update(zip(others, spare))
    return colors


# line styles and bar hatches of a model's first, second, ... settings (see runs.name_settings)
MULTITASK_LINES = ("-", "-.", (0, (1, 1.5)), (0, (6, 1.5, 1, 1.5, 1, 1.5)))
SINGLE_TASK_LINES = ("--", (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 3)))
MULTITASK_HATCHES = (None, "..", "xx", "oo")
SINGLE_TASK_HATCHES = ("///", "\\\\\\", "++", "--")


def _setting_rank(run: Run, runs: Sequence[Run]) -> int:
    """0 for a model's first settings (the only ones, usually), 1 for its second, ... in name order."""
    settings = sorted({other.setting for other in runs if other.model == run.model})
    return settings.index(run.setting) if run.setting in settings else 0


def _line_style(run: Run, colors: dict, runs: Sequence[Run] = ()) -> dict:
    """Same colour for one model's two variants; single-task dashed, the ensemble thick black; a
    model's runs with other settings (image size, ...) in other dash patterns."""
    lines = MULTITASK_LINES if run.multitask else SINGLE_TASK_LINES
    return {
        "color": colors[run.model],
        "linestyle": lines[_setting_rank(run, runs) % len(lines)],
        "linewidth": 2.2 if run.model == "ensemble" else 1.5,
    }


def _labels(runs: Sequence[Run]) -> list[str]:
    """Legend names; two runs of the same model and variant (other seeds) get their run names."""
    labels = [run.label for run in runs]
    return [f"{label} [{run.name}]" if labels.count(label) > 1 else label for label, run in zip(labels, runs)]


def _test_set(runs: Sequence[Run]) -> str:
    """'MURA valid', 'FracAtlas test': the runs' dataset and test split, for titles."""
    dataset = report_dataset(runs)
    return f"{dataset_short_name(dataset)} {dataset['test_split']}"


def body_part_kappas(runs: Sequence[Run], threshold: float = 0.5) -> pd.DataFrame:
    """Study-level Cohen's kappa per body part (rows, in the dataset's order; a part the test set
    has but the dataset does not list comes last) and run (columns, run names), and the number of
    studies per part (column ``studies``, from the first run that has the part)."""
    dataset = report_dataset(runs)
    tables = [study_table(run.predictions) for run in runs]
    present = list(dict.fromkeys(str(part) for table in tables for part in table["body_part"]))
    parts = [part for part in dataset["body_parts"] if part in present]
    parts += sorted(part for part in present if part not in parts)
    result = pd.DataFrame(index=pd.Index(parts, name="body_part"))
    result["studies"] = [
        next(
            (
                int((table["body_part"].astype(str) == part).sum())
                for table in tables
                if part in set(table["body_part"].astype(str))
            ),
            0,
        )
        for part in parts
    ]
    for run, table in zip(runs, tables):
        kappas = []
        for part in parts:
            studies = table[table["body_part"].astype(str) == part]
            kappas.append(
                point_metrics(studies["label"], studies["probability"], threshold)["kappa"] if len(studies) else np.nan
            )
        result[run.name] = kappas
    return result


def _scores(run: Run, level: str) -> tuple[np.ndarray, np.ndarray]:
    if level not in ("study", "image"):
        raise ValueError(f"level must be 'study' or 'image', not {level!r}")
    table = study_table(run.predictions) if level == "study" else run.predictions
    return table["label"].to_numpy(dtype=int), table["probability"].to_numpy(dtype=float)


@_styled
def plot_roc(runs: Sequence[Run], level: str, path: str | Path, colors: dict | None = None) -> Path:
    """All models' ROC curves overlaid at one level, AUROC in the legend, chance diagonal."""
    colors = colors or model_colors(run.model for run in runs)
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
            label=f"{label} (AUROC {point_metrics(labels, probabilities)['auroc']:.3f})",
            **_line_style(run, colors, runs),
        )
    axes.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        aspect="equal",
        xlabel="False positive rate (1 − specificity)",
        ylabel="True positive rate (sensitivity)",
        title=f"ROC, {level} level ({_test_set(runs)}, n = {n_units} {'studies' if level == 'study' else 'images'})",
    )
    axes.legend(loc="lower right")
    return _save(figure, path)


@_styled
def plot_per_body_part_kappa(runs: Sequence[Run], path: str | Path, colors: dict | None = None) -> Path:
    """Grouped bars of study-level Cohen's kappa (threshold 0.5): body part x model."""
    colors = colors or model_colors(run.model for run in runs)
    kappas_per_part = body_part_kappas(runs)
    parts = list(kappas_per_part.index)
    figure = _figure(max(7.5, 1.3 * len(parts) + 3), 4.4)
    axes = figure.subplots()
    width = 0.8 / max(len(runs), 1)
    positions = np.arange(len(parts))
    for i, (run, label) in enumerate(zip(runs, _labels(runs))):
        kappas = kappas_per_part.iloc[:, 1 + i].to_numpy(dtype=float)  # by position: run names may repeat
        axes.bar(
            positions - 0.4 + width * (i + 0.5),
            kappas,
            width,
            label=label,
            color=colors[run.model],
            hatch=(MULTITASK_HATCHES if run.multitask else SINGLE_TASK_HATCHES)[_setting_rank(run, runs) % 4],
            edgecolor="white",
            linewidth=0.5,
        )
    counts = kappas_per_part["studies"].tolist()
    axes.set_xticks(positions, [f"{part.title()}\n({count} studies)" for part, count in zip(parts, counts)])
    axes.axhline(0, color="0.3", linewidth=0.8)
    axes.grid(axis="x", visible=False)
    axes.set(
        ylabel="Cohen's κ (study level)",
        xlabel="Body part",
        title="Study-level Cohen's κ per body part (threshold 0.5)"
        + ("" if report_dataset(runs)["name"] == "mura" else f", {_test_set(runs)}"),
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
    dataset = report_dataset(runs)
    names = [dataset["negative_label"], dataset["positive_label"]]
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
        kappa = point_metrics(studies["label"], studies["probability"], threshold)["kappa"]
        axes.set_xticks([0, 1], names)
        axes.set_yticks([0, 1], names, rotation=90, va="center")
        axes.set(xlabel="Predicted", ylabel="True", title=f"{label}\nκ = {kappa:.3f}")
        axes.grid(False)
    for axes in grid[len(runs) :]:
        axes.set_visible(False)
    figure.suptitle(f"Study-level confusion matrices ({_test_set(runs)}, threshold {threshold:g})")
    return _save(figure, path)


@_styled
def plot_training_curves(runs: Sequence[Run], path: str | Path, colors: dict | None = None) -> Path:
    """Training loss and validation study AUROC per epoch; a star marks each run's best epoch."""
    colors = colors or model_colors(run.model for run in runs)
    figure = _figure(10, 4.2)
    loss_axes, auroc_axes = figure.subplots(1, 2)
    for run, label in zip(runs, _labels(runs)):
        history = run.history
        if history.empty or "epoch" not in history:
            continue
        style = _line_style(run, colors, runs)
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
    dataset = report_dataset(runs)
    figure.suptitle(
        "Training curves (validation = patient-level split of MURA train)"
        if dataset["name"] == "mura"
        else f"Training curves ({dataset_short_name(dataset)}; validation = the runs' validation split)"
    )
    return _save(figure, path)


@_styled
def plot_reliability(runs: Sequence[Run], path: str | Path, n_bins: int = 10, colors: dict | None = None) -> Path:
    """Study-level calibration: observed positive (abnormal) fraction per probability bin vs the diagonal."""
    colors = colors or model_colors(run.model for run in runs)
    figure = _figure(6.2, 5.4)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="perfectly calibrated")
    for run, label in zip(runs, _labels(runs)):
        labels, probabilities = _scores(run, "study")
        observed, predicted = calibration_curve(labels, probabilities, n_bins=n_bins, strategy="uniform")
        brier = brier_score_loss(labels, probabilities)
        axes.plot(
            predicted,
            observed,
            marker="o",
            markersize=4,
            label=f"{label} (Brier {brier:.3f})",
            **_line_style(run, colors, runs),
        )
    axes.set(
        xlim=(0, 1),
        ylim=(-0.02, 1.02),
        aspect="equal",
        xlabel="Mean predicted probability (study)",
        ylabel=f"Observed fraction {report_dataset(runs)['positive_label']}",
        title=f"Reliability, study level ({n_bins} equal-width bins)",
    )
    figure.legend(loc="outside lower center", ncol=2)
    return _save(figure, path)


@_styled
def plot_ablation(ablation: pd.DataFrame, path: str | Path, colors: dict | None = None) -> Path:
    """Multi-task minus single-task per model (study AUROC and kappa): the paired difference with
    its patient-bootstrap 95% CI; a bar crossing 0 means no evidence either way."""
    settings = ablation["settings"].fillna("") if "settings" in ablation else pd.Series("", index=ablation.index)
    experiments = sorted(
        set(zip(ablation["model"], settings)),
        key=lambda e: (model_rank(e[0]), e[0], e[1]),
    )  # one point per (model, settings): runs of other settings are other experiments
    colors = colors or model_colors(model for model, _ in experiments)
    figure = _figure(max(8, 1.6 * len(experiments) + 4), 4.2)
    panels = figure.subplots(1, 2)
    for axes, metric, title in zip(panels, ("study_auroc", "study_kappa"), ("Study AUROC", "Study Cohen's κ")):
        for x, (model, setting) in enumerate(experiments):
            match = ablation[(ablation["model"] == model) & (settings == setting) & (ablation["metric"] == metric)]
            if match.empty:
                continue
            row = match.iloc[0]
            error = [[row["delta"] - row["ci_low"]], [row["ci_high"] - row["delta"]]]
            axes.errorbar(
                x, row["delta"], yerr=np.nan_to_num(error), fmt="o", color=colors[model], capsize=4, markersize=7
            )
            axes.annotate(
                f"{row['delta']:+.3f}\n({int(row['pairs'])} seed{'s' if row['pairs'] > 1 else ''})",
                (x, row["delta"]),
                textcoords="offset points",
                xytext=(8, 0),
                fontsize=7,
                va="center",
            )
        axes.axhline(0, color="0.3", linewidth=0.8, linestyle="--")
        names = [report_model_label(m) + (f"\n{setting}" if setting else "") for m, setting in experiments]
        axes.set_xticks(range(len(experiments)), names)
        axes.set_xlim(-0.6, len(experiments) - 0.4)
        axes.grid(axis="x", visible=False)
        axes.set(ylabel=f"{title}: multi-task − single-task", title=title)
        if ablation.empty:
            axes.text(0.5, 0.5, "no paired runs", ha="center", va="center", transform=axes.transAxes, color="0.4")
    figure.suptitle("Ablation: multi-task − single-task, paired by seed")
    figure.supxlabel(
        "threshold 0.5; bars: 95% CI from resampling whole patients; a bar crossing 0: no evidence either way",
        fontsize=8,
        color="0.3",
    )
    return _save(figure, path)
