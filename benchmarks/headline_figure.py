"""The README's headline figure: ROC curves of a runs folder's test predictions, one curve per run,
AUROC in the legend, from the run folders alone (no radiograph pixels in the figure).

    python benchmarks/headline_figure.py --runs-dir runs/cpu-fracatlas --out docs/fracatlas_roc.png

Study level (a study's probability is the mean of its images'; on FracAtlas every image is its own
study). Runs are read with ``mura_utils.report.runs.load_runs`` (folders without run.json are skipped),
so the curves are exactly the predictions that the reports and ``benchmarks/real_data_results.py`` use.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from mura_utils.evaluation.metrics import study_table  # noqa: E402  (the one study aggregation)
from mura_utils.report.runs import load_runs  # noqa: E402

VARIANTS = ("multitask", "single_task")
LINE_STYLES = {"multitask": "-", "single_task": "--"}


def plot_headline_roc(runs_dir: str | Path, out: str | Path, variants: tuple[str, ...] = VARIANTS) -> Path:
    """Draw every finished run of ``runs_dir`` whose variant is in ``variants`` into one ROC figure."""
    runs = [run for run in load_runs(runs_dir) if run.variant in variants]
    if not runs:
        raise SystemExit(f"{runs_dir}: no finished run (a folder with run.json) of variant {', '.join(variants)}")
    dataset = runs[0].dataset
    figure, axes = plt.subplots(figsize=(5.6, 5.2), dpi=130)
    axes.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="chance (0.500)")
    models = list(dict.fromkeys(run.model for run in runs))
    colors = {model: plt.get_cmap("tab10")(rank) for rank, model in enumerate(models)}
    n_studies = n_positive = 0
    unit = "studies"
    for run in runs:
        studies = study_table(run.predictions, source=str(run.path))
        labels, scores = studies["label"].to_numpy(dtype=int), studies["probability"].to_numpy(dtype=float)
        n_studies, n_positive = len(labels), int(labels.sum())
        unit = "images" if n_studies == len(run.predictions) else "studies"  # FracAtlas: a study per image
        if 0 < n_positive < n_studies:
            false_positive, true_positive, _ = roc_curve(labels, scores)
            axes.plot(
                false_positive,
                true_positive,
                color=colors[run.model],
                linestyle=LINE_STYLES.get(run.variant, "-"),
                linewidth=1.6,
                label=f"{run.label} ({roc_auc_score(labels, scores):.3f})",
            )
    title = str(dataset.get("title", dataset.get("name", "")))
    positive = str(dataset.get("positive_label", "positive"))
    axes.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        aspect="equal",
        xlabel="false positive rate (1 - specificity)",
        ylabel=f"true positive rate (sensitivity, {positive})",
        title=f"{title}, {dataset['test_split']} split: {n_studies} {unit}, {n_positive} {positive}",
    )
    axes.title.set_fontsize(10)
    axes.legend(loc="lower right", fontsize=8, title="run (test AUROC)", title_fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", default="runs/cpu-fracatlas", help="a runs folder (mura reproduce --runs-dir)")
    parser.add_argument("--out", default="docs/fracatlas_roc.png", help="the PNG to write")
    parser.add_argument("--variant", choices=(*VARIANTS, "all"), default="all", help="which runs to draw")
    args = parser.parse_args(argv)
    variants = VARIANTS if args.variant == "all" else (args.variant,)
    print(f"wrote {plot_headline_roc(args.runs_dir, args.out, variants)}")


if __name__ == "__main__":
    main()
