"""The comparison report over finished training runs: one table with bootstrap CIs, figures,
Grad-CAM galleries and an ``index.md`` that says what was run, on what data, when.

It reads the run folders that ``mura_utils.training.experiment`` writes (run.json, history.csv,
test_predictions.csv, best.pt) and knows nothing about notebooks: pure functions that return
DataFrames or write files. Every file is written atomically (temp file + rename). One module per
concern: ``runs`` (loading, settings, seeds), ``ensembles`` (seed, TTA and multi-model ensembles),
``tables`` (comparison table, markdown), ``ablation`` (paired multi-task and TTA differences),
``figures``, ``galleries`` (Grad-CAM), ``error_analysis`` (notebook 06's errors) and ``index``
(index.md, ``write_report``). Intervals come from ``mura_utils.evaluation.bootstrap``: whole
patients resampled, the same resamples for every row and difference.

An experiment is a model, a variant and every other training setting (config.json) but the seed:
seeds of one experiment are averaged and paired, different experiments never are. A report covers
runs of one dataset (run.json "dataset"; MURA for older runs) and speaks its words.
"""

from __future__ import annotations

from mura_utils.report.ablation import PAIRED_COLUMNS, ablation_markdown, ablation_table, paired_markdown, tta_table
from mura_utils.report.ensembles import (
    ENSEMBLE_NAME,
    ensemble_predictions,
    ensemble_run,
    mean_predictions,
    representatives,
    seed_ensemble_run,
    tta_run,
)
from mura_utils.report.figures import (
    STYLE,
    body_part_kappas,
    model_colors,
    plot_ablation,
    plot_confusion_matrices,
    plot_per_body_part_kappa,
    plot_reliability,
    plot_roc,
    plot_training_curves,
)
from mura_utils.report.galleries import cam_gallery, gallery_cases, gallery_groups
from mura_utils.report.index import BASELINES, git_commit, write_report
from mura_utils.report.runs import (
    ENSEMBLE_LABEL,
    MURA_DATASET,
    REQUIRED_COLUMNS,
    VARIANT_LABELS,
    Run,
    drop_repeated_seeds,
    load_run,
    load_runs,
    name_settings,
    report_dataset,
    report_model_label,
    run_dataset,
    run_settings,
    seed_groups,
)
from mura_utils.report.tables import (
    HEADLINE,
    TABLE_COLUMNS,
    comparison_markdown,
    comparison_table,
    report_bootstrap,
    run_row,
    seed_summary_row,
    write_comparison_table,
)

__all__ = [
    "BASELINES",
    "PAIRED_COLUMNS",
    "ENSEMBLE_NAME",
    "HEADLINE",
    "ENSEMBLE_LABEL",
    "MURA_DATASET",
    "REQUIRED_COLUMNS",
    "STYLE",
    "TABLE_COLUMNS",
    "VARIANT_LABELS",
    "Run",
    "ablation_markdown",
    "ablation_table",
    "body_part_kappas",
    "gallery_groups",
    "name_settings",
    "report_dataset",
    "report_model_label",
    "run_dataset",
    "run_settings",
    "mean_predictions",
    "paired_markdown",
    "report_bootstrap",
    "representatives",
    "seed_ensemble_run",
    "seed_groups",
    "seed_summary_row",
    "tta_run",
    "tta_table",
    "cam_gallery",
    "comparison_markdown",
    "comparison_table",
    "drop_repeated_seeds",
    "ensemble_predictions",
    "ensemble_run",
    "gallery_cases",
    "git_commit",
    "load_run",
    "load_runs",
    "model_colors",
    "plot_ablation",
    "plot_confusion_matrices",
    "plot_per_body_part_kappa",
    "plot_reliability",
    "plot_roc",
    "plot_training_curves",
    "run_row",
    "write_comparison_table",
    "write_report",
]
