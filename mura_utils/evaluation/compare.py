"""``mura compare A B``: is model A better than model B on the same test images? Paired
differences of study kappa, study AUROC and image AUROC on identical patient resamples.

A and B are folders written by ``mura evaluate`` (predictions.csv + metrics.json) or run folders
(test_predictions.csv + test_metrics.json / run.json). Each side keeps its own threshold, as
recorded in its metrics (default 0.5), unless one threshold is given for both; when the two differ,
the output says that the κ delta includes the threshold change (AUROC does not depend on it).
Images are matched by study and file name, so two evaluations of the same tree under different
mount points still pair.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from mura_utils.evaluation.bootstrap import (
    DEFAULT_RESAMPLES,
    PAIRED_METRICS,
    ClusterBootstrap,
    dropped_note,
    interval_rank,
    paired_differences,
    verdict,
)
from mura_utils.evaluation.metrics import check_predictions
from mura_utils.utils.formatting import format_interval
from mura_utils.utils.io import atomic_write_text

TEXT_COLUMNS = ("path", "split", "body_part", "patient", "study", "predicted_body_part")
COMPARE_COLUMNS = ("path", "study", "patient", "label", "probability")


@dataclass
class Evaluation:
    """One side of a comparison: its folder, predictions (one row per image) and thresholds."""

    folder: Path
    predictions: pd.DataFrame
    threshold: float = 0.5
    image_threshold: float = 0.5


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def read_predictions(path: str | Path, required: Sequence[str] = COMPARE_COLUMNS) -> pd.DataFrame:
    """A predictions CSV (evaluation, run folder or TTA) with ids kept as text (patient 00012 stays
    00012), integer labels, and a clear error naming the file when columns or rows are missing or a
    probability is not a number in [0, 1] (a diverged model: metrics.InvalidProbabilities)."""
    path = Path(path)
    header = pd.read_csv(path, nrows=0).columns
    table = pd.read_csv(path, dtype={column: str for column in TEXT_COLUMNS if column in header})
    missing = [column for column in required if column not in table]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    if table.empty:
        raise ValueError(f"{path}: no predictions")
    check_predictions(table, source=str(path))
    return table.assign(label=table["label"].astype(int))


def load_evaluation(folder: str | Path) -> Evaluation:
    """Read an evaluation folder or a run folder; raises naming the folder when neither layout fits."""
    folder = Path(folder)
    layouts = {"predictions.csv": ("metrics.json",), "test_predictions.csv": ("test_metrics.json", "run.json")}
    found = [name for name in layouts if (folder / name).is_file()]
    if not found:
        raise FileNotFoundError(
            f"{folder}: neither predictions.csv (from mura evaluate) nor test_predictions.csv (a run folder)"
        )
    predictions_path, metrics_names = folder / found[0], layouts[found[0]]
    predictions = read_predictions(predictions_path)
    metrics = next((_read_json(folder / name) for name in metrics_names if (folder / name).is_file()), {})
    return Evaluation(
        folder,
        predictions,
        float(metrics.get("threshold", 0.5)),
        float(metrics.get("image_threshold", 0.5)),
    )


def _image_keys(predictions: pd.DataFrame) -> pd.Series:
    """study + image file name: the same image whatever folder the tree was mounted under."""
    names = predictions["path"].str.replace("\\", "/", regex=False).str.rsplit("/", n=1).str[-1]
    return predictions["study"] + "/" + names


def align(a: Evaluation, b: Evaluation) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both prediction tables in the same image order; refuses two evaluations of different images."""
    tables = []
    for side in (a, b):
        keys = _image_keys(side.predictions)
        if keys.duplicated().any():
            raise ValueError(f"{side.folder}: predictions list {int(keys.duplicated().sum())} image(s) twice")
        tables.append(side.predictions.set_index(keys))
    only_a = tables[0].index.difference(tables[1].index)
    only_b = tables[1].index.difference(tables[0].index)
    if len(only_a) or len(only_b):
        raise ValueError(
            f"{a.folder} and {b.folder} do not cover the same images: {len(only_a)} image(s) only in "
            f"{a.folder}, {len(only_b)} only in {b.folder} (of {len(tables[0])} and {len(tables[1])}); "
            "a paired comparison needs one test set"
        )
    table_b = tables[1].loc[tables[0].index]
    for column in ("label", "patient"):
        differ = int((tables[0][column].to_numpy() != table_b[column].to_numpy()).sum())
        if differ:
            raise ValueError(f"{a.folder} and {b.folder} give {differ} image(s) a different {column}")
    return tables[0].reset_index(drop=True), table_b.reset_index(drop=True)


def threshold_warning(result: dict) -> str | None:
    """The line that says a kappa difference is partly a threshold difference; None when A and B
    share the study threshold (the image threshold moves none of the compared metrics)."""
    a, b = result["a"]["threshold"], result["b"]["threshold"]
    if a == b:
        return None
    return (
        f"thresholds differ (A {a:g}, B {b:g}): kappa/sensitivity/specificity deltas include the threshold "
        "change; AUROC does not. Compare at one threshold with --threshold X."
    )


def compare_evaluations(
    a: Evaluation,
    b: Evaluation,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    threshold: float | None = None,
) -> dict:
    """compare.json: A - B for study kappa, study AUROC and image AUROC, paired on patient resamples;
    ``threshold`` (study and image) replaces both sides' recorded thresholds."""
    if threshold is not None:
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be a probability in [0, 1], not {threshold}")
        a = replace(a, threshold=float(threshold), image_threshold=float(threshold))
        b = replace(b, threshold=float(threshold), image_threshold=float(threshold))
    table_a, table_b = align(a, b)
    bootstrap = ClusterBootstrap(table_a["patient"], n_resamples, seed, unit="patient")
    metrics = paired_differences(
        [(table_a, table_b)],
        bootstrap,
        thresholds=[(a.threshold, b.threshold)],
        image_thresholds=[(a.image_threshold, b.image_threshold)],
    )
    result = {
        "unit": "patient",
        "level": bootstrap.level,
        "resamples": bootstrap.n_resamples,
        "seed": seed,
        "n_patients": bootstrap.n_clusters,
        "n_studies": int(table_a["study"].nunique()),
        "n_images": int(len(table_a)),
        "a": {"folder": str(a.folder), "threshold": a.threshold, "image_threshold": a.image_threshold},
        "b": {"folder": str(b.folder), "threshold": b.threshold, "image_threshold": b.image_threshold},
        "threshold_given": threshold,
        "p_value": "two-sided bootstrap: 2 x min(share of resampled deltas <= 0, share >= 0), "
        "each (k + 1) / (n + 1), capped at 1; p <= 1 - level exactly when the interval excludes 0. "
        "p_is_bound: every delta on one side of 0, p is the floor 2 / (n + 1) and means p <= that",
        "metrics": metrics,
    }
    result["threshold_warning"] = threshold_warning(result)
    return result


def format_p(value: dict, name: str = "") -> str:
    """A paired difference's p as text, "≤ 0.002" where it is only a bound (its floor 2 / (n + 1));
    with ``name``: "p = 0.034" / "p ≤ 0.002"."""
    p = value["p"]
    text = "n/a" if p != p else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"
    if value.get("p_is_bound"):
        return f"{name} ≤ {text}".lstrip()
    return f"{name} = {text}" if name else text


def _dropped_lines(result: dict, names: dict[str, str]) -> list[str]:
    """Lines saying how many resamples were left out (one class only) and where no interval could be given."""
    lines = []
    dropped = {key: value.get("dropped_resamples", 0) for key, value in result["metrics"].items()}
    note = dropped_note({names.get(key, key): count for key, count in dropped.items()}, result["resamples"])
    if note:
        lines.append(f"- **Dropped resamples:** {note}.")
    if any(interval_rank(result["resamples"] - count, result["level"]) < 1 for count in dropped.values()):
        lines.append(
            f"- **No interval:** a {result['level']:.0%} interval needs at least "
            f"{int(round(2 / (1 - result['level']))) - 1} usable resamples; rerun with more (--bootstrap)."
        )
    return lines


def compare_markdown(result: dict) -> str:
    """compare.md: one row per metric, and each difference in words."""
    names = {"study_kappa": "Study Cohen's κ", "study_auroc": "Study AUROC", "image_auroc": "Image AUROC"}
    lines = [
        "# Paired comparison: A - B",
        "",
        f"- **A:** `{result['a']['folder']}` (study threshold {result['a']['threshold']:g})",
        f"- **B:** `{result['b']['folder']}` (study threshold {result['b']['threshold']:g})",
        f"- {result['n_images']} images, {result['n_studies']} studies, {result['n_patients']} patients; "
        f"{result['resamples']} bootstrap resamples of whole **patients**, the same resamples for A and B.",
        *([f"- **Warning:** {threshold_warning(result)}"] if threshold_warning(result) else []),
        *_dropped_lines(result, names),
        "",
        "| Metric | A | B | A − B | 95% CI | p |",
        "|:---|---:|---:|---:|---:|---:|",
    ]
    for key, value in result["metrics"].items():
        low, high = value["ci"]
        interval = "n/a" if low != low or high != high else format_interval(low, high, signed=True)
        lines.append(
            f"| {names.get(key, key)} | {value['a']:.3f} | {value['b']:.3f} | {value['delta']:+.3f} "
            f"| {interval} | {format_p(value)} |"
        )
    lines += ["", *[f"- {names.get(k, k)}: {verdict(v['delta'], v['ci'])}" for k, v in result["metrics"].items()]]
    lines += [
        "",
        f"p: {result['p_value']}. A p-value is not a size of effect; read the interval.",
        "",
    ]
    return "\n".join(lines)


def write_paired_comparison(
    folder_a: str | Path,
    folder_b: str | Path,
    out_dir: str | Path,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    threshold: float | None = None,
) -> dict:
    """Compare two evaluation (or run) folders (at ``threshold`` for both when given); writes
    ``compare.json`` and ``compare.md`` into ``out_dir``."""
    result = compare_evaluations(load_evaluation(folder_a), load_evaluation(folder_b), n_resamples, seed, threshold)
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "compare.json", json.dumps(result, indent=2))
    atomic_write_text(out_dir / "compare.md", compare_markdown(result))
    return result


__all__ = [
    "Evaluation",
    "PAIRED_METRICS",
    "align",
    "compare_evaluations",
    "format_p",
    "load_evaluation",
    "read_predictions",
    "threshold_warning",
    "write_paired_comparison",
]
