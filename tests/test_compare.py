"""``mura compare`` on fabricated evaluation folders: thresholds recorded, warned about, or set for both sides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mura_utils.cli import main
from mura_utils.evaluation.compare import load_evaluation


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


def test_smallest_p_is_written_as_a_bound(tmp_path, capsys):
    """A is better on every one of 999 resamples: p is its floor 2/1000, a bound, never "p = 0.002"."""
    table = predictions()
    a = run_folder(tmp_path / "a", table, 0.5)
    b = run_folder(tmp_path / "b", table.assign(probability=1 - table["probability"]), 0.5)  # reversed ranking
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "out"), "--bootstrap", "999"]) == 0
    result = json.loads((tmp_path / "out" / "compare.json").read_text())
    auroc = result["metrics"]["study_auroc"]
    assert auroc["p"] == pytest.approx(0.002) and auroc["p_is_bound"] is True and auroc["ci"][0] > 0
    markdown = (tmp_path / "out" / "compare.md").read_text()
    assert "| ≤ 0.002 |" in markdown and "| 0.002 |" not in markdown
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("study_auroc: A - B = ")]
    assert printed[0].endswith("p ≤ 0.002")  # the CLI line says it too
    assert "Dropped resamples" not in markdown and all(v["dropped_resamples"] == 0 for v in result["metrics"].values())


def test_p_and_interval_agree_in_compare_json(tmp_path):
    """Two close models: whatever the outcome, an interval that excludes 0 never comes with p > 0.05."""
    table = predictions(n_studies=200, seed=1)
    noisy = table.assign(
        probability=np.clip(table["probability"] + np.random.default_rng(2).normal(0, 0.05, 400), 0, 1)
    )
    a, b = run_folder(tmp_path / "a", table, 0.5), run_folder(tmp_path / "b", noisy, 0.5)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "out"), "--bootstrap", "300"]) == 0
    for value in json.loads((tmp_path / "out" / "compare.json").read_text())["metrics"].values():
        low, high = value["ci"]
        assert (low > 0 or high < 0) == (value["p"] <= 0.05)


def single_study_patients(n_patients: int = 6) -> pd.DataFrame:
    """One study per patient, half of them normal: some patient resamples hold one class only."""
    table = predictions(n_studies=2 * n_patients).iloc[::4].reset_index(drop=True)  # one image per patient
    return table.assign(label=[0, 1] * (n_patients // 2))


def test_dropped_resamples_are_counted_and_said(tmp_path):
    table = single_study_patients()
    a = run_folder(tmp_path / "a", table, 0.5)
    b = run_folder(tmp_path / "b", table.assign(probability=table["probability"][::-1].to_numpy()), 0.5)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "out"), "--bootstrap", "400"]) == 0
    result = json.loads((tmp_path / "out" / "compare.json").read_text())
    dropped = {name: value["dropped_resamples"] for name, value in result["metrics"].items()}
    assert len(set(dropped.values())) == 1 and 0 < dropped["study_auroc"] < 400  # the same resamples for every metric
    markdown = (tmp_path / "out" / "compare.md").read_text()
    assert f"**Dropped resamples:** {dropped['study_auroc']} of 400 resamples held one class only" in markdown
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "few"), "--bootstrap", "20"]) == 0
    few = json.loads((tmp_path / "few" / "compare.json").read_text())["metrics"]["study_kappa"]
    assert np.isnan(few["ci"]).all() and few["p"] > 0.05
    assert (
        "**No interval:** a 95% interval needs at least 39 usable resamples"
        in (tmp_path / "few" / "compare.md").read_text()
    )


def test_compare_refuses_nan_probabilities_naming_the_file(tmp_path, capsys):
    table = predictions()
    table.loc[[4, 9], "probability"] = np.nan  # a diverged model
    a, b = run_folder(tmp_path / "a", predictions(), 0.5), run_folder(tmp_path / "b", table, 0.5)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "out"), "--bootstrap", "50"]) == 2
    error = capsys.readouterr().err
    assert str(b / "test_predictions.csv") in error and "2 of 120 probabilities" in error and "2 NaN" in error
    assert table["path"][4] in error and not (tmp_path / "out").exists()
