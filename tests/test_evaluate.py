"""Study-level aggregation and metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mura_utils.evaluation.bootstrap import level_resamples, patient_bootstrap
from mura_utils.evaluation.metrics import point_metrics, study_table
from mura_utils.evaluation.predictions import choose_threshold, compute_metrics, predictions_table


def make_predictions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "study": ["a", "a", "b", "c", "c", "c", "d"],
            "body_part": ["WRIST", "WRIST", "WRIST", "HAND", "HAND", "HAND", "HAND"],
            "label": [1, 1, 0, 1, 1, 1, 0],
            "probability": [0.9, 0.3, 0.2, 0.4, 0.45, 0.5, 0.6],
            "predicted_body_part": ["WRIST", "HAND", "WRIST", "HAND", "HAND", "HAND", "HAND"],
        }
    )


def test_study_probability_is_the_mean_of_its_images():
    studies = study_table(make_predictions()).set_index("study")
    assert studies.loc["a", "probability"] == pytest.approx(0.6)
    assert studies.loc["c", "probability"] == pytest.approx(0.45)
    assert studies.loc["c", "images"] == 3


def test_binary_metrics_by_hand():
    metrics = point_metrics([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1])
    assert metrics["accuracy"] == 0.5
    assert metrics["sensitivity"] == 0.5 and metrics["specificity"] == 0.5
    assert metrics["kappa"] == pytest.approx(0.0)
    assert metrics["auroc"] == pytest.approx(0.75)
    assert point_metrics([1, 1], [0.2, 0.9])["auroc"] is None  # undefined, not invented


def test_compute_metrics_shape_and_values():
    metrics = compute_metrics(make_predictions())
    assert set(metrics["image"]) == {"accuracy", "auroc", "kappa", "sensitivity", "specificity", "f1"}
    assert set(metrics["study"]) == set(metrics["image"])
    # studies: a 0.6 (1) -> 1, b 0.2 (0) -> 0, c 0.45 (1) -> 0, d 0.6 (0) -> 1
    assert metrics["study"]["accuracy"] == 0.5
    assert metrics["n_studies"] == 4 and metrics["n_images"] == 7
    assert metrics["per_body_part"]["WRIST"] == {"study_kappa": 1.0, "study_auroc": 1.0, "studies": 2}
    assert metrics["body_part_accuracy"] == pytest.approx(6 / 7)


def test_threshold_is_chosen_on_validation_studies():
    threshold = choose_threshold(make_predictions())
    metrics = compute_metrics(make_predictions(), threshold)
    assert metrics["study"]["kappa"] >= compute_metrics(make_predictions())["study"]["kappa"]


def test_weighted_resamples_equal_drawing_whole_patients_with_their_studies():
    """The vectorised bootstrap (patients weighted by their draw counts) gives, on every resample, the
    study AUROC of the resample drawn by hand: each drawn patient copied with all its studies (copies
    renamed apart), so a patient's studies always come together."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    predictions = pd.DataFrame(
        {
            "patient": np.repeat(np.arange(60), 4).astype(str),
            "study": np.repeat(np.arange(120), 2).astype(str),
            "body_part": "HAND",
            "label": np.repeat(labels, 4),
            "probability": np.repeat(np.clip(labels * 0.3 + rng.random(60) * 0.7, 0, 1), 4),
        }
    )
    bootstrap = patient_bootstrap(predictions, n_resamples=40)
    vectorised = level_resamples(predictions, bootstrap)["study"]["auroc"]
    codes = bootstrap.codes(predictions["patient"])
    rows_by_patient = [np.flatnonzero(codes == patient) for patient in range(bootstrap.n_clusters)]
    by_hand = []
    for counts in bootstrap.counts:
        drawn = np.repeat(np.arange(len(counts)), counts)
        rows = np.concatenate([rows_by_patient[patient] for patient in drawn])
        copies = np.repeat(np.arange(len(drawn)), [len(rows_by_patient[patient]) for patient in drawn])
        sample = predictions.iloc[rows].copy()
        sample["study"] = sample["study"] + "#" + copies.astype(str)
        assert (sample.groupby("patient")["study"].nunique() % 2 == 0).all()
        studies = study_table(sample)
        by_hand.append(point_metrics(studies["label"], studies["probability"])["auroc"])
    assert np.allclose(vectorised, np.array(by_hand, dtype=float), equal_nan=True)
    low, high = bootstrap.interval(vectorised)
    assert 0.5 < low < point_metrics(predictions["label"], predictions["probability"])["auroc"] < high <= 1.0


def test_image_metrics_use_the_image_threshold_and_study_metrics_the_study_one():
    predictions = make_predictions()
    metrics = compute_metrics(predictions, threshold=0.44)
    assert metrics["threshold"] == 0.44 and metrics["image_threshold"] == 0.5
    assert metrics["image"] == point_metrics(predictions["label"], predictions["probability"], 0.5)
    studies = study_table(predictions)
    assert metrics["study"] == point_metrics(studies["label"], studies["probability"], 0.44)


def test_predictions_table_rejects_duplicates_and_gaps():
    index = pd.DataFrame({"study": ["a", "b"], "label": [0, 1], "body_part": ["HAND", "HAND"]})
    outputs = {"position": np.array([1, 0]), "probability": np.array([0.7, 0.2])}
    table = predictions_table(index, outputs)
    assert table["probability"].tolist() == [0.2, 0.7]
    with pytest.raises(ValueError, match="duplicates"):
        predictions_table(index, {"position": np.array([0, 0]), "probability": np.array([0.1, 0.2])})


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, untrained_checkpoint) -> list:
    """Two untrained custom CNNs with different initial weights (prediction differs, cost ~0 s)."""
    import torch

    folder = tmp_path_factory.mktemp("checkpoints")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(untrained_checkpoint(folder / f"seed{seed}.pt", threshold=0.5))
    return paths


@pytest.fixture(scope="module")
def evaluations(two_checkpoints, tiny_mura, tmp_path_factory) -> list:
    from mura_utils.cli import main

    folders = []
    for path in two_checkpoints:
        out = tmp_path_factory.mktemp(f"eval_{path.stem}")
        args = ["evaluate", "--checkpoint", str(path), "--data-root", str(tiny_mura), "--out", str(out)]
        args += ["--device", "cpu", "--no-cache", "--no-progress", "--bootstrap", "200"]
        assert main(args) == 0
        folders.append(out)
    return folders


def test_cli_evaluate_writes_patient_intervals(evaluations):
    import json

    metrics = json.loads((evaluations[0] / "metrics.json").read_text())
    predictions = pd.read_csv(evaluations[0] / "predictions.csv")
    assert metrics["n_patients"] == predictions["patient"].nunique() > 0
    ci = metrics["ci"]
    assert (ci["unit"], ci["level"], ci["resamples"]) == ("patient", 0.95, 200)
    for level in ("study", "image"):
        assert set(ci[level]) == {"accuracy", "auroc", "kappa", "sensitivity", "specificity", "f1"}
        for key, (low, high) in ci[level].items():
            point = metrics[level][key]
            assert low <= high and (point is None or low - 1e-9 <= point <= high + 1e-9), (level, key)
    # the intervals are the patient bootstrap of predictions.csv itself (patients as written there)
    from mura_utils.evaluation.bootstrap import confidence_intervals

    again = confidence_intervals(predictions.astype({"patient": str, "study": str}), 200, metrics["threshold"])
    assert again["study"]["auroc"] == pytest.approx(ci["study"]["auroc"])
    assert again["image"]["kappa"] == pytest.approx(ci["image"]["kappa"])


def test_cli_evaluate_bootstrap_zero_writes_no_interval(two_checkpoints, tiny_mura, tmp_path):
    import json

    from mura_utils.cli import main

    args = ["evaluate", "--checkpoint", str(two_checkpoints[0]), "--data-root", str(tiny_mura), "--out", str(tmp_path)]
    assert main([*args, "--device", "cpu", "--no-cache", "--no-progress", "--bootstrap", "0"]) == 0
    assert "ci" not in json.loads((tmp_path / "metrics.json").read_text())


def test_cli_compare_a_with_itself_is_exactly_zero(evaluations, tmp_path):
    import json

    from mura_utils.cli import main

    assert (
        main(["compare", str(evaluations[0]), str(evaluations[0]), "--out", str(tmp_path), "--bootstrap", "100"]) == 0
    )
    result = json.loads((tmp_path / "compare.json").read_text())
    assert result["unit"] == "patient" and result["resamples"] == 100 and result["n_patients"] > 0
    assert set(result["metrics"]) == {"study_kappa", "study_auroc", "image_auroc"}
    for value in result["metrics"].values():
        assert value["delta"] == 0 and value["ci"] == [0, 0] and value["p"] == 1
    assert "A − B" in (tmp_path / "compare.md").read_text()


def test_cli_compare_delta_is_the_difference_of_the_two_metrics(evaluations, tmp_path):
    import json

    from mura_utils.cli import main

    assert (
        main(["compare", str(evaluations[0]), str(evaluations[1]), "--out", str(tmp_path), "--bootstrap", "100"]) == 0
    )
    result = json.loads((tmp_path / "compare.json").read_text())["metrics"]
    a, b = (json.loads((folder / "metrics.json").read_text()) for folder in evaluations)
    assert result["study_kappa"]["delta"] == pytest.approx(a["study"]["kappa"] - b["study"]["kappa"])
    assert result["study_auroc"]["delta"] == pytest.approx(a["study"]["auroc"] - b["study"]["auroc"])
    assert result["image_auroc"]["delta"] == pytest.approx(a["image"]["auroc"] - b["image"]["auroc"])
    low, high = result["study_auroc"]["ci"]
    assert low <= result["study_auroc"]["delta"] <= high


def test_cli_compare_refuses_evaluations_of_different_images(evaluations, tmp_path, capsys):
    import shutil

    from mura_utils.cli import main

    other = tmp_path / "other"
    shutil.copytree(evaluations[1], other)
    predictions = pd.read_csv(other / "predictions.csv")
    predictions.iloc[3:].to_csv(other / "predictions.csv", index=False)
    assert main(["compare", str(evaluations[0]), str(other), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "do not cover the same images" in error and str(other) in error and str(evaluations[0]) in error
    assert "3 image(s) only in" in error
    assert not (tmp_path / "out" / "compare.json").exists()
