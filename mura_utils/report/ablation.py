"""Paired differences in the report: multi-task minus single-task per model (does the body-part
head help?) and test-time augmentation minus plain predictions, each with a patient-bootstrap
interval on the report's shared resamples, and in words.

Runs are paired by training seed (run.json "seed"); with several seeds the per-seed differences
are averaged on every resample, so the interval is the one of the seed-averaged difference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..statistics import ClusterBootstrap, paired_differences, verdict
from .runs import MODEL_LABELS, VARIANT_LABELS, Run, _seed_order, seed_groups
from .tables import markdown_table

PAIRED = ("study_kappa", "study_auroc")
METRIC_LABELS = {"study_kappa": "Study κ", "study_auroc": "Study AUROC", "image_auroc": "Image AUROC"}
PAIRED_COLUMNS = [
    "model",
    "variant",
    "comparison",
    "metric",
    "pairs",
    "seeds",
    "a",
    "b",
    "delta",
    "ci_low",
    "ci_high",
    "p",
    "per_seed_min",
    "per_seed_max",
    "verdict",
]


def _check_same_images(a: Run, b: Run) -> None:
    if len(a.predictions) != len(b.predictions) or set(a.predictions["path"]) != set(b.predictions["path"]):
        raise ValueError(f"runs {a.name} and {b.name} were tested on different images; they cannot be paired")


def _rows(
    pairs: Sequence[tuple[Run, Run, pd.DataFrame, pd.DataFrame]],
    bootstrap: ClusterBootstrap,
    model: str,
    variant: str,
    comparison: str,
) -> list[dict]:
    """One row per metric for A - B over ``pairs`` (run A, run B, A's and B's predictions)."""
    result = paired_differences([(a, b) for _, _, a, b in pairs], bootstrap, metrics=PAIRED)
    seeds = ", ".join(str(a.seed) if a.seed == b.seed else f"{a.seed}/{b.seed}" for a, b, _, _ in pairs)
    rows = []
    for metric, value in result.items():
        low, high = value["ci"]
        spread = (
            f" (per seed: {min(value['per_pair']):+.3f} to {max(value['per_pair']):+.3f})" if len(pairs) > 1 else ""
        )
        rows.append(
            {
                "model": model,
                "variant": variant,
                "comparison": comparison,
                "metric": metric,
                "pairs": len(pairs),
                "seeds": seeds,
                "a": value["a"],
                "b": value["b"],
                "delta": value["delta"],
                "ci_low": low,
                "ci_high": high,
                "p": value["p"],
                "per_seed_min": min(value["per_pair"]),
                "per_seed_max": max(value["per_pair"]),
                "verdict": verdict(value["delta"], value["ci"], bootstrap.level, comparison) + spread,
            }
        )
    return rows


def ablation_table(runs: Sequence[Run], bootstrap: ClusterBootstrap) -> pd.DataFrame:
    """Per model with both variants: multi-task minus single-task study κ and AUROC (threshold 0.5),
    runs paired by seed; seeds trained for one variant only are left out of the pairing (one run
    per variant pairs whatever its seed)."""
    groups = seed_groups(runs)
    rows = []
    for (model, variant), multitask in groups.items():
        single = groups.get((model, "single_task"))
        if variant != "multitask" or not single:
            continue
        by_seed = {_seed_order(run.seed): run for run in single}
        pairs = [(a, by_seed[_seed_order(a.seed)]) for a in multitask if _seed_order(a.seed) in by_seed]
        if not pairs and len(multitask) == len(single) == 1:
            pairs = [(multitask[0], single[0])]  # one run per variant (seeds differ or unrecorded)
        for a, b in pairs:
            _check_same_images(a, b)
        if pairs:
            pairs_with_tables = [(a, b, a.predictions, b.predictions) for a, b in pairs]
            rows += _rows(pairs_with_tables, bootstrap, model, "", "multi-task − single-task")
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def tta_table(runs: Sequence[Run], bootstrap: ClusterBootstrap) -> pd.DataFrame:
    """Per (model, variant) whose runs have TTA predictions: TTA minus plain, paired on the same
    runs (seeds averaged). Empty when no run has test_predictions_tta.csv."""
    rows = []
    for (model, variant), members in seed_groups(runs).items():
        with_tta = [run for run in members if run.tta_predictions is not None]
        if with_tta:
            pairs = [(run, run, run.tta_predictions, run.predictions) for run in with_tta]
            rows += _rows(pairs, bootstrap, model, variant, "TTA − plain")
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def _model_label(row: pd.Series) -> str:
    """'Custom CNN · multi-task' where the row is about one variant (TTA), 'Custom CNN' where it
    compares the variants (ablation)."""
    model = MODEL_LABELS.get(row["model"], row["model"])
    return f"{model} · {VARIANT_LABELS.get(row['variant'], row['variant'])}" if row["variant"] else model


def paired_markdown(table: pd.DataFrame, level: float = 0.95) -> str:
    """A paired-difference table as markdown, then each difference in words."""
    if table.empty:
        return ""
    header = ["Model", "Metric", "Seeds paired", "A", "B", "A − B", f"{level:.0%} CI", "p"]
    rows = []
    for _, row in table.iterrows():
        rows.append(
            [
                _model_label(row),
                METRIC_LABELS.get(row["metric"], row["metric"]),
                f"{row['pairs']} ({row['seeds']})",
                f"{row['a']:.3f}",
                f"{row['b']:.3f}",
                f"{row['delta']:+.3f}",
                "—" if np.isnan(row["ci_low"]) else f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]",
                f"{row['p']:.3f}",
            ]
        )
    words = [
        f"- {_model_label(row)}, {METRIC_LABELS.get(row['metric'], row['metric'])}: {row['verdict']}."
        for _, row in table.iterrows()
    ]
    return markdown_table(header, rows, [False, False, False] + [True] * 5) + "\n" + "\n".join(words) + "\n"


def ablation_markdown(table: pd.DataFrame, resamples: int, level: float = 0.95) -> str:
    """The ablation section: what was compared, the paired differences, and how sure they are."""
    if table.empty:
        return "No model was trained in both variants with a shared seed, so there is no paired ablation.\n"
    caveats = []
    if (table["pairs"] == 1).any():
        caveats.append(
            " Where one seed per variant is paired, the interval covers only which test patients were "
            "drawn, not training randomness: another seed can move a model's study AUROC by more than "
            "this difference."
        )
    if (table["pairs"] > 1).any():
        caveats.append(
            " Where several seeds are paired, the interval is the one of the seed-averaged difference "
            "over test patients; the per-seed range shows how much training randomness moves it."
        )
    caveat = "".join(caveats)
    return (
        "A = multi-task (with the body-part head), B = single-task, same model and seed, threshold 0.5. "
        f"{resamples} patient resamples shared by both sides (paired); with several seeds the per-seed "
        f"differences are averaged on each resample. p: two-sided bootstrap p-value.{caveat}\n\n"
        + paired_markdown(table, level)
    )


__all__ = ["PAIRED_COLUMNS", "ablation_markdown", "ablation_table", "paired_markdown", "tta_table"]
