"""The comparison table (one row per run, seed summaries and ensembles, patient-bootstrap CIs)
and its markdown rendering."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mura_utils.evaluation.bootstrap import DEFAULT_RESAMPLES, ClusterBootstrap, dropped_note, level_resamples
from mura_utils.evaluation.metrics import point_metrics, study_table
from mura_utils.evaluation.predictions import compute_metrics
from mura_utils.report.ensembles import ensemble_run, seed_ensemble_run, tta_run
from mura_utils.report.runs import (
    VARIANT_LABELS,
    Run,
    dataset_short_name,
    report_dataset,
    report_model_label,
    run_dataset,
    seed_groups,
)
from mura_utils.utils.formatting import (
    float_or_nan,
    format_duration,
    format_number,
    format_parameters,
    markdown_table,
)
from mura_utils.utils.io import atomic_write_text

# The metrics of the comparison table, in column order: (column "<level>_<metric>" of a metric in
# metrics.METRIC_KEYS, its heading in comparison.md, whether it gets a bootstrap CI and a seed spread).
# Adding a metric to the reports is one line here (after defining it in evaluation/metrics.py).
REPORT_METRICS = (
    ("image_accuracy", "Image accuracy", True),
    ("image_auroc", "Image AUROC", True),
    ("study_auroc", "Study AUROC", True),
    ("study_kappa", "Study κ", True),
    ("study_sensitivity", "Sensitivity", False),
    ("study_specificity", "Specificity", False),
)
METRIC_LABELS = {name: label for name, label, _ in REPORT_METRICS}
HEADLINE = tuple(name for name, _, with_interval in REPORT_METRICS if with_interval)  # with CIs and seed spread
POINT_ONLY = tuple(name for name, _, with_interval in REPORT_METRICS if not with_interval)
LEVEL_METRIC = {name: tuple(name.split("_", 1)) for name, _, _ in REPORT_METRICS}  # (level, metric key)
# settings: what sets the row's experiment apart from the same model's others ("img_size 128"; "" when
# the model was trained with one set of settings); an experiment is (model, variant, settings).
# kind: "run" (one trained run), "seed_mean" (mean and spread over an experiment's seeds),
# "seed_ensemble" (mean image probability over those seeds), "tta" (a run with test-time
# augmentation), "tta_seed_mean" (mean and spread of those over seeds), "ensemble" (mean over the
# multi-task runs of every model)
TABLE_COLUMNS = [
    "run",
    "model",
    "variant",
    "settings",
    "kind",
    "seeds",
    "seed",
    "threshold",
    *[f"{name}{suffix}" for name in HEADLINE for suffix in ("", "_ci_low", "_ci_high")],
    *[f"{name}_{spread}" for name in HEADLINE for spread in ("sd", "min", "max")],
    *POINT_ONLY,
    "body_part_accuracy",
    "val_threshold",
    "study_kappa_at_val_threshold",
    "n_images",
    "n_studies",
    "n_patients",
    "bootstrap_unit",
    "bootstrap_resamples",
    "dropped_resamples",
    "parameters",
    "train_seconds",
    "images_per_second",
]


def report_bootstrap(runs: Sequence[Run], n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> ClusterBootstrap:
    """One set of patient resamples for a whole report: every row, level and paired difference
    uses it, so differences between rows are paired. Patients of every run's test set."""
    report_dataset(runs)  # one dataset: patients of two datasets are no one population
    missing = [run.name for run in runs if "patient" not in run.predictions]
    if missing:
        raise ValueError(f"runs {missing}: test_predictions.csv has no 'patient' column (needed for the bootstrap)")
    patients = pd.concat([run.predictions["patient"] for run in runs], ignore_index=True)
    return ClusterBootstrap(patients, n_resamples, seed, unit="patient")


def run_row(
    run: Run, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, bootstrap: ClusterBootstrap | None = None
) -> dict:
    """One comparison-table row: metrics at threshold 0.5 (study and image level), CIs from
    resampling whole patients (``bootstrap``, else one built for this run alone)."""
    bootstrap = bootstrap or report_bootstrap([run], n_resamples, seed)
    metrics = compute_metrics(run.predictions, 0.5, 0.5)
    row = {
        "run": run.name,
        "model": run.model,
        "variant": run.variant,
        "settings": run.setting,
        "kind": run.kind,
        "seeds": len(run.info.get("members", [])) if run.kind in ("seed_ensemble", "ensemble") else 1,
        "seed": run.seed if run.kind in ("run", "tta") else None,
        "threshold": 0.5,
        **{name: float_or_nan(metrics[level][key]) for name, (level, key) in LEVEL_METRIC.items()},
        "body_part_accuracy": float_or_nan(metrics["body_part_accuracy"]) if run.kind == "run" else float("nan"),
        "n_images": metrics["n_images"],
        "n_studies": metrics["n_studies"],
        "n_patients": metrics["n_patients"],
        "bootstrap_unit": bootstrap.unit,
        "bootstrap_resamples": bootstrap.n_resamples,
    }
    resampled = level_resamples(run.predictions, bootstrap, 0.5, 0.5)
    for name in HEADLINE:
        level, key = LEVEL_METRIC[name]
        row[f"{name}_ci_low"], row[f"{name}_ci_high"] = bootstrap.interval(resampled[level][key])
    # a resample of one class only is dropped from every metric: one count per row
    row["dropped_resamples"] = max(
        bootstrap.dropped(resampled[level][key]) for level, key in map(LEVEL_METRIC.get, HEADLINE)
    )
    val_threshold = run.info.get("threshold") if run.kind == "run" else None
    row["val_threshold"] = float_or_nan(val_threshold)
    if val_threshold is not None:
        studies = study_table(run.predictions)
        row["study_kappa_at_val_threshold"] = point_metrics(
            studies["label"], studies["probability"], float(val_threshold)
        )["kappa"]
    for key in ("parameters", "train_seconds", "images_per_second"):
        row[key] = float_or_nan(run.info.get(key))
    return row


def seed_summary_row(rows: Sequence[dict]) -> dict:
    """Mean, sd (n - 1) and min-max over one experiment's per-seed rows: training randomness."""
    first = rows[0]
    summary = {
        "run": f"{first['run']} .. (mean of {len(rows)} seeds)",
        "model": first["model"],
        "variant": first["variant"],
        "settings": first.get("settings", ""),
        "kind": "seed_mean",
        "seeds": len(rows),
        "threshold": 0.5,
        "n_images": first["n_images"],
        "n_studies": first["n_studies"],
        "n_patients": first["n_patients"],
    }
    numeric = [*LEVEL_METRIC, "body_part_accuracy", "study_kappa_at_val_threshold"]
    numeric += ["val_threshold", "parameters", "train_seconds", "images_per_second"]
    for name in numeric:
        values = np.array([float_or_nan(row.get(name)) for row in rows], dtype=float)
        summary[name] = float(np.mean(values))
        if name in HEADLINE:
            summary[f"{name}_sd"] = float(np.std(values, ddof=1))
            summary[f"{name}_min"], summary[f"{name}_max"] = float(values.min()), float(values.max())
    return summary


def comparison_table(
    runs: Sequence[Run], n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0, bootstrap: ClusterBootstrap | None = None
) -> pd.DataFrame:
    """Per experiment (model, variant and every other setting but the seed, see ``seed_groups``):
    one row per seed; with several seeds also their mean and spread and the seed ensemble; a "+ TTA" row per run with test-time-augmentation predictions; then the
    multi-task ensemble (two or more multi-task runs). Every CI comes from the same patient
    resamples. Threshold-dependent numbers use 0.5 (column ``threshold``) so models compare on equal
    terms; ``study_kappa_at_val_threshold`` uses each run's validation-chosen threshold."""
    everyone = list(runs)
    bootstrap = bootstrap or report_bootstrap(everyone, n_resamples, seed)
    rows = []
    for members in seed_groups(everyone).values():
        member_rows = [run_row(run, bootstrap=bootstrap) for run in members]
        rows += member_rows
        if len(members) > 1:
            rows += [seed_summary_row(member_rows), run_row(seed_ensemble_run(members), bootstrap=bootstrap)]
        tta_rows = [run_row(tta_run(run), bootstrap=bootstrap) for run in members if run.tta_predictions is not None]
        rows += tta_rows
        if len(tta_rows) > 1:
            rows.append({**seed_summary_row(tta_rows), "kind": "tta_seed_mean"})
    ensembles = [run for run in everyone if run.model == "ensemble"]
    if not ensembles:
        ensemble = ensemble_run(everyone)
        ensembles = [ensemble] if ensemble is not None else []
    rows += [run_row(run, bootstrap=bootstrap) for run in ensembles]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


# ----------------------------------------------------------------------------- markdown


def _with_ci(row: pd.Series, name: str) -> str:
    value, low, high = row[name], row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
    if pd.isna(value):
        return "—"
    if row.get("kind") in ("seed_mean", "tta_seed_mean"):
        return f"{value:.3f} ± {row[f'{name}_sd']:.3f} ({row[f'{name}_min']:.2f}–{row[f'{name}_max']:.2f})"
    if low is None or pd.isna(low) or pd.isna(high):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.2f}, {high:.2f}]"


def _settings(row: pd.Series) -> str:
    """The row's settings text ('' when none, also when read back from a CSV as NaN)."""
    settings = row.get("settings", "")
    return "" if settings is None or pd.isna(settings) else str(settings)


def _model_label(row: pd.Series) -> tuple[str, str]:
    model, variant, kind = row["model"], row["variant"], row.get("kind", "run")
    if model == "ensemble":
        return report_model_label("ensemble"), "—"
    variant = VARIANT_LABELS.get(variant, variant) + (f" · {_settings(row)}" if _settings(row) else "")
    seeds = int(row["seeds"]) if not pd.isna(row.get("seeds")) else 1
    seed = row.get("seed")
    seed = "" if seed is None or pd.isna(seed) else f" (seed {int(seed) if float(seed).is_integer() else seed})"
    suffix = {
        "seed_mean": f" · mean ± sd (min–max), {seeds} seeds",
        "seed_ensemble": f" · {seeds}-seed ensemble",
        "tta": f" + TTA{seed}",
        "tta_seed_mean": f" + TTA · mean ± sd (min–max), {seeds} seeds",
    }.get(kind, "")
    return report_model_label(model), variant + suffix


def shown_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows comparison.md shows: an experiment with several seeds appears as its mean and
    spread and its seed ensemble (the per-seed rows stay in comparison.csv); one seed as the run."""
    if "kind" not in table:
        return table
    experiment = table.assign(settings=table.apply(_settings, axis=1)) if "settings" in table else table
    keys = ["model", "variant", "settings"] if "settings" in table else ["model", "variant"]
    hidden = []
    for kind in ("run", "tta"):
        seeds = experiment[experiment["kind"] == kind].groupby(keys)["run"].transform("size")
        hidden += list(seeds[seeds > 1].index)
    return table[~table.index.isin(hidden)]


def comparison_markdown(table: pd.DataFrame, dataset: dict | None = None) -> str:
    """The comparison table as readable markdown: "0.871 [0.85, 0.89]" cells (point estimate and
    patient-bootstrap CI), or "0.871 ± 0.012 (0.86–0.88)" for the mean and spread over seeds.
    ``dataset`` (``report_dataset``; None: MURA) names the test set and the resampled unit."""
    dataset = dataset or run_dataset({})
    header = [
        "Model",
        "Variant",
        *METRIC_LABELS.values(),
        "Body-part acc.",
        "Parameters",
        "Train time",
        "Train img/s",
    ]
    rows = [
        [
            *_model_label(row),
            *[_with_ci(row, name) if name in HEADLINE else format_number(row[name]) for name in METRIC_LABELS],
            format_number(row["body_part_accuracy"]),
            format_parameters(row["parameters"]),
            format_duration(row["train_seconds"]),
            format_number(row["images_per_second"], 0),
        ]
        for _, row in shown_rows(table).iterrows()
    ]
    threshold = table["threshold"].iloc[0] if len(table) else 0.5
    with_ci = table[table["bootstrap_resamples"].notna()] if "bootstrap_resamples" in table else table.iloc[:0]
    resamples = int(with_ci["bootstrap_resamples"].iloc[0]) if len(with_ci) else 0
    patients = with_ci["n_patients"].iloc[0] if len(with_ci) and "n_patients" in with_ci else None
    who = f"{int(patients)} " if patients is not None and not pd.isna(patients) else ""
    name = dataset_short_name(dataset)
    unit = (
        f"whole patients: all {who}patients' studies and images drawn together"
        if dataset.get("has_patients", True)
        else f"{who}patient ids: {name} records no patients, so each image is its own patient and study"
    )
    note = (
        f"Test set: {name} {dataset['test_split']}. Accuracy, κ, sensitivity and specificity at threshold "
        f"{threshold:g}; sensitivity, specificity and κ are study level. Brackets: 95% bootstrap CI "
        f"({resamples} resamples of {unit}; "
        "the same resamples for every row). Mean ± sd (min–max) rows: spread over training seeds, "
        "point estimates; a seed ensemble averages those seeds' image probabilities."
    )
    if "dropped_resamples" in with_ci:
        dropped = dropped_note(dict(zip(with_ci["run"], with_ci["dropped_resamples"])), resamples)
        note += f" Dropped resamples: {dropped}." if dropped else ""
    note += "\n\n"
    return note + markdown_table(header, rows, [False, False] + [True] * (len(header) - 2))


def write_comparison_table(table: pd.DataFrame, out_dir: str | Path, dataset: dict | None = None) -> dict[str, Path]:
    """comparison.csv (every column, for re-analysis) and comparison.md (for reading; ``dataset``
    as in ``comparison_markdown``)."""
    out_dir = Path(out_dir)
    paths = {"comparison_csv": out_dir / "comparison.csv", "comparison_md": out_dir / "comparison.md"}
    atomic_write_text(paths["comparison_csv"], table.to_csv(index=False))
    atomic_write_text(paths["comparison_md"], comparison_markdown(table, dataset))
    return paths
