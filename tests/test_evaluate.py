"""Study-level aggregation and metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mura_utils.evaluate import (
    binary_metrics,
    bootstrap_ci,
    choose_threshold,
    compute_metrics,
    predictions_table,
    study_table,
)


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
    metrics = binary_metrics([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1])
    assert metrics["accuracy"] == 0.5
    assert metrics["sensitivity"] == 0.5 and metrics["specificity"] == 0.5
    assert metrics["kappa"] == pytest.approx(0.0)
    assert metrics["auroc"] == pytest.approx(0.75)
    assert binary_metrics([1, 1], [0.2, 0.9])["auroc"] is None  # undefined, not invented


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


def test_bootstrap_ci_brackets_the_estimate_and_resamples_studies():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    predictions = pd.DataFrame(
        {
            "study": np.repeat(np.arange(100), 2),
            "body_part": "HAND",
            "label": np.repeat(labels[:100], 2),
            "probability": np.clip(np.repeat(labels[:100], 2) * 0.3 + rng.random(200) * 0.7, 0, 1),
        }
    )
    auroc = lambda p: binary_metrics(study_table(p)["label"], study_table(p)["probability"])["auroc"]  # noqa: E731
    low, high = bootstrap_ci(predictions, auroc, n_resamples=200)
    assert low < auroc(predictions) < high
    assert 0.5 < low and high <= 1.0


def test_predictions_table_rejects_duplicates_and_gaps():
    index = pd.DataFrame({"study": ["a", "b"], "label": [0, 1], "body_part": ["HAND", "HAND"]})
    outputs = {"position": np.array([1, 0]), "probability": np.array([0.7, 0.2])}
    table = predictions_table(index, outputs)
    assert table["probability"].tolist() == [0.2, 0.7]
    with pytest.raises(ValueError, match="duplicates"):
        predictions_table(index, {"position": np.array([0, 0]), "probability": np.array([0.1, 0.2])})
