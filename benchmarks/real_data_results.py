"""The real-data results table: every finished run of a runs folder scored on its dataset's held-out test
split at its *validation* threshold (chosen on the patient-level validation split during training,
stored in run.json), with 95% bootstrap intervals (patients; FracAtlas: images), per body part, and the
training time. Prints markdown for README.md / RESULTS.md.

    PYTHONPATH=. python benchmarks/real_data_results.py runs/cpu-fracatlas [--resamples 2000]

Train the runs first, e.g. ``mura reproduce --data-root ../shared/data/FracAtlas --profile cpu``.
A runs folder that does not exist (e.g. no FracAtlas copy on this machine) is skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mura_utils.evaluation.bootstrap import confidence_intervals
from mura_utils.evaluation.predictions import compute_metrics
from mura_utils.report import load_runs
from mura_utils.report.runs import report_dataset


def _cell(value, interval=None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval and interval[0] is not None else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args(argv)
    if not Path(args.runs_dir).is_dir():
        print(f"{args.runs_dir}: no such runs folder; skipped (train the runs first)")
        return 0
    runs = load_runs(args.runs_dir)
    if not runs:
        print(f"{args.runs_dir}: no finished runs")
        return 0
    dataset = report_dataset(runs)  # refuses runs of several datasets, as the report does
    print(f"### {dataset['title']}: held-out {dataset['test_split']} split\n")
    print(
        "| model | variant | img px | epochs (best) | AUROC [95% CI] | kappa [95% CI] | sensitivity | specificity | "
        "train time |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    per_part_rows = []
    for run in runs:
        threshold = float(run.info["threshold"])
        metrics = compute_metrics(run.predictions, threshold, source=str(run.path))
        intervals = confidence_intervals(run.predictions, args.resamples, threshold, source=str(run.path))
        study, ci = metrics["study"], intervals["study"]
        minutes = run.info["train_seconds"] / 60
        print(
            f"| {run.model} | {run.variant} | {run.info['img_size']} | {run.info['epochs']} ({run.info['best_epoch']}) | "
            f"{_cell(study['auroc'], ci['auroc'])} | {_cell(study['kappa'], ci['kappa'])} | "
            f"{_cell(study['sensitivity'])} | {_cell(study['specificity'])} | {minutes:.0f} min |"
        )
        per_part_rows.append((run, threshold, metrics))
    parts = sorted({part for _, _, metrics in per_part_rows for part in metrics["per_body_part"]})
    print(f"\nStudy AUROC per body part (test studies: {', '.join(_part_counts(per_part_rows[0][2], parts))}):\n")
    print("| model | variant | threshold | " + " | ".join(parts) + " |")
    print("|---|---|---|" + "---|" * len(parts))
    for run, threshold, metrics in per_part_rows:
        cells = [_cell(metrics["per_body_part"].get(part, {}).get("study_auroc")) for part in parts]
        print(f"| {run.model} | {run.variant} | {threshold:.3f} | " + " | ".join(cells) + " |")
    unit = (
        f"{intervals['unit']}s"
        if dataset.get("has_patients", True)
        else f"images ({dataset['title']} records no patients: each image is its own patient and study)"
    )
    total_minutes = round(sum(run.info["train_seconds"] for run in runs) / 60)
    print(
        f"\nThreshold: each run's validation threshold (max kappa on its validation split). Intervals: "
        f"{args.resamples} bootstrap resamples of {unit}. Training time of the {len(runs)} runs: "
        f"{total_minutes // 60} h {total_minutes % 60:02d} min. Source: {json.dumps(str(args.runs_dir))}."
    )
    return 0


def _part_counts(metrics: dict, parts: list[str]) -> list[str]:
    return [f"{part} {metrics['per_body_part'][part]['studies']}" for part in parts if part in metrics["per_body_part"]]


if __name__ == "__main__":
    sys.exit(main())
