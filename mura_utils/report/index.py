"""``index.md`` and ``write_report``: every table, figure and gallery of one report, with
what was run, on what data, by which commit."""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from mura_utils.report.ablation import ablation_markdown, ablation_table, paired_markdown, tta_table
from mura_utils.report.ensembles import ensemble_run, representatives
from mura_utils.report.figures import (
    model_colors,
    plot_ablation,
    plot_confusion_matrices,
    plot_per_body_part_kappa,
    plot_reliability,
    plot_roc,
    plot_training_curves,
)
from mura_utils.report.galleries import cam_gallery
from mura_utils.report.runs import (
    VARIANT_LABELS,
    Run,
    dataset_short_name,
    drop_repeated_seeds,
    load_runs,
    name_settings,
    report_dataset,
    report_model_label,
    warn_left_out,
)
from mura_utils.report.tables import (
    comparison_markdown,
    comparison_table,
    report_bootstrap,
    write_comparison_table,
)
from mura_utils.utils.formatting import float_or_nan, format_number, markdown_table
from mura_utils.utils.io import atomic_write_text

BASELINES = [
    ("EfficientNet-B0 (earlier notebook)", "80.6%", "0.871", "0.609"),
    ("DenseNet169 (earlier notebook)", "79.2%", "0.854", "0.580"),
    ("ResNet50 (earlier notebook)", "75.1%", "0.824", "0.493"),
    ("Custom CNN (earlier notebook)", "66.3%", "0.727", "—"),
    ("MURA paper DenseNet-169 (hidden test set, study level)", "—", "0.929", "0.705"),
]


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
                report_model_label(run.model),
                VARIANT_LABELS.get(run.variant, run.variant) + (f" · {run.setting}" if run.setting else ""),
                str(info.get("pretrained", "—")),
                str(info.get("img_size", "—")),
                f"{info.get('epochs', '—')} ({info.get('best_epoch', '—')})",
                str(info.get("seed", "—")),
                format_number(float_or_nan(info.get("threshold")), 3),
                f"{len(run.predictions)} / {run.predictions['study'].nunique()}",
            ]
        )
    return markdown_table(header, rows)


def _baselines_markdown() -> list[str]:
    """'The bar': earlier MURA results (MURA reports only: they say nothing about other datasets)."""
    return [
        "## The bar: earlier results",
        "",
        "What the earlier notebooks reported on MURA valid (their AUROC and κ as the notebooks computed "
        "them), and the MURA paper (Rajpurkar et al., 2018) on its hidden test set (study level; "
        "not comparable one to one with MURA valid).",
        "",
        markdown_table(["Model", "Image accuracy", "AUROC", "Cohen's κ"], BASELINES, [False, True, True, True]),
    ]


def _index_markdown(
    runs: Sequence[Run],
    table: pd.DataFrame,
    written: dict[str, Path],
    out_dir: Path,
    data_description: str,
    synthetic: bool,
    skipped: dict[str, str],
    paired: dict[str, str] | None = None,
    left_out: dict[str, str] | None = None,
) -> str:
    from mura_utils import __version__

    def link(key: str) -> str:
        return written[key].relative_to(out_dir).as_posix()

    dataset = report_dataset(runs)
    name, mura = dataset_short_name(dataset), dataset["name"] == "mura"
    positive, negative = dataset["positive_label"], dataset["negative_label"]
    lines = []
    if synthetic:
        lines += [
            "> **SYNTHETIC SAMPLE — these numbers say nothing about real radiographs.** "
            f"The data are the embedded synthetic sample, not {name}; the report only shows that the "
            "pipeline runs end to end.",
            "",
        ]
    data_roots = sorted({str(run.info.get("data_root")) for run in runs if run.info.get("data_root")})
    test_splits = sorted({str(run.info.get("test_split", dataset["test_split"])) for run in runs})
    source = []
    if not synthetic and dataset.get("citation"):
        licence = f" Licence: {dataset['licence']}." if dataset.get("licence") else ""
        source = [f"- **Source:** {dataset['title']}. Cite: {dataset['citation']}.{licence}"]
    if mura:
        held_out = "patient-level validation split of MURA *train*"
        label = (
            "- **Label:** MURA's positive class is **abnormal**: fractures, but also hardware, degenerative "
            "joint disease, lesions and other findings. It is not a fracture-only label."
        )
    else:
        held_out = "validation split of the training data"
        label = f"- **Label:** {name}'s positive class is **{positive}**, its negative class **{negative}**."
    lines += [
        "# MURA abnormality detection: model comparison"
        if mura
        else f"# {name}: model comparison ({positive} vs {negative})",
        "",
        f"- **Generated:** {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- **Code:** commit `{git_commit()}`, mura_utils {__version__}",
        f"- **Data:** {data_description}"
        + (f" (data_root: {', '.join(f'`{r}`' for r in data_roots)})" if data_roots else ""),
        *source,
        f"- **Test set:** {name} *{', '.join(test_splits)}* (held out; thresholds and model selection used a "
        f"{held_out}).",
        label,
        "",
        "## Runs",
        "",
        _runs_markdown(runs),
        *(
            [
                "Left out (run folders that repeat another folder's model, variant, settings and seed; counting them "
                "would make one seed look like two): "
                + "; ".join(f"`{folder}` ({why})" for folder, why in left_out.items())
                + ".",
                "",
            ]
            if left_out
            else []
        ),
        "## Results",
        "",
        f"Full table: [comparison.md]({link('comparison_md')}), "
        f"all columns: [comparison.csv]({link('comparison_csv')}).",
        "",
        comparison_markdown(table, dataset),
        "The ensemble averages the multi-task runs' image probabilities (so also their study "
        "probabilities); its parameters and training time are the members' sums.",
        "",
        *(paired or {}).values(),
        f"Paired differences as files: [ablation.md]({link('ablation_md')}), [ablation.csv]({link('ablation_csv')}).",
        "",
        *(_baselines_markdown() if mura else []),
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
        "validation threshold. Grad-CAM shows where the "
        + ("abnormality" if mura else f"{positive!r}")
        + " score is sensitive, not where a finding is.",
        "",
    ]
    for run in runs:
        key = f"gradcam/{run.name}"
        if key in written:
            lines += [f"- [{run.label}]({link(key)})"]
        else:
            lines += [f"- {run.label}: {skipped.get(run.name, 'not drawn (unknown reason)')}"]
    lines += ["", "## Do the heatmaps point at the fracture?", ""]
    if dataset.get("has_boxes"):
        lines += [
            f"{dataset['title']} ships a box and polygon per fracture: notebook 06 measures each CAM method against "
            "them (pointing game, mass ratio, ROAD faithfulness, next to an image-centre and a flat-map baseline) "
            "in [localization.md](localization.md)."
        ]
    else:
        lines += [f"{dataset['title']} has no fracture boxes: the galleries above are not checked against findings."]
    return "\n".join(lines) + "\n"


def write_report(
    runs_dir: str | Path,
    out_dir: str | Path,
    data_description: str,
    synthetic: bool,
    n_resamples: int = 1000,
    cam_per_group: int = 3,
    seed: int = 0,
) -> dict[str, Path]:
    """Everything: comparison table (csv + md), paired ablation (and TTA) differences, figures,
    Grad-CAM galleries and index.md. All intervals share one set of ``n_resamples`` patient
    resamples (``seed``); figures show one curve per (model, variant): its seed ensemble when
    there are several seeds.

    ``synthetic`` is also switched on when any run.json says its data was the synthetic sample,
    so a report of synthetic numbers can never go out without the warning; real data get their
    citation and licence line instead. Titles, class names and body parts follow the runs' dataset
    (run.json "dataset"); runs of several datasets are refused, naming their folders. Runs of one
    model trained with other settings (image size, epochs, ...) are separate experiments: separate
    rows and curves, named by what differs, never averaged or paired. Run folders that repeat
    another's (model, variant, settings, seed) are left out, with a warning and a line in index.md
    (see ``drop_repeated_seeds``). Returns the paths.
    """
    from mura_utils.data.imaging import ImageReadError
    from mura_utils.models.checkpoint import CheckpointError

    out_dir, figures = Path(out_dir), Path(out_dir) / "figures"
    runs = load_runs(runs_dir)
    if not runs:
        raise ValueError(f"{runs_dir}: no run folders (with run.json) to report on")
    dataset = report_dataset(runs)  # refuses runs of several datasets before anything is written
    runs, left_out = drop_repeated_seeds(runs)
    warn_left_out(left_out)
    name_settings(runs)
    synthetic = bool(synthetic or any(run.info.get("synthetic") for run in runs))
    ensemble = ensemble_run(runs)
    everyone = runs + ([ensemble] if ensemble is not None else [])
    bootstrap = report_bootstrap(everyone, n_resamples, seed)
    table = comparison_table(everyone, bootstrap=bootstrap)
    written = write_comparison_table(table, out_dir, dataset)
    ablation, tta = ablation_table(runs, bootstrap), tta_table(runs, bootstrap)
    unit = "patient" if dataset.get("has_patients", True) else "image"  # FracAtlas: each image its own patient
    paired = {
        "ablation": "## Ablation: does the body-part head help?\n\n"
        + ablation_markdown(ablation, n_resamples, unit=unit)
    }
    if not tta.empty:
        paired["tta"] = (
            f"## Test-time augmentation: TTA − plain\n\nSame runs, same {unit} resamples, threshold 0.5.\n\n"
            + paired_markdown(tta, resamples=n_resamples)
        )
    written["ablation_csv"], written["ablation_md"] = out_dir / "ablation.csv", out_dir / "ablation.md"
    atomic_write_text(
        written["ablation_csv"],
        pd.concat([t for t in (ablation, tta) if not t.empty] or [ablation]).to_csv(index=False),
    )
    atomic_write_text(written["ablation_md"], "\n".join(paired.values()))
    shown = representatives(everyone)
    colors = model_colors(run.model for run in shown)  # one colour per model in every figure
    written["roc_study"] = plot_roc(shown, "study", figures / "roc_study.png", colors)
    written["roc_image"] = plot_roc(shown, "image", figures / "roc_image.png", colors)
    written["per_body_part_kappa"] = plot_per_body_part_kappa(shown, figures / "per_body_part_kappa.png", colors)
    written["confusion_matrices"] = plot_confusion_matrices(shown, figures / "confusion_matrices.png")
    written["training_curves"] = plot_training_curves(runs, figures / "training_curves.png", colors)
    written["reliability"] = plot_reliability(shown, figures / "reliability.png", colors=colors)
    written["ablation"] = plot_ablation(ablation, figures / "ablation.png", colors)
    skipped = {}
    for run in runs:
        gallery = figures / "gradcam" / f"{run.name}.png"
        try:
            cam_gallery(run, gallery, per_group=cam_per_group)
            written[f"gradcam/{run.name}"] = gallery
        except (CheckpointError, ImageReadError) as error:
            skipped[run.name] = f"not drawn ({error})"
            warnings.warn(f"Grad-CAM gallery for run {run.name} not drawn: {error}", stacklevel=2)
        except ValueError as error:  # e.g. no convolutional layer for Grad-CAM (a ViT)
            skipped[run.name] = f"no Grad-CAM: {error}"
            warnings.warn(f"run {run.name}: no Grad-CAM gallery: {error}", stacklevel=2)
    written["index"] = out_dir / "index.md"
    atomic_write_text(
        written["index"],
        _index_markdown(runs, table, written, out_dir, data_description, synthetic, skipped, paired, left_out),
    )
    return written
