"""What a report pools and what it keeps apart: runs of one model with other settings (image size,
learning rate, ...) are other experiments, never averaged or paired; runs of other datasets are
refused; a report of a non-MURA dataset (FracAtlas-like, hand-written run folders) speaks its words."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report import fabricate_run, write_test_images

import mura_utils.report.figures as figures_module
import mura_utils.report.galleries as galleries_module
from mura_utils.evaluation.predictions import compute_metrics
from mura_utils.report import (
    MURA_DATASET,
    ablation_markdown,
    ablation_table,
    body_part_kappas,
    cam_gallery,
    comparison_markdown,
    comparison_table,
    drop_repeated_seeds,
    load_run,
    load_runs,
    plot_confusion_matrices,
    plot_per_body_part_kappa,
    plot_reliability,
    plot_roc,
    plot_training_curves,
    report_bootstrap,
    run_settings,
    seed_groups,
    write_report,
)

FRACATLAS = {
    "name": "fracatlas",
    "title": "FracAtlas",
    "body_parts": ["HAND", "HIP", "LEG", "MIXED", "SHOULDER"],
    "positive_label": "fractured",
    "negative_label": "not fractured",
    "has_patients": False,
    "test_split": "test",
    "citation": "Abedeen et al., FracAtlas: a dataset for fracture classification, localization and "
    "segmentation of musculoskeletal radiographs, Scientific Data 10, 521 (2023)",
    "licence": "CC BY 4.0",
    "has_boxes": True,
}


# ----------------------------------------------------------------------------- settings


@pytest.fixture(scope="module")
def two_sizes(tmp_path_factory) -> Path:
    """custom_cnn multi-task at img_size 32 and 48 (seeds 0 and 1 each; the 48 px folders as a
    restart with other settings leaves them), single-task at 48 px only (seeds 0 and 1)."""
    root = tmp_path_factory.mktemp("sizes")
    index = write_test_images(root / "images", n_studies=30)
    runs = root / "runs"
    for offset, (variant, size) in enumerate((("multitask", 32), ("multitask", 48), ("single_task", 48))):
        for seed in (0, 1):
            folder = f"custom_cnn_{variant}_seed{seed}" + ("_img48" if size == 48 else "")
            settings = {"img_size": size}
            fabricate_run(
                runs, index, "custom_cnn", variant, 10 * offset + seed, False, folder, False, False, seed, settings
            )
    return runs


def test_runs_at_two_image_sizes_are_two_experiments_never_averaged(two_sizes):
    runs = load_runs(two_sizes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # seed 0 at 32 px and at 48 px are no repeats of one seed
        assert drop_repeated_seeds(runs)[1] == {}
        groups = seed_groups(runs)
    multitask = [members for (model, variant, _), members in groups.items() if variant == "multitask"]
    assert len(groups) == 3 and len(multitask) == 2
    for members in multitask:
        assert len({run.info["img_size"] for run in members}) == 1 and [run.seed for run in members] == [0, 1]
    assert {run.label for run in runs if run.multitask} == {
        "Custom CNN · multi-task · img_size 32",
        "Custom CNN · multi-task · img_size 48",
    }

    table = comparison_table(runs, n_resamples=20)
    means = table[table["kind"] == "seed_mean"].set_index(["variant", "settings"])
    assert sorted(means.index) == [
        ("multitask", "img_size 32"),
        ("multitask", "img_size 48"),
        ("single_task", "img_size 48"),
    ]
    for size in (32, 48):
        members = [run for run in runs if run.multitask and run.info["img_size"] == size]
        expected = np.mean([compute_metrics(run.predictions)["study"]["auroc"] for run in members])
        assert means.loc[("multitask", f"img_size {size}"), "study_auroc"] == pytest.approx(expected)
        assert means.loc[("multitask", f"img_size {size}"), "seeds"] == 2
    ensembles = table[table["kind"] == "seed_ensemble"]
    assert sorted(ensembles["settings"]) == ["img_size 32", "img_size 48", "img_size 48"]
    assert all(run.count("img_size") == 1 for run in ensembles["run"])
    markdown = comparison_markdown(table)
    assert "| Custom CNN | multi-task · img_size 32 · mean ± sd (min–max), 2 seeds |" in markdown
    assert "| Custom CNN | multi-task · img_size 48 · mean ± sd (min–max), 2 seeds |" in markdown


def test_the_ablation_pairs_only_runs_of_the_same_seed_and_settings(two_sizes):
    runs = load_runs(two_sizes)
    ablation = ablation_table(runs, report_bootstrap(runs, 50))
    assert set(ablation["settings"]) == {"img_size 48"} and set(ablation["pairs"]) == {2}
    by_folder = {run.path.name: run for run in runs}
    deltas = [
        compute_metrics(by_folder[f"custom_cnn_multitask_seed{seed}_img48"].predictions)["study"]["kappa"]
        - compute_metrics(by_folder[f"custom_cnn_single_task_seed{seed}_img48"].predictions)["study"]["kappa"]
        for seed in (0, 1)
    ]
    assert ablation.set_index("metric").loc["study_kappa", "delta"] == pytest.approx(np.mean(deltas))
    assert sorted(ablation.attrs["unpaired"]) == ["custom_cnn_multitask_seed0", "custom_cnn_multitask_seed1"]
    text = ablation_markdown(ablation, 50)
    assert "Pairs used: Custom CNN · img_size 48: 2 pairs, seeds 0, 1." in text
    assert "- Custom CNN · img_size 48, Study κ (2 pairs, seeds 0, 1):" in text
    assert "Not paired" in text and "`custom_cnn_multitask_seed0` (no single-task run with seed 0" in text


def test_runs_of_different_seeds_are_not_paired(tmp_path):
    index = write_test_images(tmp_path / "images", n_studies=10)
    fabricate_run(tmp_path / "runs", index, "resnet50", "multitask", 0, False, checkpoint=False)
    fabricate_run(tmp_path / "runs", index, "resnet50", "single_task", 1, False, checkpoint=False)
    runs = load_runs(tmp_path / "runs")
    ablation = ablation_table(runs, report_bootstrap(runs, 10))
    assert ablation.empty
    text = ablation_markdown(ablation, 10)
    assert text.startswith("No model was trained in both variants with a shared seed and the same other settings")
    assert "`resnet50_multitask` (no single-task run with seed 0" in text


@pytest.mark.filterwarnings("ignore:Grad-CAM gallery")
def test_the_report_keeps_the_two_sizes_apart(two_sizes, tmp_path):
    written = write_report(two_sizes, tmp_path, "fabricated", synthetic=False, n_resamples=5)
    table = pd.read_csv(written["comparison_csv"], keep_default_na=False)
    assert (table["kind"] == "seed_mean").sum() == 3 and (table["kind"] == "seed_ensemble").sum() == 3
    index = written["index"].read_text()
    assert "| custom_cnn_multitask_seed0 | Custom CNN | multi-task · img_size 32 |" in index
    assert "| custom_cnn_multitask_seed0_img48 | Custom CNN | multi-task · img_size 48 |" in index
    assert "Pairs used: Custom CNN · img_size 48: 2 pairs" in index


def write_folder(folder: Path, info: dict, config: dict | None) -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps(info))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_settings_ignore_seed_and_neutral_fields_and_compare_what_the_run_used(tmp_path):
    base = {"model": "custom_cnn", "multitask": True, "img_size": None, "lr": 0.001, "seed": 0, "out_dir": "a"}
    info = {"img_size": 224, "pretrained": False, "data_root": "/data/MURA-v1.1", "epochs": 10}
    first = run_settings(write_folder(tmp_path / "a", info, base), info)
    again = {**base, "seed": 3, "out_dir": "b", "num_workers": 4, "progress": False, "img_size": 224}
    assert run_settings(write_folder(tmp_path / "b", {**info, "seed": 3}, again), info) == first
    other_lr = run_settings(write_folder(tmp_path / "c", info, {**base, "lr": 0.0003}), info)
    assert {name for name in first if first[name] != other_lr[name]} == {"lr"}
    assert first["ema_decay"] == 0.0  # a field config.json predates: its default
    assert run_settings(write_folder(tmp_path / "f", info, {**base, "dataset": "mura"}), info) == first  # auto: mura
    manifests = [
        run_settings(write_folder(tmp_path / name, info, {**base, "data_root": f"/data/{name}.csv"}), info)
        for name in ("m1", "m2")
    ]  # run.json records a manifest's folder: two manifests of one folder are two data sets
    assert manifests[0]["data_root"] == "/data/m1.csv" and manifests[1]["data_root"] == "/data/m2.csv"
    relative = {**base, "data_root": str(tmp_path / "x" / ".." / "data")}
    absolute = {**base, "data_root": str(tmp_path / "data")}
    no_root = {"img_size": 224}
    assert (
        run_settings(write_folder(tmp_path / "d", no_root, relative), no_root)["data_root"]
        == run_settings(write_folder(tmp_path / "e", no_root, absolute), no_root)["data_root"]
    )


def test_a_folder_without_config_json_is_its_own_experiment(tmp_path):
    index = write_test_images(tmp_path / "images", n_studies=10)
    fabricate_run(tmp_path / "runs", index, "resnet50", "multitask", 0, False, "with_config", False)
    fabricate_run(tmp_path / "runs", index, "resnet50", "multitask", 1, False, "without_config", False, False, 0)
    (tmp_path / "runs" / "without_config" / "config.json").unlink()
    runs = load_runs(tmp_path / "runs")
    assert len(seed_groups(runs)) == 2
    assert {run.path.name: run.setting for run in runs}["without_config"] == "no config.json"


# ----------------------------------------------------------------------------- datasets


def fracatlas_index(folder: Path, n_studies: int = 30) -> pd.DataFrame:
    """A FracAtlas-like test set: its body parts, split 'test', no patients (one per study)."""
    index = write_test_images(folder, n_studies=n_studies, seed=3)
    study_number = index["study"].str.extract(r"patient(\d+)", expand=False).astype(int)
    index["body_part"] = [FRACATLAS["body_parts"][n % 5] for n in study_number]
    index["split"] = "test"
    index["study"] = [f"test/{part}/image{n:03d}" for part, n in zip(index["body_part"], study_number)]
    index["patient"] = index["study"]
    return index


@pytest.fixture(scope="module")
def fracatlas_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fracatlas")
    index = fracatlas_index(root / "images")
    for seed, variant in enumerate(("multitask", "single_task")):
        folder = fabricate_run(
            root / "runs", index, "custom_cnn", variant, seed, False, checkpoint=variant == "multitask",
            recorded_seed=0, dataset=FRACATLAS,
        )  # fmt: skip
        info = json.loads((folder / "run.json").read_text())
        (folder / "run.json").write_text(json.dumps({**info, "test_split": "test"}))
    return root / "runs"


@pytest.fixture(scope="module")
def fracatlas_report(fracatlas_runs, tmp_path_factory) -> dict[str, Path]:
    with pytest.warns(UserWarning, match="custom_cnn_single_task"):  # no best.pt: no gallery
        return write_report(
            fracatlas_runs, tmp_path_factory.mktemp("out"), "fabricated", synthetic=False, n_resamples=5
        )


def test_a_fracatlas_report_names_its_dataset_labels_and_source(fracatlas_report):
    index = fracatlas_report["index"].read_text()
    assert index.splitlines()[0] == "# FracAtlas: model comparison (fractured vs not fractured)"
    assert "SYNTHETIC" not in index
    assert f"- **Source:** FracAtlas. Cite: {FRACATLAS['citation']}. Licence: CC BY 4.0." in index
    assert "- **Test set:** FracAtlas *test*" in index
    assert "positive class is **fractured**, its negative class **not fractured**" in index
    assert "MURA" not in index and "abnormal" not in index  # no MURA label, baselines or test set
    assert "Test set: FracAtlas test." in index and "FracAtlas records no patients" in index
    for key in ("comparison_md", "ablation_md"):
        assert "MURA" not in fracatlas_report[key].read_text()
    ablation = fracatlas_report["ablation_md"].read_text()
    assert "5 image resamples shared by both sides" in ablation and "patient resamples" not in ablation


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The matplotlib figures the report draws (not saved)."""
    figures = []

    def keep(figure, path):
        figures.append(figure)
        return Path(path)

    monkeypatch.setattr(figures_module, "_save", keep)
    monkeypatch.setattr(galleries_module, "_save", keep)
    return figures


def texts(figure) -> str:
    """Every title, axis label, tick label, legend and text of a figure, one string."""
    parts = [text.get_text() for text in figure.findobj(lambda artist: hasattr(artist, "get_text"))]
    return "\n".join(part for part in parts if part)


def test_fracatlas_figures_use_its_body_parts_and_labels(fracatlas_runs, drawn, tmp_path):
    runs = load_runs(fracatlas_runs)
    assert runs[0].dataset["body_parts"] == FRACATLAS["body_parts"]
    assert list(body_part_kappas(runs).index) == FRACATLAS["body_parts"]
    plot_per_body_part_kappa(runs, tmp_path / "parts.png")
    plot_confusion_matrices(runs, tmp_path / "confusion.png")
    plot_reliability(runs, tmp_path / "reliability.png")
    plot_roc(runs, "study", tmp_path / "roc.png")
    plot_training_curves(runs, tmp_path / "curves.png")
    cam_gallery(runs[0], tmp_path / "gallery.png", per_group=1)
    parts, confusion, reliability, roc, curves, gallery = (texts(figure) for figure in drawn)
    assert all(f"{part.title()}\n(" in parts for part in FRACATLAS["body_parts"]) and "Elbow" not in parts
    assert "not fractured" in confusion and "FracAtlas test" in confusion
    assert "Observed fraction fractured" in reliability and "FracAtlas test" in roc
    assert "MURA" not in curves and "FracAtlas" in curves
    assert "(fractured, flagged)" in gallery and "(not fractured, flagged)" in gallery
    assert not any("abnormal" in text for text in (parts, confusion, reliability, roc, curves, gallery))


def test_synthetic_data_get_the_banner_not_the_citation(fracatlas_runs, tmp_path):
    runs = tmp_path / "runs"
    folder = runs / "custom_cnn_single_task"
    folder.mkdir(parents=True)
    for name in ("test_predictions.csv", "history.csv", "config.json"):
        (folder / name).write_bytes((fracatlas_runs / "custom_cnn_single_task" / name).read_bytes())
    info = json.loads((fracatlas_runs / "custom_cnn_single_task" / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**info, "synthetic": True}))
    with pytest.warns(UserWarning, match="Grad-CAM"):
        written = write_report(runs, tmp_path / "out", "fabricated", synthetic=False, n_resamples=5)
    index = written["index"].read_text()
    assert index.startswith("> **SYNTHETIC SAMPLE") and "not FracAtlas" in index and "Cite:" not in index


def test_runs_of_two_datasets_are_refused_naming_their_folders(fracatlas_runs, tmp_path):
    runs = tmp_path / "runs"
    index = write_test_images(tmp_path / "images", n_studies=10)
    fabricate_run(runs, index, "resnet50", "multitask", 0, False, "mura_run", False)
    for name in ("run.json", "config.json", "test_predictions.csv"):
        (runs / "fracatlas_run").mkdir(exist_ok=True)
        (runs / "fracatlas_run" / name).write_bytes((fracatlas_runs / "custom_cnn_multitask" / name).read_bytes())
    loaded = load_runs(runs)  # loading is fine (one run is picked from such folders elsewhere) ...
    assert {run.dataset["title"] for run in loaded} == {"FracAtlas", MURA_DATASET["title"]}
    match = r"2 datasets.*FracAtlas \(fracatlas\): fracatlas_run.*MURA-v1.1 \(mura\): mura_run"
    with pytest.raises(ValueError, match=match):  # ... pooling them is not
        write_report(runs, tmp_path / "out", "fabricated", synthetic=False, n_resamples=5)
    assert not (tmp_path / "out" / "index.md").exists()
    for pool in (seed_groups, lambda r: report_bootstrap(r, 5)):
        with pytest.raises(ValueError, match="datasets"):
            pool(loaded)


def test_a_malformed_dataset_entry_names_the_run_json(fracatlas_runs, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "test_predictions.csv").write_bytes(
        (fracatlas_runs / "custom_cnn_multitask" / "test_predictions.csv").read_bytes()
    )
    (folder / "run.json").write_text(json.dumps({"model": "custom_cnn", "dataset": {"name": "fracatlas"}}))
    with pytest.raises(ValueError, match=r"broken/run.json.*dataset"):
        load_run(folder)


# ----------------------------------------------------------------------------- dropped resamples


def both_variants_tables(folder: Path, n_studies: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The comparison and ablation tables of one custom CNN in both variants on ``n_studies`` test
    studies (one patient each, half of them normal), on 200 shared patient resamples."""
    index = write_test_images(folder / "images", n_studies=n_studies)
    for variant in ("multitask", "single_task"):
        fabricate_run(folder / "runs", index, "custom_cnn", variant, 0, False, f"custom_cnn_{variant}_seed0", False)
    runs = load_runs(folder / "runs")
    bootstrap = report_bootstrap(runs, 200)
    return comparison_table(runs, bootstrap=bootstrap), ablation_table(runs, bootstrap)


def test_comparison_and_ablation_say_how_many_one_class_resamples_were_dropped(tmp_path):
    """Six patients: some patient resamples hold one class only. Both tables count them (the same
    count as every metric's NaNs) and their text says so; a large test set drops none and says nothing."""
    table, ablation = both_variants_tables(tmp_path / "few", 6)
    dropped = table.loc[table["kind"] == "run", "dropped_resamples"]
    assert (dropped > 0).all() and (dropped < 200).all() and dropped.nunique() == 1  # same resamples per row
    said = f"Dropped resamples: {int(dropped.iloc[0])} of 200 resamples held one class only"
    assert said in comparison_markdown(table)
    assert (ablation["dropped_resamples"] == dropped.iloc[0]).all()  # one-class resamples of both sides
    assert f"- {said}" in ablation_markdown(ablation, 200)

    table, ablation = both_variants_tables(tmp_path / "many", 60)
    assert (table.loc[table["kind"] == "run", "dropped_resamples"] == 0).all()
    assert "Dropped resamples" not in comparison_markdown(table) + ablation_markdown(ablation, 200)
