"""Paired differences in the report: multi-task minus single-task per model (does the body-part
head help?) and test-time augmentation minus plain predictions, each with a patient-bootstrap
interval on the report's shared resamples, and in words.

Runs are paired by training seed (run.json "seed") within one experiment: a multi-task run pairs
only with the single-task run of the same seed and the same other settings (image size, epochs,
learning rate, pretraining, data, ...). With several seeds the per-seed differences are averaged on
every resample, so the interval is the one of the seed-averaged difference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mura_utils.evaluation.bootstrap import ClusterBootstrap, dropped_note, paired_differences, verdict
from mura_utils.report.runs import (
    VARIANT_LABELS,
    Run,
    _folder_name,
    _seed_order,
    report_model_label,
    seed_groups,
)
from mura_utils.report.tables import METRIC_LABELS
from mura_utils.utils.formatting import format_interval, markdown_table

PAIRED = ("study_kappa", "study_auroc")
PAIRED_COLUMNS = [
    "model",
    "variant",
    "settings",
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
    "dropped_resamples",
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
    settings: str = "",
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
                "settings": settings,
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
                "dropped_resamples": value["dropped_resamples"],
                "verdict": verdict(value["delta"], value["ci"], bootstrap.level, comparison) + spread,
            }
        )
    return rows


def ablation_table(runs: Sequence[Run], bootstrap: ClusterBootstrap) -> pd.DataFrame:
    """Per experiment trained in both variants: multi-task minus single-task study κ and AUROC
    (threshold 0.5). A pair is two runs of one model with the same seed and the same other settings
    (``seed_groups``); runs of a model trained in both variants without such a partner are left out
    and listed in ``table.attrs["unpaired"]`` ({folder: why}), which ``ablation_markdown`` prints."""
    groups = seed_groups(runs)
    both = {m for m, v, _ in groups if v == "multitask"} & {m for m, v, _ in groups if v == "single_task"}
    rows, unpaired = [], {}
    for (model, variant, settings), members in groups.items():
        other = groups.get((model, "single_task" if variant == "multitask" else "multitask", settings), [])
        partners = {_seed_order(run.seed): run for run in other}
        for run in members:
            if model in both and _seed_order(run.seed) not in partners:
                other_variant = VARIANT_LABELS["single_task" if variant == "multitask" else "multitask"]
                unpaired[_folder_name(run)] = f"no {other_variant} run with seed {run.seed} and the same settings"
        if variant != "multitask" or not other:
            continue
        pairs = [(a, partners[_seed_order(a.seed)]) for a in members if _seed_order(a.seed) in partners]
        for a, b in pairs:
            _check_same_images(a, b)
        if pairs:
            pairs_with_tables = [(a, b, a.predictions, b.predictions) for a, b in pairs]
            rows += _rows(pairs_with_tables, bootstrap, model, "", "multi-task − single-task", members[0].setting)
    table = pd.DataFrame(rows, columns=PAIRED_COLUMNS)
    table.attrs["unpaired"] = unpaired
    return table


def tta_table(runs: Sequence[Run], bootstrap: ClusterBootstrap) -> pd.DataFrame:
    """Per experiment (model, variant, settings) whose runs have TTA predictions: TTA minus plain,
    paired on the same runs (seeds averaged). Empty when no run has test_predictions_tta.csv."""
    rows = []
    for (model, variant, _), members in seed_groups(runs).items():
        with_tta = [run for run in members if run.tta_predictions is not None]
        if with_tta:
            pairs = [(run, run, run.tta_predictions, run.predictions) for run in with_tta]
            rows += _rows(pairs, bootstrap, model, variant, "TTA − plain", members[0].setting)
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def _paired_row_label(row: pd.Series) -> str:
    """'Custom CNN · multi-task' where the row is about one variant (TTA), 'Custom CNN' where it
    compares the variants (ablation), then the experiment's settings ('· img_size 128') if any."""
    model = report_model_label(row["model"])
    label = f"{model} · {VARIANT_LABELS.get(row['variant'], row['variant'])}" if row["variant"] else model
    settings = row.get("settings", "")
    return label if settings is None or pd.isna(settings) or not settings else f"{label} · {settings}"


def _pairs_text(row: pd.Series) -> str:
    pairs = int(row["pairs"])
    return f"{pairs} pair{'s' if pairs != 1 else ''}, seed{'s' if pairs != 1 else ''} {row['seeds']}"


def paired_markdown(table: pd.DataFrame, level: float = 0.95, resamples: int | None = None) -> str:
    """A paired-difference table as markdown, then each difference in words (and, given the number
    of ``resamples``, how many of them were dropped for holding one class only)."""
    if table.empty:
        return ""
    header = ["Model", "Metric", "Seeds paired", "A", "B", "A − B", f"{level:.0%} CI", "p"]
    rows = []
    for _, row in table.iterrows():
        rows.append(
            [
                _paired_row_label(row),
                METRIC_LABELS.get(row["metric"], row["metric"]),
                f"{row['pairs']} ({row['seeds']})",
                f"{row['a']:.3f}",
                f"{row['b']:.3f}",
                f"{row['delta']:+.3f}",
                "—" if np.isnan(row["ci_low"]) else format_interval(row["ci_low"], row["ci_high"], signed=True),
                f"{row['p']:.3f}",
            ]
        )
    words = [
        f"- {_paired_row_label(row)}, {METRIC_LABELS.get(row['metric'], row['metric'])} ({_pairs_text(row)}): "
        f"{row['verdict']}."
        for _, row in table.iterrows()
    ]
    if resamples and "dropped_resamples" in table:
        labels = [
            f"{_paired_row_label(row)} {METRIC_LABELS.get(row['metric'], row['metric'])}" for _, row in table.iterrows()
        ]
        dropped = dropped_note(dict(zip(labels, table["dropped_resamples"])), resamples)
        words += [f"- Dropped resamples: {dropped}."] if dropped else []
    return markdown_table(header, rows, [False, False, False] + [True] * 5) + "\n" + "\n".join(words) + "\n"


def ablation_markdown(table: pd.DataFrame, resamples: int, level: float = 0.95, unit: str = "patient") -> str:
    """The ablation section: what was compared, how many pairs, the paired differences, how sure
    they are, and which runs found no partner (same model, seed and settings, other variant). ``unit``:
    what the bootstrap resamples ("image" for a dataset without patient ids)."""
    unpaired = table.attrs.get("unpaired", {})
    left_out = (
        "\nNot paired (no run of the other variant with the same seed and settings): "
        + "; ".join(f"`{folder}` ({why})" for folder, why in unpaired.items())
        + ".\n"
        if unpaired
        else ""
    )
    if table.empty:
        return (
            "No model was trained in both variants with a shared seed and the same other settings, "
            "so there is no paired ablation.\n" + left_out
        )
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
    experiments = table.drop_duplicates(["model", "settings"])
    used = ", ".join(f"{_paired_row_label(row)}: {_pairs_text(row)}" for _, row in experiments.iterrows())
    return (
        "A = multi-task (with the body-part head), B = single-task, same model, seed and other settings, "
        f"threshold 0.5. Pairs used: {used}. "
        f"{resamples} {unit} resamples shared by both sides (paired); with several seeds the per-seed "
        f"differences are averaged on each resample. p: two-sided bootstrap p-value.{caveat}\n\n"
        + paired_markdown(table, level, resamples)
        + left_out
    )


__all__ = ["PAIRED_COLUMNS", "ablation_markdown", "ablation_table", "paired_markdown", "tta_table"]
