"""``mura compare`` on fabricated evaluation folders: thresholds recorded, warned about, or set for both sides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mura_utils.cli import main
from mura_utils.compare import load_evaluation


def predictions(n_studies: int = 60, seed: int = 0) -> pd.DataFrame:
    """Two images per study, two studies per patient, probabilities near the decision boundary."""
    rng = np.random.default_rng(seed)
    rows = []
    for study in range(n_studies):
        label = study % 2
        for image in range(2):
            rows.append(
                {
                    "path": f"/data/valid/XR_HAND/patient{study // 2:03d}/study{study % 2 + 1}/image{image}.png",
                    "split": "valid",
                    "body_part": "HAND",
                    "patient": f"{study // 2:05d}",
                    "study": f"valid/XR_HAND/patient{study // 2:03d}/study{study % 2 + 1}",
                    "label": label,
                    "probability": float(np.clip(0.45 + 0.1 * label + rng.normal(0, 0.08), 0, 1)),
                }
            )
    return pd.DataFrame(rows)


def run_folder(folder: Path, table: pd.DataFrame, threshold: float) -> Path:
    """A run folder: test_predictions.csv + test_metrics.json (whose metrics use 0.5)."""
    folder.mkdir(parents=True)
    table.to_csv(folder / "test_predictions.csv", index=False)
    (folder / "test_metrics.json").write_text(json.dumps({"threshold": threshold, "image_threshold": threshold}))
    return folder


def evaluation_folder(folder: Path, table: pd.DataFrame, threshold: float) -> Path:
    """A `mura evaluate --threshold val` folder: predictions.csv + metrics.json at the validation threshold."""
    folder.mkdir(parents=True)
    table.to_csv(folder / "predictions.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps({"threshold": threshold, "image_threshold": threshold}))
    return folder


@pytest.fixture
def same_model(tmp_path) -> tuple[Path, Path]:
    """One model's predictions twice: as its run folder (0.5) and as an evaluation at its validation threshold."""
    table = predictions()
    return run_folder(tmp_path / "run", table, 0.5), evaluation_folder(tmp_path / "evaluate", table, 0.43)


def test_compare_warns_when_the_two_thresholds_differ(same_model, tmp_path, capsys):
    a, b = same_model
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "out"), "--bootstrap", "50"]) == 0
    result = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert (result["a"]["threshold"], result["b"]["threshold"]) == (0.5, 0.43)
    assert result["metrics"]["study_kappa"]["delta"] != 0  # the same predictions: only the threshold moved it
    assert result["metrics"]["study_auroc"]["delta"] == 0 and result["metrics"]["image_auroc"]["delta"] == 0
    expected = "thresholds differ (A 0.5, B 0.43): kappa/sensitivity/specificity deltas include the threshold change"
    assert expected in result["threshold_warning"]
    assert expected in (tmp_path / "out" / "compare.md").read_text()
    assert f"warning: {expected}" in capsys.readouterr().out


def test_compare_at_one_threshold_for_both_sides(same_model, tmp_path, capsys):
    a, b = same_model
    args = ["compare", str(a), str(b), "--out", str(tmp_path / "out"), "--bootstrap", "50", "--threshold", "0.43"]
    assert main(args) == 0
    result = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert result["a"]["threshold"] == result["b"]["threshold"] == 0.43 and result["threshold_given"] == 0.43
    assert all(value["delta"] == 0 for value in result["metrics"].values())
    assert result["threshold_warning"] is None and "thresholds differ" not in capsys.readouterr().out
    assert "thresholds differ" not in (tmp_path / "out" / "compare.md").read_text()
    assert main([*args[:-1], "1.5"]) == 2  # not a probability


def test_evaluation_keeps_text_columns_as_text(same_model):
    """Patient ids such as 00012 stay strings (the one prediction-CSV reader of report and compare)."""
    evaluation = load_evaluation(same_model[0])
    assert evaluation.predictions["patient"].iloc[0] == "00000" and evaluation.threshold == 0.5


def test_one_reader_for_report_and_compare_names_the_file_it_refuses(tmp_path):
    from mura_utils.report.runs import REQUIRED_COLUMNS, load_run

    folder = run_folder(tmp_path / "run", predictions().iloc[:0], 0.5)
    (folder / "run.json").write_text(json.dumps({"model": "resnet50", "variant": "multitask", "seed": 0}))
    for load in (load_run, load_evaluation):
        with pytest.raises(ValueError, match=r"test_predictions\.csv: no predictions"):
            load(folder)
    predictions().drop(columns="body_part").to_csv(folder / "test_predictions.csv", index=False)
    with pytest.raises(ValueError, match=r"test_predictions\.csv: missing column\(s\) \['body_part'\]"):
        load_run(folder)
    assert load_evaluation(folder).predictions["patient"].iloc[0] == "00000" and "body_part" in REQUIRED_COLUMNS
