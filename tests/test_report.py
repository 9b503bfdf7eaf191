"""The comparison report on fabricated run folders (2 models x 2 variants, 40 studies, 32 px PNGs)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mura_utils.config import TrainConfig
from mura_utils.data.constants import BODY_PARTS
from mura_utils.evaluation.bootstrap import confidence_intervals
from mura_utils.evaluation.metrics import study_table
from mura_utils.evaluation.predictions import compute_metrics
from mura_utils.models.checkpoint import save_checkpoint
from mura_utils.models.networks import build_model
from mura_utils.report import (
    ENSEMBLE_NAME,
    HEADLINE,
    TABLE_COLUMNS,
    Run,
    ablation_markdown,
    ablation_table,
    cam_gallery,
    comparison_markdown,
    comparison_table,
    drop_repeated_seeds,
    ensemble_predictions,
    ensemble_run,
    gallery_cases,
    load_runs,
    model_colors,
    paired_markdown,
    plot_roc,
    report_bootstrap,
    seed_groups,
    tta_table,
    write_comparison_table,
    write_report,
)

MODELS = ("custom_cnn", "resnet50")
VARIANTS = ("multitask", "single_task")
N_RESAMPLES = 30
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_test_images(folder: Path, n_studies: int = 40, seed: int = 0) -> pd.DataFrame:
    """The index of a tiny test set: 1-3 images per study, one 32-40 px PNG per image."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    rows = []
    for study in range(n_studies):
        label, part = int(study % 2), BODY_PARTS[study % len(BODY_PARTS)]
        for image in range(int(rng.integers(1, 4))):
            pixels = (rng.random((40, 32)) * 60 + np.linspace(0, 150, 32)[None, :]).astype(np.uint8)
            path = folder / f"study{study:02d}_image{image}.png"
            Image.fromarray(pixels).save(path)
            rows.append(
                {
                    "path": str(path),
                    "split": "valid",
                    "body_part": part,
                    "patient": f"patient{study:03d}",
                    "study": f"valid/XR_{part}/patient{study:03d}/study1",
                    "label": label,
                }
            )
    return pd.DataFrame(rows)


def fabricate_run(
    runs_dir: Path,
    index: pd.DataFrame,
    model: str,
    variant: str,
    seed: int,
    synthetic: bool = True,
    folder_name: str | None = None,
    checkpoint: bool = True,
    tta: bool = False,
    recorded_seed: int | None = None,
    settings: dict | None = None,
    dataset: dict | None = None,
) -> Path:
    """A run folder as mura_utils.training.experiment writes it, with label-correlated probabilities drawn
    with ``seed``; run.json and config.json record ``recorded_seed`` (default ``seed``), the
    TrainConfig ``settings`` (img_size 32, 3 epochs, unpretrained unless given) and ``dataset``
    (run.json "dataset"; None: no key, as runs of older versions)."""
    rng = np.random.default_rng(seed)
    recorded_seed = seed if recorded_seed is None else recorded_seed
    folder = runs_dir / (folder_name or f"{model}_{variant}")
    folder.mkdir(parents=True)
    predictions = index.copy()
    logits = (predictions["label"] * 2 - 1) * 0.8 + rng.normal(0, 1.5, len(predictions))
    predictions["probability"] = 1 / (1 + np.exp(-logits))
    if tta:  # a slightly better, correlated second opinion
        tta_logits = logits + (predictions["label"] * 2 - 1) * 0.3 + rng.normal(0, 0.3, len(predictions))
        predictions.assign(probability=1 / (1 + np.exp(-tta_logits))).to_csv(
            folder / "test_predictions_tta.csv", index=False
        )
    if variant == "multitask":
        correct = rng.random(len(predictions)) < 0.8
        predictions["predicted_body_part"] = np.where(correct, predictions["body_part"], "HAND")
        predictions["body_part_probability"] = rng.uniform(0.4, 1, len(predictions))
    else:
        predictions["predicted_body_part"] = None
        predictions["body_part_probability"] = np.nan
    predictions.to_csv(folder / "test_predictions.csv", index=False)
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [0.7, 0.6, 0.55],
            "lr": 1e-3,
            "train_seconds": 10.0,
            "images_per_second": 50.0,
            "val_study_auroc": rng.uniform(0.6, 0.8, 3).round(3),
            "val_study_kappa": [0.2, 0.3, 0.35],
            "val_body_part_accuracy": 0.5,
        }
    )
    history.to_csv(folder / "history.csv", index=False)
    multitask = variant == "multitask"
    config = TrainConfig(
        **{
            "model": model,
            "multitask": multitask,
            "pretrained": False,
            "img_size": 32,
            "epochs": 3,
            "seed": recorded_seed,
            "data_root": str(runs_dir),
            "out_dir": str(folder),
            **(settings or {}),
        }
    )
    config.save(folder / "config.json")
    info = {
        "run_name": folder.name,
        "model": model,
        "variant": variant,
        "parameters": 400_000 + seed,
        "train_seconds": 30.0,
        "images_per_second": 50.0,
        "best_epoch": 2,
        "threshold": 0.45,
        "img_size": config.img_size,
        "epochs": config.epochs,
        "pretrained": config.pretrained,
        "seed": recorded_seed,
        "data_root": config.data_root,
        "synthetic": synthetic,
        **({"dataset": dataset} if dataset is not None else {}),
    }
    (folder / "run.json").write_text(json.dumps(info))
    if not checkpoint:
        return folder
    save_checkpoint(
        folder / "best.pt",
        build_model("custom_cnn", pretrained=False, multitask=multitask),
        TrainConfig(model="custom_cnn", img_size=32, multitask=multitask),
        epoch=1,
        img_size=32,
        threshold=0.45,
    )
    return folder


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    index = write_test_images(root / "images")
    runs = root / "runs"
    for seed, (model, variant) in enumerate((m, v) for m in MODELS for v in VARIANTS):
        fabricate_run(runs, index, model, variant, seed, synthetic=False, recorded_seed=0)  # all seed 0
    (runs / "notes").mkdir()  # a folder without run.json is not a run
    return runs


@pytest.fixture(scope="module")
def runs(runs_dir) -> list[Run]:
    return load_runs(runs_dir)


@pytest.fixture(scope="module")
def table(runs) -> pd.DataFrame:
    return comparison_table(runs, n_resamples=N_RESAMPLES)


@pytest.fixture(scope="module")
def report(runs_dir, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    out_dir = tmp_path_factory.mktemp("out")
    written = write_report(runs_dir, out_dir, "fabricated test runs", synthetic=True, n_resamples=10)
    return out_dir, written


def test_load_runs_reads_every_run_in_a_stable_order(runs):
    assert [(run.model, run.variant) for run in runs] == [(m, v) for m in MODELS for v in VARIANTS]
    assert runs[0].label == "Custom CNN · multi-task"
    assert runs[0].info["threshold"] == 0.45 and len(runs[0].history) == 3
    assert runs[0].predictions["study"].dtype != float and runs[1].predictions["predicted_body_part"].isna().all()


def test_run_without_test_predictions_names_its_folder(runs_dir, tmp_path):
    broken = tmp_path / "runs"
    shutil.copytree(runs_dir / "resnet50_multitask", broken / "resnet50_multitask")
    (broken / "resnet50_multitask" / "test_predictions.csv").unlink()
    with pytest.raises(FileNotFoundError, match="resnet50_multitask.*test_predictions.csv"):
        load_runs(broken)


def test_ensemble_study_probability_is_the_mean_of_the_multitask_runs(runs):
    ensemble = ensemble_predictions(runs)
    assert ensemble.attrs["name"] == ENSEMBLE_NAME
    assert list(ensemble.columns) == list(runs[0].predictions.columns)
    members = [study_table(run.predictions).set_index("study")["probability"] for run in runs if run.multitask]
    expected = pd.concat(members, axis=1).mean(axis=1)
    got = study_table(ensemble).set_index("study")["probability"]
    np.testing.assert_allclose(got.sort_index(), expected.sort_index())


def test_ensemble_matches_images_by_path_not_row_order(runs):
    shuffled = [Run(r.name, r.model, r.variant, r.info, r.predictions.sample(frac=1, random_state=1)) for r in runs]
    pd.testing.assert_series_equal(
        ensemble_predictions(shuffled).set_index("path")["probability"].sort_index(),
        ensemble_predictions(runs).set_index("path")["probability"].sort_index(),
    )


def test_ensemble_refuses_runs_tested_on_other_images(runs):
    other = Run("other", "resnet50", "multitask", {}, runs[0].predictions.iloc[:-1])
    with pytest.raises(ValueError, match="other images"):
        ensemble_predictions([runs[0], other])
    assert ensemble_run(runs[:1]) is None  # one multi-task run is no ensemble


def test_comparison_table_rows_columns_and_intervals(table, runs):
    assert list(table.columns) == TABLE_COLUMNS
    assert list(table["run"]) == [run.name for run in runs] + [ENSEMBLE_NAME]
    assert (table["threshold"] == 0.5).all()
    for name in HEADLINE:
        assert (table[f"{name}_ci_low"] <= table[name]).all() and (table[name] <= table[f"{name}_ci_high"]).all()
        assert (table[f"{name}_ci_high"] - table[f"{name}_ci_low"] > 0).all()
    multitask = table["variant"].eq("multitask") & table["model"].ne("ensemble")
    assert table.loc[multitask, "body_part_accuracy"].notna().all()
    assert table.loc[~multitask, "body_part_accuracy"].isna().all()
    ensemble = table.iloc[-1]
    assert ensemble["parameters"] == sum(r.info["parameters"] for r in runs if r.multitask)
    assert np.isnan(ensemble["val_threshold"]) and table["val_threshold"].iloc[0] == 0.45


def test_table_intervals_are_the_patient_bootstrap_of_statistics(runs, table):
    """The table's CIs are statistics.confidence_intervals' (same patient resamples, same definitions)."""
    run = runs[0]
    intervals = confidence_intervals(run.predictions, n_resamples=N_RESAMPLES, seed=0)
    row = table.set_index("run").loc[run.name]
    assert [row["study_auroc_ci_low"], row["study_auroc_ci_high"]] == pytest.approx(intervals["study"]["auroc"])
    assert [row["image_accuracy_ci_low"], row["image_accuracy_ci_high"]] == pytest.approx(
        intervals["image"]["accuracy"]
    )
    assert row["bootstrap_unit"] == "patient" and row["n_patients"] == run.predictions["patient"].nunique()
    metrics = compute_metrics(run.predictions, 0.5)
    assert row["study_kappa"] == pytest.approx(metrics["study"]["kappa"])


def test_write_comparison_round_trips(table, tmp_path):
    paths = write_comparison_table(table, tmp_path)
    back = pd.read_csv(paths["comparison_csv"])
    assert list(back["run"]) == list(table["run"]) and list(back.columns) == TABLE_COLUMNS
    np.testing.assert_allclose(back["study_auroc"], table["study_auroc"])
    markdown = paths["comparison_md"].read_text()
    body = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(body) == len(table)
    for model in ("Custom CNN", "ResNet50", "Ensemble (multi-task mean)"):
        assert any(line.startswith(f"| {model} |") for line in body)
    assert re.search(r"\d\.\d{3} \[\d\.\d{2}, \d\.\d{2}\]", markdown)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def assert_png(path: Path, min_bytes: int = 8_000) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    assert path.stat().st_size > min_bytes, path
    with Image.open(path) as image:
        assert min(image.size) > 300, (path, image.size)
        extrema = image.convert("L").getextrema()
        assert extrema[1] - extrema[0] > 100, path  # not a blank canvas


def test_report_writes_every_table_and_figure(report, runs):
    out_dir, written = report
    figures = [
        "roc_study",
        "roc_image",
        "per_body_part_kappa",
        "confusion_matrices",
        "training_curves",
        "reliability",
        "ablation",
    ]
    for key in figures:
        assert_png(written[key])
        assert written[key].parent == out_dir / "figures"
    for run in runs:
        assert_png(written[f"gradcam/{run.name}"])
    assert written["comparison_csv"].is_file() and written["comparison_md"].is_file()
    assert not list(out_dir.rglob(".*.tmp"))


def test_index_is_loud_about_synthetic_data_and_links_existing_files(report):
    out_dir, written = report
    index = written["index"].read_text()
    assert index.splitlines()[0].startswith("> **SYNTHETIC SAMPLE")
    assert "abnormal" in index and "not a fracture-only label" in index
    assert "0.929" in index and "0.871" in index and "mura_utils 0.1.0" in index
    assert re.search(r"commit `[^`]+`", index) and "UTC" in index
    assert "## Ablation: does the body-part head help?" in index and "one seed per variant" in index
    links = re.findall(r"\]\(([^)]+)\)", index)
    assert len(links) >= 9 + 4
    for link in links:
        assert (out_dir / link).is_file(), link


def test_gallery_cases_are_grouped_most_confident_first():
    predictions = pd.DataFrame(
        {
            "study": list("abcdefg"),
            "label": [1, 1, 0, 0, 1, 1, 0],
            "probability": [0.9, 0.7, 0.8, 0.6, 0.2, 0.1, 0.1],
            "body_part": "HAND",
            "path": list("abcdefg"),
        }
    )
    cases = gallery_cases(predictions, threshold=0.5, per_group=2)
    assert cases.groupby("group")["study"].apply(list).to_dict() == {
        "TP": ["a", "b"],
        "FP": ["c", "d"],
        "FN": ["f", "e"],
    }


def test_gallery_groups_studies_at_the_study_threshold():
    """The validation threshold is a study threshold: a study whose mean is below it is a miss even
    when one of its images is above it; the study is shown by that highest-scoring image."""
    predictions = pd.DataFrame(
        {
            "study": ["a", "a", "b", "b"],
            "label": [1, 1, 0, 0],
            "probability": [0.7, 0.1, 0.6, 0.5],
            "body_part": "HAND",
            "path": ["a1", "a2", "b1", "b2"],
        }
    )
    cases = gallery_cases(predictions, threshold=0.5)
    assert cases.set_index("group")["path"].to_dict() == {"FN": "a1", "FP": "b1"}
    assert cases.set_index("group")["study_probability"].to_dict() == pytest.approx({"FN": 0.4, "FP": 0.55})


def test_cam_gallery_draws_tp_fp_fn_rows_and_says_none_for_an_empty_one(runs, tmp_path):
    cases = cam_gallery(runs[0], tmp_path / "gallery.png", per_group=2)
    assert set(cases["group"]) == {"TP", "FP", "FN"} and len(cases) <= 6
    assert_png(tmp_path / "gallery.png")
    confident = runs[0].predictions.assign(probability=lambda t: t["label"] * 0.8 + 0.1)  # no FP, no FN
    run = Run(runs[0].name, runs[0].model, runs[0].variant, runs[0].info, confident, path=runs[0].path)
    cases = cam_gallery(run, tmp_path / "perfect.png", per_group=2, img_size=48)
    assert set(cases["group"]) == {"TP"}
    assert_png(tmp_path / "perfect.png")


def test_a_gallery_is_drawn_once_and_again_only_when_what_it_shows_changes(runs, tmp_path, monkeypatch):
    import mura_utils.report.galleries as galleries_module

    calls = []
    draw = galleries_module._draw_gallery
    monkeypatch.setattr(galleries_module, "_draw_gallery", lambda *args: calls.append(args[1]) or draw(*args))
    path = tmp_path / "gradcam" / "run.png"
    first = cam_gallery(runs[0], path, per_group=2)
    drawn_bytes = path.read_bytes()
    again = cam_gallery(runs[0], path, per_group=2)  # notebook 05 after notebook 01: kept as it is
    assert len(calls) == 1 and path.read_bytes() == drawn_bytes and again.equals(first)
    cam_gallery(runs[0], path, per_group=1)  # other tiles
    flipped = runs[0].predictions.assign(probability=lambda t: 1 - t["probability"])  # other predictions
    cam_gallery(Run(runs[0].name, runs[0].model, runs[0].variant, runs[0].info, flipped, path=runs[0].path), path, 1)
    cam_gallery(runs[0], path, per_group=1, reuse=False)
    assert len(calls) == 4
    path.with_suffix(".json").write_text("{not json")
    cam_gallery(runs[0], path, per_group=1)  # an unreadable record: drawn again, not an error
    assert len(calls) == 5
    base = runs[0]
    for changed in (
        Run(base.name, base.model, base.variant, {**base.info, "threshold": 0.3}, base.predictions, path=base.path),
        Run(
            base.name,
            base.model,
            base.variant,
            {**base.info, "dataset": {**base.dataset, "negative_label": "intact"}},
            base.predictions,
            path=base.path,
        ),  # fmt: skip
    ):
        cam_gallery(changed, path, per_group=1)  # other threshold, other words on the tiles
        cam_gallery(base, path, per_group=1)
    assert len(calls) == 9
    weights = tmp_path / "weights_copy"
    shutil.copytree(base.path, weights)
    with open(weights / "best.pt", "ab") as checkpoint:
        checkpoint.write(b"\0")  # other bytes in best.pt (loads the same: torch reads the zip directory)
    cam_gallery(Run(base.name, base.model, base.variant, base.info, base.predictions, path=weights), path, per_group=1)
    assert len(calls) == 10


def test_synthetic_runs_force_the_warning_and_a_missing_checkpoint_is_reported(runs_dir, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(runs_dir / "resnet50_multitask", runs / "resnet50_multitask")
    info = json.loads((runs / "resnet50_multitask" / "run.json").read_text())
    (runs / "resnet50_multitask" / "run.json").write_text(json.dumps({**info, "synthetic": True}))
    (runs / "resnet50_multitask" / "best.pt").unlink()
    with pytest.warns(UserWarning, match="resnet50_multitask"):
        written = write_report(runs, tmp_path / "out", "real data, supposedly", synthetic=False, n_resamples=5)
    index = written["index"].read_text()
    assert index.startswith("> **SYNTHETIC SAMPLE")
    assert "gradcam/resnet50_multitask" not in written and "not drawn" in index
    assert len(pd.read_csv(written["comparison_csv"])) == 1  # one multi-task run: no ensemble row


SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory) -> list[Run]:
    """custom_cnn in both variants x 3 seeds (folders <model>_<variant>_seed<k>), resnet50 multi-task
    with one seed; the custom CNN multi-task runs also have TTA predictions."""
    root = tmp_path_factory.mktemp("seeds")
    index = write_test_images(root / "images", n_studies=60)
    index["patient"] = index["study"].str.extract(r"patient(\d+)", expand=False).astype(int).floordiv(3).astype(str)
    for offset, variant in enumerate(VARIANTS):
        for seed in SEEDS:
            folder = f"custom_cnn_{variant}_seed{seed}"
            info_seed = 10 * offset + seed  # different predictions, same recorded seed below
            path = fabricate_run(
                root / "runs", index, "custom_cnn", variant, info_seed, False, folder, False, variant == "multitask"
            )
            info = json.loads((path / "run.json").read_text())
            (path / "run.json").write_text(json.dumps({**info, "seed": seed}))
    fabricate_run(root / "runs", index, "resnet50", "multitask", 7, False, "resnet50_multitask_seed0", False)
    return load_runs(root / "runs")


@pytest.fixture(scope="module")
def seed_bootstrap(seed_runs):
    return report_bootstrap(seed_runs, n_resamples=200)


def test_seeds_give_mean_spread_and_a_seed_ensemble(seed_runs, seed_bootstrap):
    table = comparison_table(seed_runs, bootstrap=seed_bootstrap)
    group = table[(table["model"] == "custom_cnn") & (table["variant"] == "multitask")]
    per_seed = group[group["kind"] == "run"]
    assert sorted(per_seed["seed"]) == list(SEEDS)
    summary = group[group["kind"] == "seed_mean"].iloc[0]
    for name in HEADLINE:
        assert summary[name] == pytest.approx(per_seed[name].mean())
        assert summary[f"{name}_sd"] == pytest.approx(per_seed[name].std(ddof=1))
        assert (summary[f"{name}_min"], summary[f"{name}_max"]) == (per_seed[name].min(), per_seed[name].max())
    members = [run for run in seed_runs if run.model == "custom_cnn" and run.multitask]
    mean_probability = pd.concat([r.predictions.set_index("path")["probability"] for r in members], axis=1).mean(axis=1)
    ensemble_predictions_ = members[0].predictions.assign(
        probability=mean_probability.reindex(members[0].predictions["path"]).to_numpy()
    )
    ensemble = group[group["kind"] == "seed_ensemble"].iloc[0]
    assert ensemble["seeds"] == 3
    assert ensemble["study_auroc"] == pytest.approx(compute_metrics(ensemble_predictions_)["study"]["auroc"])
    assert ensemble["study_auroc_ci_low"] < ensemble["study_auroc"] < ensemble["study_auroc_ci_high"]
    # one seed keeps its plain row; the markdown shows the mean and the seed ensemble, not each seed
    assert (table[table["model"] == "resnet50"]["kind"] == "run").sum() == 1
    markdown = comparison_markdown(table)
    assert "3 seeds" in markdown and "3-seed ensemble" in markdown and "whole patients" in markdown
    assert re.search(r"\d\.\d{3} ± \d\.\d{3} \(\d\.\d{2}–\d\.\d{2}\)", markdown)


def test_ablation_pairs_runs_by_seed_and_averages_their_differences(seed_runs, seed_bootstrap):
    ablation = ablation_table(seed_runs, seed_bootstrap)
    assert list(ablation["model"]) == ["custom_cnn", "custom_cnn"]  # resnet50 has no single-task run
    row = ablation.set_index("metric").loc["study_auroc"]
    by_seed = {(run.variant, run.seed): run for run in seed_runs if run.model == "custom_cnn"}
    deltas = [
        compute_metrics(by_seed["multitask", seed].predictions)["study"]["auroc"]
        - compute_metrics(by_seed["single_task", seed].predictions)["study"]["auroc"]
        for seed in SEEDS
    ]
    assert row["pairs"] == 3 and row["delta"] == pytest.approx(np.mean(deltas))
    assert (row["per_seed_min"], row["per_seed_max"]) == pytest.approx((min(deltas), max(deltas)))
    assert row["ci_low"] < row["delta"] < row["ci_high"] and 0 < row["p"] <= 1
    text = ablation_markdown(ablation, 200)
    assert "multi-task − single-task" in text and (
        "includes 0" in text or "evidence that multi-task − single-task" in text
    )


def test_tta_rows_and_paired_difference_only_where_tta_exists(seed_runs, seed_bootstrap, runs):
    table = comparison_table(seed_runs, bootstrap=seed_bootstrap)
    assert sorted(table.loc[table["kind"] == "tta", "seed"]) == list(SEEDS)
    assert (table["kind"] == "tta_seed_mean").sum() == 1  # three TTA seeds: also their mean and spread
    assert "+ TTA · mean ± sd" in comparison_markdown(table) and "(seed 0)" not in comparison_markdown(table)
    tta = tta_table(seed_runs, seed_bootstrap)
    assert set(tta["variant"]) == {"multitask"} and set(tta["comparison"]) == {"TTA − plain"}
    members = [run for run in seed_runs if run.model == "custom_cnn" and run.multitask]
    expected = np.mean(
        [
            compute_metrics(r.tta_predictions)["study"]["kappa"] - compute_metrics(r.predictions)["study"]["kappa"]
            for r in members
        ]
    )
    assert tta.set_index("metric").loc["study_kappa", "delta"] == pytest.approx(expected)
    assert tta_table(runs, report_bootstrap(runs, 20)).empty  # no TTA files: nothing, silently


def test_one_seed_ablation_is_the_difference_of_the_table_rows(runs, table):
    ablation = ablation_table(runs, report_bootstrap(runs, N_RESAMPLES))
    rows = table.set_index("run")
    for model in MODELS:
        delta = ablation[(ablation["model"] == model) & (ablation["metric"] == "study_kappa")].iloc[0]
        expected = rows.loc[f"{model}_multitask", "study_kappa"] - rows.loc[f"{model}_single_task", "study_kappa"]
        assert delta["pairs"] == 1 and delta["delta"] == pytest.approx(expected)
    assert "one seed per variant" in ablation_markdown(ablation, N_RESAMPLES)


def only_experiment(groups: dict, model: str, variant: str) -> list[Run]:
    """The runs of the one experiment of ``model``/``variant`` in ``seed_groups``' result."""
    matches = [members for (m, v, _), members in groups.items() if (m, v) == (model, variant)]
    assert len(matches) == 1, f"{model} {variant}: {len(matches)} experiments"
    return matches[0]


def test_seed_groups_order_seeds_as_numbers(tmp_path):
    index = write_test_images(tmp_path / "images", n_studies=6)
    for seed in (10, 2, 1):
        fabricate_run(tmp_path / "runs", index, "custom_cnn", "multitask", seed, False, f"run{seed}", False)
    groups = seed_groups(load_runs(tmp_path / "runs"))
    assert [run.seed for run in only_experiment(groups, "custom_cnn", "multitask")] == [1, 2, 10]


@pytest.fixture(scope="module")
def old_and_new_folders(tmp_path_factory) -> Path:
    """custom_cnn in both variants: old `<model>_<variant>` folders (seed 0) next to the
    `<model>_<variant>_seed<k>` folders mura reproduce writes for seeds 0 and 1."""
    root = tmp_path_factory.mktemp("repeats")
    index = write_test_images(root / "images", n_studies=30)
    for offset, variant in enumerate(VARIANTS):
        old = fabricate_run(root / "runs", index, "custom_cnn", variant, 50 + offset, False, checkpoint=False)
        info = json.loads((old / "run.json").read_text())
        (old / "run.json").write_text(json.dumps({**info, "seed": 0}))
        for seed in (0, 1):
            folder = f"custom_cnn_{variant}_seed{seed}"
            fabricate_run(root / "runs", index, "custom_cnn", variant, seed, False, folder, checkpoint=False)
    return root / "runs"


def test_a_seed_in_two_folders_counts_once_and_the_report_says_which_was_left_out(old_and_new_folders, tmp_path):
    every_folder = load_runs(old_and_new_folders)
    assert len(every_folder) == 6
    with pytest.warns(UserWarning, match="custom_cnn_multitask: repeats seed 0"):
        groups = seed_groups(every_folder)
    for variant in VARIANTS:
        assert [run.path.name for run in only_experiment(groups, "custom_cnn", variant)] == [
            f"custom_cnn_{variant}_seed0",
            f"custom_cnn_{variant}_seed1",
        ]
    with pytest.warns(UserWarning):
        ablation = ablation_table(every_folder, report_bootstrap(every_folder, 20))
    assert set(ablation["pairs"]) == {2} and set(ablation["seeds"]) == {"0, 1"}
    assert ensemble_run(every_folder).info["members"] == ["custom_cnn_multitask_seed0", "custom_cnn_multitask_seed1"]

    with pytest.warns(UserWarning, match="repeat a seed"):
        written = write_report(old_and_new_folders, tmp_path / "out", "fabricated", synthetic=True, n_resamples=5)
    table = pd.read_csv(written["comparison_csv"])
    assert "custom_cnn_multitask" not in set(table["run"]) and "custom_cnn_single_task" not in set(table["run"])
    assert set(table.loc[table["kind"] == "seed_mean", "seeds"]) == {2}
    index = written["index"].read_text()
    left_out = next(line for line in index.splitlines() if line.startswith("Left out"))
    assert "`custom_cnn_multitask`" in left_out and "`custom_cnn_single_task`" in left_out
    assert "kept custom_cnn_multitask_seed0" in left_out


def test_of_repeated_seeds_without_the_reproduce_name_the_newest_run_json_is_kept(tmp_path):
    index = write_test_images(tmp_path / "images", n_studies=6)
    for name, written_at in (("first_try", 1_000_000), ("second_try", 2_000_000), ("a_copy", 1_500_000)):
        folder = fabricate_run(tmp_path / "runs", index, "resnet50", "multitask", 3, False, name, False)
        os.utime(folder / "run.json", (written_at, written_at))
    kept, left_out = drop_repeated_seeds(load_runs(tmp_path / "runs"))
    assert [run.path.name for run in kept] == ["second_try"]
    assert sorted(left_out) == ["a_copy", "first_try"] and "newest run.json" in left_out["first_try"]


def test_tta_sentences_name_the_variant_like_the_table_rows(runs):
    def sharper(predictions: pd.DataFrame) -> pd.DataFrame:
        return predictions.assign(probability=predictions["probability"] ** 2)

    with_tta = [
        Run(run.name, run.model, run.variant, run.info, run.predictions, tta_predictions=sharper(run.predictions))
        for run in runs
        if run.model == "custom_cnn"
    ]
    text = paired_markdown(tta_table(with_tta, report_bootstrap(with_tta, 20)))
    sentences = [line for line in text.splitlines() if line.startswith("- ")]
    assert len(sentences) == 4 and len(set(line.split(":")[0] for line in sentences)) == 4
    for variant in ("multi-task", "single-task"):
        assert sum(line.startswith(f"- Custom CNN · {variant}, Study κ (1 pair, seed 0):") for line in sentences) == 1


def test_a_run_without_a_grad_cam_layer_is_listed_and_the_report_still_written(runs_dir, tmp_path, monkeypatch):
    import mura_utils.report.index as index_module

    draw = index_module.cam_gallery

    def vit_like(run, path, per_group=3):
        if run.model == "resnet50":  # as models.cam_target_layer raises for a backbone without conv layers
            raise ValueError(f"{run.model}: no convolutional layer to take Grad-CAM from")
        return draw(run, path, per_group)

    monkeypatch.setattr(index_module, "cam_gallery", vit_like)
    with pytest.warns(UserWarning, match="no Grad-CAM"):
        written = write_report(runs_dir, tmp_path, "fabricated", synthetic=True, n_resamples=5, cam_per_group=1)
    index = written["index"].read_text()
    assert "- ResNet50 · multi-task: no Grad-CAM: resnet50: no convolutional layer" in index
    assert "gradcam/resnet50_multitask" not in written and "gradcam/custom_cnn_multitask" in written


def test_models_outside_the_seed_four_get_distinct_colours_in_the_figures(runs, tmp_path):
    """Two timm models and ResNet50: three line colours in the ROC figure, not one grey for both timm models."""
    models = ("vit_tiny_patch16_224", "convnext_atto", "resnet50")
    shown = [Run(model, model, "multitask", {}, runs[0].predictions) for model in models]
    colors = model_colors(run.model for run in shown)
    assert len({colors[model] for model in models}) == 3
    assert colors["resnet50"] == model_colors(["resnet50"])["resnet50"]  # the seed models keep their colour
    assert len(set(model_colors(f"timm_model_{i}" for i in range(12)).values())) == 4 + 12 + 1
    path = plot_roc(shown, "study", tmp_path / "roc.png")
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    for model in models:
        target = np.array(colors[model]) * 255
        assert (np.abs(pixels - target).max(axis=-1) < 8).sum() > 50, model  # drawn in its own colour
