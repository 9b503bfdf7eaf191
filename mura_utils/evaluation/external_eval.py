"""Does a model hold up on radiographs from elsewhere? Evaluation of a checkpoint (trained on MURA,
FracAtlas or a manifest) on the external "fracture multi-region X-ray" set, de-duplicated within itself
and against the model's own training images, with bootstrap CIs.

Two thresholds, neither tuned on the external set: 0.5 and the study-level threshold chosen on the
training dataset's patient-level validation split (stored in the checkpoint). Labels may differ in
meaning: MURA's 1 is "abnormal" (a broader finding), FracAtlas's and this set's 1 is "fractured".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mura_utils.evaluation.bootstrap import ClusterBootstrap
from mura_utils.evaluation.metrics import weighted_metrics
from mura_utils.inference.predict import predict_paths
from mura_utils.utils.formatting import format_interval

HEADLINE = ("auroc", "balanced_accuracy", "sensitivity", "specificity", "kappa")


def predict_external(index: pd.DataFrame, checkpoint: str, device: str = "auto", batch_size: int = 32) -> pd.DataFrame:
    """One row per readable external image: its label and the model's probability and predicted
    body part (the set has no body-part label, so none is invented)."""
    readable = index[index["readable"]].reset_index(drop=True)
    predictions = predict_paths(readable["path"].tolist(), checkpoint, device=device, batch_size=batch_size)
    table = readable[["path", "split", "label", "near_group"]].merge(
        predictions[["path", "probability", "predicted_body_part", "body_part_probability", "threshold"]],
        on="path",
        how="left",
        validate="one_to_one",
    )
    return table


def _with_balanced_accuracy(metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Balanced accuracy = mean of sensitivity and specificity (NaN when either is undefined)."""
    return {**metrics, "balanced_accuracy": (metrics["sensitivity"] + metrics["specificity"]) / 2}


def external_metrics(
    predictions: pd.DataFrame, n_resamples: int = 1000, seed: int = 0, trained_on: str = "MURA"
) -> pd.DataFrame:
    """AUROC, balanced accuracy, sensitivity, specificity and kappa with 95% percentile bootstrap
    CIs at 0.5 and at the training dataset's validation threshold; one row per threshold. The bootstrap resamples
    whole duplicate groups (column ``near_group``: near-identical images are one unit, not several
    independent ones), the same resamples for both thresholds and every metric, with the metric
    definitions of ``mura_utils.evaluation.metrics``."""
    validation_threshold = float(predictions["threshold"].iloc[0])
    labels = predictions["label"].to_numpy()
    probabilities = predictions["probability"].to_numpy()
    groups = predictions["near_group"] if "near_group" in predictions else predictions["path"]
    bootstrap = ClusterBootstrap(groups, n_resamples, seed, unit="near_group")
    rows = []
    for name, threshold in (
        ("0.5", 0.5),
        (f"{trained_on} validation ({validation_threshold:.3f})", validation_threshold),
    ):
        point = _with_balanced_accuracy(weighted_metrics(labels, probabilities, threshold))
        draws = _with_balanced_accuracy(bootstrap.resampled_metrics(labels, probabilities, groups, threshold))
        row = {
            "threshold": name,
            "images": len(predictions),
            "groups": bootstrap.n_clusters,
            "fractured": int(labels.sum()),
            "bootstrap_unit": bootstrap.unit,
            "bootstrap_resamples": bootstrap.n_resamples,
        }
        for key in HEADLINE:
            low, high = bootstrap.interval(draws[key])
            value = float(point[key][0])
            row.update({key: None if np.isnan(value) else value, f"{key}_ci_low": low, f"{key}_ci_high": high})
        rows.append(row)
    return pd.DataFrame(rows)


def predicted_body_parts(predictions: pd.DataFrame) -> pd.DataFrame:
    """What body part (of its training dataset's vocabulary) the model thinks each external image shows, by label."""
    if predictions["predicted_body_part"].isna().all():
        return pd.DataFrame()
    return predictions.assign(label=np.where(predictions["label"] == 1, "fractured", "not fractured")).pivot_table(
        index="predicted_body_part", columns="label", values="path", aggfunc="count", fill_value=0
    )


def external_markdown(
    table: pd.DataFrame,
    duplicate_summary: dict,
    checkpoint: str,
    synthetic: bool,
    trained_on: str = "MURA-v1.1",
    model_positive_label: str = "abnormal",
    overlap_line: str = "",
) -> str:
    """The external-generalization section of the report."""
    lines = []
    if synthetic:
        lines += ["> **SYNTHETIC EXTERNAL SAMPLE: these numbers say nothing about real radiographs.**", ""]
    meaning = (
        "MURA's positive label is *abnormal* (fractures, hardware, arthritis, lesions); this set's positive "
        "label is *fractured*."
        if model_positive_label == "abnormal"
        else f"The model ({trained_on}) calls label 1 *{model_positive_label}*; this set's positive label is *fractured*."
    )
    lines += [
        f"# External generalization: {checkpoint} (trained on {trained_on})",
        "",
        meaning + " The model is applied unchanged; no threshold is tuned on this set.",
        "",
        *([overlap_line, ""] if overlap_line else []),
        f"De-duplicated evaluation set: {table['images'].iloc[0]} images "
        f"({table['fractured'].iloc[0]} fractured, {table['groups'].iloc[0]} duplicate groups); duplicates found: "
        + ", ".join(f"{k} {v}" for k, v in duplicate_summary.items() if not isinstance(v, dict)),
        "",
        "| threshold | " + " | ".join(HEADLINE) + " |",
        "|---|" + "---|" * len(HEADLINE),
    ]
    resamples = int(table["bootstrap_resamples"].iloc[0])
    for _, row in table.iterrows():
        cells = [
            f"{row[k]:.3f} {format_interval(row[k + '_ci_low'], row[k + '_ci_high'])}"
            if row[k] is not None and not pd.isna(row[k])
            else "n/a"
            for k in HEADLINE
        ]
        lines.append(f"| {row['threshold']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Brackets: 95% percentile bootstrap CI, {resamples} resamples of whole duplicate groups "
        "(near-identical images count as one unit).",
    ]
    return "\n".join(lines) + "\n"


def plot_external_roc(predictions_by_model: dict[str, pd.DataFrame], path) -> None:
    """ROC of each model on the external set, AUROC in the legend."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    from mura_utils.utils.io import atomic_path

    figure, axis = plt.subplots(figsize=(5.5, 5), dpi=150)
    for name, table in predictions_by_model.items():
        false_positive, true_positive, _ = roc_curve(table["label"], table["probability"])
        axis.plot(
            false_positive,
            true_positive,
            lw=1.8,
            label=f"{name} (AUROC {roc_auc_score(table['label'], table['probability']):.3f})",
        )
    axis.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    axis.set(
        xlabel="1 - specificity",
        ylabel="sensitivity",
        title="External set (fractured vs not), image level",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)


def evaluate_external(
    external_root: str,
    checkpoints: dict[str, str],
    out_dir: str,
    n_resamples: int = 1000,
    device: str = "auto",
    synthetic: bool = False,
    seed: int = 0,
) -> dict:
    """Audit the external set, de-duplicate it, evaluate each checkpoint; write tables, ROC figure
    and ``external.md`` under ``out_dir``. Returns the written paths and the metrics table."""
    from pathlib import Path

    from mura_utils.data.external import deduplicate, find_duplicates, load_external_index
    from mura_utils.evaluation.cross_dataset_eval import training_images, training_overlap
    from mura_utils.models.checkpoint import checkpoint_dataset, read_checkpoint
    from mura_utils.utils.formatting import markdown_table
    from mura_utils.utils.io import atomic_write_text

    out = Path(out_dir)
    index = load_external_index(external_root, progress=False)
    duplicates = find_duplicates(index)
    evaluation_set = deduplicate(index)
    tables, predictions_by_model, sections, overlaps = [], {}, [], {}
    for name, checkpoint in checkpoints.items():
        record = read_checkpoint(checkpoint)
        model_info = checkpoint_dataset(record)
        training_paths, training_note = training_images(record)
        scored, overlap_line = evaluation_set, f"Copies of the model's training images NOT checked: {training_note}."
        if training_paths:
            key = training_note  # one audit per training dataset, shared by its models
            if key not in overlaps:
                readable = evaluation_set[evaluation_set["readable"]]
                overlaps[key] = training_overlap(readable["path"].tolist(), training_paths)
            overlap = overlaps[key]
            copies = overlap[overlap["overlap_kind"] != ""]
            scored = evaluation_set[~evaluation_set["path"].isin(copies["path"])].reset_index(drop=True)
            counts = copies["overlap_kind"].value_counts().to_dict()
            overlap_line = (
                f"Left out as copies of the model's own training images ({training_note}): {len(copies)}"
                + (" (" + ", ".join(f"{kind} {count}" for kind, count in counts.items()) + ")" if counts else "")
                + "."
            )
            atomic_write_text(out / f"external_training_overlap_{name}.csv", copies.to_csv(index=False))
        predictions = predict_external(scored, checkpoint, device=device)
        predictions_by_model[name] = predictions
        trained_on = "MURA" if model_info.name == "mura" else model_info.title
        table = external_metrics(predictions, n_resamples=n_resamples, seed=seed, trained_on=trained_on).assign(
            model=name
        )
        tables.append(table)
        sections.append(
            external_markdown(
                table,
                {k: v for k, v in duplicates.summary().items() if k != "per_split"},
                name,
                synthetic,
                model_info.title,
                model_info.positive_label,
                overlap_line,
            )
        )
        parts = predicted_body_parts(predictions)
        if not parts.empty:
            table_text = markdown_table(
                ["predicted body part", *parts.columns],
                [[part, *map(str, counts)] for part, counts in zip(parts.index, parts.values)],
            )
            sections.append(
                f"Predicted {model_info.title} body part (the external set has no body-part label):\n\n" + table_text
            )
        atomic_write_text(out / f"external_predictions_{name}.csv", predictions.to_csv(index=False))
    metrics = pd.concat(tables, ignore_index=True)
    written = {
        "external_csv": out / "external.csv",
        "external_md": out / "external.md",
        "external_roc": out / "figures" / "roc_external.png",
    }
    atomic_write_text(written["external_csv"], metrics.to_csv(index=False))
    atomic_write_text(written["external_md"], "\n".join(sections) + "\n" + duplicates.to_markdown())
    (out / "figures").mkdir(parents=True, exist_ok=True)
    plot_external_roc(predictions_by_model, written["external_roc"])
    return {**written, "metrics": metrics, "duplicates": duplicates}
