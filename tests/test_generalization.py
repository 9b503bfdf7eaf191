"""A MURA checkpoint on the external fracture set: de-duplicated, two thresholds, CIs, no tuning."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mura_utils.cli import main as cli_main
from mura_utils.data.external import deduplicate, load_external_index
from mura_utils.evaluation.external_eval import evaluate_external
from mura_utils.synthetic import make_external_sample


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, untrained_checkpoint):
    return untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", threshold=0.42)


@pytest.fixture(scope="module")
def external_root(tmp_path_factory):
    return make_external_sample(tmp_path_factory.mktemp("external"))


def test_evaluation_runs_on_the_deduplicated_set_with_both_thresholds(tmp_path, checkpoint, external_root):
    written = evaluate_external(
        str(external_root), {"cnn": str(checkpoint)}, str(tmp_path), n_resamples=30, device="cpu"
    )
    metrics = pd.read_csv(written["external_csv"])
    assert list(metrics["threshold"]) == ["0.5", "MURA validation (0.420)"]
    expected = deduplicate(load_external_index(external_root, progress=False))
    assert (metrics["images"] == len(expected)).all()
    for key in ("auroc", "balanced_accuracy", "sensitivity", "specificity", "kappa"):
        assert (metrics[f"{key}_ci_low"] <= metrics[key] + 1e-9).all() and (
            metrics[key] <= metrics[f"{key}_ci_high"] + 1e-9
        ).all()
    predictions = pd.read_csv(tmp_path / "external_predictions_cnn.csv")
    assert set(predictions["path"]) == set(expected["path"])
    assert predictions["predicted_body_part"].notna().all()  # the model's own guess, never a dummy label
    report = (tmp_path / "external.md").read_text()
    assert "abnormal" in report and "fractured" in report
    assert "unreadable" in report.lower()
    assert (tmp_path / "figures" / "roc_external.png").stat().st_size > 5000


def test_cli_predict_on_a_study_folder_and_single_files(tmp_path, checkpoint, tiny_mura, capsys):
    study = sorted((tiny_mura / "valid").glob("XR_*/patient*/study*"))[0]
    image = sorted((tiny_mura / "train").glob("XR_*/patient*/study*/*.png"))[0]
    assert (
        cli_main(
            [
                "predict",
                str(study),
                str(image),
                "--checkpoint",
                str(checkpoint),
                "--format",
                "json",
                "--device",
                "cpu",
                "--cam-dir",
                str(tmp_path / "cams"),
            ]
        )
        == 0
    )
    studies = json.loads(capsys.readouterr().out)
    assert len(studies) == 2
    assert len(list((tmp_path / "cams").glob("*.png"))) == len(list(study.glob("*.png"))) + 1


def test_cli_predict_names_a_bad_file(tmp_path, checkpoint, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    assert cli_main(["predict", str(bad), "--checkpoint", str(checkpoint)]) == 2
    assert "notes.txt" in capsys.readouterr().err


def test_external_intervals_resample_whole_duplicate_groups():
    """Each near-duplicate group counted as one unit: 4 copies per group widen the interval about
    2x against treating the 4 copies as independent images (as an image bootstrap would)."""
    import numpy as np

    from mura_utils.evaluation.external_eval import external_metrics

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(120) % 2, 4)
    scores = np.repeat(rng.normal(0, 1.2, 120), 4) + 0.8 * labels + rng.normal(0, 0.05, 480)
    predictions = pd.DataFrame(
        {
            "path": [f"image{i}.png" for i in range(480)],
            "label": labels,
            "probability": 1 / (1 + np.exp(-scores)),
            "near_group": np.repeat(np.arange(120), 4),
            "threshold": 0.42,
        }
    )
    grouped = external_metrics(predictions, n_resamples=500).iloc[0]
    independent = external_metrics(predictions.assign(near_group=np.arange(480)), n_resamples=500).iloc[0]
    assert grouped["groups"] == 120 and independent["groups"] == 480
    assert grouped["bootstrap_unit"] == "near_group" and grouped["bootstrap_resamples"] == 500
    ratio = (grouped["auroc_ci_high"] - grouped["auroc_ci_low"]) / (
        independent["auroc_ci_high"] - independent["auroc_ci_low"]
    )
    assert ratio > 1.5
    assert grouped["auroc"] == pytest.approx(independent["auroc"])  # the point estimate does not change
