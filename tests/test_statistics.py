"""The patient bootstrap and the one definition of each metric, on planted prediction tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from mura_utils.evaluation.bootstrap import (
    ClusterBootstrap,
    bootstrap_p_value,
    confidence_intervals,
    interval_rank,
    level_resamples,
    p_value_is_bound,
    paired_differences,
    patient_bootstrap,
    resample_counts,
    verdict,
)
from mura_utils.evaluation.metrics import (
    METRIC_KEYS,
    InvalidProbabilities,
    point_metrics,
    study_scores,
    study_table,
    weighted_auroc,
    weighted_metrics,
)


def planted_tree(n_patients: int = 150, studies_per_patient: int = 4, seed: int = 0) -> pd.DataFrame:
    """Each patient: 4 studies of one label, 2 images each, scores sharing a strong patient effect
    (so a patient's studies move together and are not independent evidence)."""
    rng = np.random.default_rng(seed)
    rows = []
    for patient in range(n_patients):
        label = int(patient % 2)
        patient_effect = rng.normal(0, 1.2)
        for study in range(studies_per_patient):
            study_score = 0.8 * label + patient_effect + rng.normal(0, 0.15)
            for image in range(2):
                rows.append(
                    {
                        "path": f"valid/p{patient}/s{study}/image{image}.png",
                        "patient": f"p{patient:04d}",
                        "study": f"valid/XR_HAND/p{patient:04d}/study{study}",
                        "body_part": "HAND",
                        "label": label,
                        "probability": 1 / (1 + np.exp(-(study_score + rng.normal(0, 0.1)))),
                    }
                )
    return pd.DataFrame(rows)


def width(interval) -> float:
    return interval[1] - interval[0]


def test_weighted_metrics_equal_sklearn_on_repeated_rows():
    """A weight k is the unit drawn k times: the metrics must equal sklearn's on the repeated rows."""
    rng = np.random.default_rng(1)
    labels, scores = rng.integers(0, 2, 120), np.round(rng.random(120), 1)  # many ties
    weights = rng.integers(0, 3, (5, 120))
    values = weighted_metrics(labels, scores, 0.5, weights)
    for row, weight in enumerate(weights):
        repeated_labels, repeated_scores = np.repeat(labels, weight), np.repeat(scores, weight)
        assert values["auroc"][row] == pytest.approx(roc_auc_score(repeated_labels, repeated_scores))
        assert values["kappa"][row] == pytest.approx(cohen_kappa_score(repeated_labels, repeated_scores >= 0.5))
    assert np.isnan(weighted_auroc(np.ones(4), np.arange(4.0), np.ones((1, 4))))[0]


def test_kappa_of_a_one_class_sample_is_defined_as_zero():
    # truth and prediction both all abnormal: p_e = 1, kappa 0/0 -> defined as 0 (sklearn says NaN)
    metrics = point_metrics([1, 1, 1], [0.9, 0.8, 0.7])
    assert metrics["kappa"] == 0.0 and metrics["auroc"] is None and metrics["specificity"] is None
    # one true class, mixed predictions: the formula itself gives 0
    assert point_metrics([1, 1, 1, 1], [0.9, 0.8, 0.1, 0.2])["kappa"] == 0.0


def test_one_class_resamples_are_dropped_from_every_metric_and_counted():
    """A resample of one class is left out of every metric (not only AUROC: its kappa 0 is a
    definition, not evidence), and metrics.json's ci says how many were left out."""
    bootstrap = ClusterBootstrap(["a", "b"], n_resamples=200, seed=0)
    values = bootstrap.resampled_metrics([1, 0], [0.9, 0.1], ["a", "b"], 0.5)
    one_class = (bootstrap.counts == 0).any(axis=1)
    assert 0 < one_class.sum() < 200
    for key in METRIC_KEYS:
        assert np.isnan(values[key][one_class]).all() and not np.isnan(values[key][~one_class]).any(), key
        assert bootstrap.dropped(values[key]) == one_class.sum()
    # six single-study patients: some resamples draw only normal or only abnormal patients
    predictions = pd.DataFrame(
        {
            "path": [f"p{i}/image.png" for i in range(6)],
            "patient": [f"p{i}" for i in range(6)],
            "study": [f"p{i}/study1" for i in range(6)],
            "label": [0, 0, 0, 1, 1, 1],
            "probability": [0.1, 0.6, 0.3, 0.4, 0.8, 0.9],
        }
    )
    ci = confidence_intervals(predictions, n_resamples=500, seed=1)
    bootstrap = patient_bootstrap(predictions, n_resamples=500, seed=1)
    drawn = bootstrap.counts[:, bootstrap.codes(predictions["patient"])]
    expected = int(((drawn[:, :3].sum(axis=1) == 0) | (drawn[:, 3:].sum(axis=1) == 0)).sum())
    assert expected > 0
    assert ci["dropped_resamples"] == {level: {key: expected for key in METRIC_KEYS} for level in ("study", "image")}
    kept = level_resamples(predictions, bootstrap)["study"]["kappa"]
    assert ci["study"]["kappa"] == bootstrap.interval(kept[~np.isnan(kept)])


def test_resamples_keep_a_patients_studies_and_images_together():
    predictions = planted_tree(n_patients=30)
    bootstrap = patient_bootstrap(predictions, n_resamples=50)
    weights = next(bootstrap.blocks(predictions["patient"]))
    for _, rows in predictions.groupby("patient").indices.items():
        assert (weights[:, rows] == weights[:, rows[:1]]).all()  # one draw count per patient
    assert (bootstrap.counts.sum(axis=1) == 30).all()  # each resample draws as many patients as there are


def test_patient_interval_is_wider_than_a_study_interval_on_clustered_studies():
    predictions = planted_tree()
    patient = confidence_intervals(predictions, n_resamples=1000)
    studies = study_scores(predictions)
    study_bootstrap = ClusterBootstrap(studies["study"], 1000, seed=0, unit="study")
    study_level = study_bootstrap.resampled_metrics(studies["label"], studies["probability"], studies["study"], 0.5)
    ratio = width(patient["study"]["auroc"]) / width(study_bootstrap.interval(study_level["auroc"]))
    assert ratio > 1.5  # 4 near-identical studies per patient: about sqrt(4) = 2 in theory
    assert patient["unit"] == "patient" and patient["resamples"] == 1000


def test_patient_interval_matches_an_independent_patient_bootstrap():
    """Would fail for a bootstrap of images or studies: those intervals are ~2x narrower here."""
    predictions = planted_tree()
    ours = confidence_intervals(predictions, n_resamples=1000, seed=3)["study"]["auroc"]
    studies = study_scores(predictions)
    by_patient = {patient: rows for patient, rows in studies.groupby("cluster").indices.items()}
    patients = list(by_patient)
    rng = np.random.default_rng(123)
    reference = []
    for _ in range(1000):
        rows = np.concatenate([by_patient[patients[i]] for i in rng.integers(0, len(patients), len(patients))])
        reference.append(roc_auc_score(studies["label"].to_numpy()[rows], studies["probability"].to_numpy()[rows]))
    expected = np.percentile(reference, [2.5, 97.5])
    assert width(ours) == pytest.approx(width(expected), rel=0.2)
    assert ours[0] == pytest.approx(expected[0], abs=0.03) and ours[1] == pytest.approx(expected[1], abs=0.03)


def test_every_statistic_uses_the_same_resamples():
    predictions = planted_tree(n_patients=40)
    bootstrap = patient_bootstrap(predictions, n_resamples=100, seed=5)
    first = level_resamples(predictions, bootstrap)
    again = level_resamples(predictions, bootstrap)
    np.testing.assert_array_equal(first["study"]["auroc"], again["study"]["auroc"])
    other_seed = level_resamples(predictions, patient_bootstrap(predictions, n_resamples=100, seed=6))
    assert not np.array_equal(first["study"]["auroc"], other_seed["study"]["auroc"])


def test_stratified_resamples_keep_each_stratum_size():
    strata = np.array([0] * 10 + [1] * 3)
    counts = resample_counts(13, 200, seed=0, strata=strata)
    assert (counts[:, :10].sum(axis=1) == 10).all() and (counts[:, 10:].sum(axis=1) == 3).all()


def test_paired_difference_of_a_run_with_itself_is_exactly_zero():
    predictions = planted_tree(n_patients=40)
    bootstrap = patient_bootstrap(predictions, n_resamples=200)
    result = paired_differences([(predictions, predictions)], bootstrap)
    for value in result.values():
        assert value["delta"] == 0 and value["ci"] == [0.0, 0.0] and value["p"] == 1.0


def test_paired_difference_is_the_difference_of_the_separate_metrics():
    a = planted_tree(n_patients=60, seed=0)
    b = a.assign(probability=np.clip(a["probability"] + np.random.default_rng(9).normal(0, 0.2, len(a)), 0, 1))
    result = paired_differences([(a, b)], patient_bootstrap(a, n_resamples=300), thresholds=[(0.5, 0.4)])
    studies_a, studies_b = study_scores(a), study_scores(b)
    expected_kappa = (
        point_metrics(studies_a["label"], studies_a["probability"], 0.5)["kappa"]
        - point_metrics(studies_b["label"], studies_b["probability"], 0.4)["kappa"]
    )
    assert result["study_kappa"]["delta"] == pytest.approx(expected_kappa)
    assert result["image_auroc"]["delta"] == pytest.approx(
        roc_auc_score(a["label"], a["probability"]) - roc_auc_score(b["label"], b["probability"])
    )
    low, high = result["study_auroc"]["ci"]
    assert low < high and 0 <= result["study_auroc"]["p"] <= 1


def test_p_value_and_interval_always_agree():
    """The interval excludes 0 exactly when p <= 1 - level, for any number of resamples; with 999
    resamples of which 25 are <= 0, p = 0.052 and the interval must include 0 (np.percentile's
    interpolated 2.5% point lies above 0 there: the disagreement this replaces)."""
    bootstrap = ClusterBootstrap(["a", "b"], n_resamples=1)
    rng = np.random.default_rng(0)
    checked = 0
    for n in (39, 50, 99, 200, 999, 1000, 1234):
        for shift in np.linspace(0, 4, 17):
            deltas = np.round(rng.normal(shift, 1, n), 1)  # ties at 0 included
            low, high = bootstrap.interval(deltas)
            p = bootstrap_p_value(deltas)
            assert (low > 0 or high < 0) == (p <= 0.05), (n, shift, low, high, p)
            checked += p <= 0.05
    assert checked > 20  # both outcomes were exercised
    deltas = np.r_[-np.linspace(0.01, 0.25, 25), np.linspace(0.1, 1, 974)]
    assert bootstrap_p_value(deltas) == pytest.approx(0.052) and bootstrap.interval(deltas)[0] <= 0
    assert np.percentile(deltas, 2.5) > 0
    deltas[0] = 0.05  # 24 of 999 <= 0: p = 0.05, and now the interval excludes 0
    assert bootstrap_p_value(deltas) == pytest.approx(0.05) and bootstrap.interval(deltas)[0] > 0
    assert interval_rank(999, 0.95) == 25 and interval_rank(38, 0.95) == 0 and interval_rank(39, 0.95) == 1


def test_smallest_p_is_a_bound_and_too_few_resamples_give_no_interval():
    assert bootstrap_p_value(np.full(999, 0.1)) == pytest.approx(0.002) and p_value_is_bound(np.full(999, 0.1))
    assert not p_value_is_bound(np.r_[np.full(998, 0.1), -0.1]) and not p_value_is_bound(np.zeros(99))
    a = planted_tree(n_patients=40)
    b = a.assign(probability=0.5)  # uninformative: A is better on every resample
    result = paired_differences([(a, b)], patient_bootstrap(a, n_resamples=999))["study_auroc"]
    assert result["p"] == pytest.approx(2 / 1000) and result["p_is_bound"] and result["ci"][0] > 0
    assert result["dropped_resamples"] == 0
    few = paired_differences([(a, b)], patient_bootstrap(a, n_resamples=38))["study_auroc"]
    assert np.isnan(few["ci"]).all() and few["p"] == pytest.approx(2 / 39)  # p > 0.05: no interval may exclude 0
    assert "no interval" in verdict(few["delta"], few["ci"])


def test_invalid_probabilities_are_an_error_never_a_score():
    """A diverged model's NaN used to rank as the highest score (AUROC 1.0 here)."""
    with pytest.raises(InvalidProbabilities, match=r"1 of 3 probabilities .*1 NaN.*position 1 \(nan\)"):
        point_metrics([0, 1, 1], [0.2, np.nan, 0.7])
    assert issubclass(InvalidProbabilities, ValueError)
    for bad in (np.inf, -0.1, 1.5):
        with pytest.raises(InvalidProbabilities):
            weighted_metrics([0, 1, 1], [0.2, bad, 0.7], 0.5)
    predictions = planted_tree(n_patients=10)
    predictions.loc[[3, 5], "probability"] = [np.nan, np.inf]
    expected = r"runs/x/test_predictions\.csv: 2 of 80 probabilities .*1 NaN, 1 infinite.*" + predictions["path"][3]
    with pytest.raises(InvalidProbabilities, match=expected):
        study_table(predictions, source="runs/x/test_predictions.csv")
    with pytest.raises(InvalidProbabilities, match=expected):
        confidence_intervals(predictions, n_resamples=10, source="runs/x/test_predictions.csv")
    with pytest.raises(InvalidProbabilities, match="2 of 80"):
        paired_differences([(predictions, planted_tree(n_patients=10))], patient_bootstrap(predictions, 10))
    predictions["probability"] = np.linspace(-1, -0.1, 80)
    first_five = r"image0\.png \(-1\), .*image1\.png \(-0\.988608\), .*s2/image0\.png \(-0\.95443\) and 75 more"
    with pytest.raises(InvalidProbabilities, match=r"80 of 80 .*\(80 outside \[0, 1\]; .*" + first_five):
        study_table(predictions)


def test_verdict():
    assert "includes 0" in verdict(0.01, [-0.02, 0.04])
    assert "above 0" in verdict(0.05, [0.01, 0.09]) and "below 0" in verdict(-0.05, [-0.09, -0.01])
