"""Error analysis: the right studies are called mistakes, the right image explains each one."""

from __future__ import annotations

import pandas as pd
import pytest

from mura_utils.report.error_analysis import error_browser, error_cases, study_error_table


def _predictions() -> pd.DataFrame:
    rows = [
        # study, body_part, label, image probabilities
        ("s1", "WRIST", 1, [0.10, 0.30]),  # FN, study p 0.20 (confident)
        ("s2", "WRIST", 1, [0.40, 0.45]),  # FN, study p 0.425 (borderline)
        ("s3", "WRIST", 0, [0.95, 0.85]),  # FP, study p 0.90
        ("s4", "WRIST", 0, [0.10]),  # correct negative
        ("s5", "HAND", 1, [0.90, 0.20]),  # correct positive (p 0.55)
        ("s6", "HAND", 0, [0.70, 0.60]),  # FP, study p 0.65
    ]
    records = []
    for study, part, label, probabilities in rows:
        for number, probability in enumerate(probabilities, start=1):
            records.append(
                {
                    "path": f"{study}/image{number}.png",
                    "body_part": part,
                    "study": study,
                    "label": label,
                    "probability": probability,
                }
            )
    return pd.DataFrame(records)


def test_error_cases_are_study_level_most_confident_first_with_the_driving_image():
    cases = error_cases(_predictions(), threshold=0.5, per_part=2)
    assert list(zip(cases["body_part"], cases["error"], cases["study"])) == [
        ("HAND", "FP", "s6"),
        ("WRIST", "FN", "s1"),
        ("WRIST", "FN", "s2"),
        ("WRIST", "FP", "s3"),
    ]
    wrist_fn = cases.set_index("study").loc["s1"]
    assert wrist_fn["study_probability"] == pytest.approx(0.20)
    assert wrist_fn["path"] == "s1/image1.png" and wrist_fn["probability"] == pytest.approx(0.10)  # the most missed
    assert cases.set_index("study").loc["s3", "path"] == "s3/image1.png"  # the most alarming image


def test_error_cases_per_part_keeps_the_most_confident():
    cases = error_cases(_predictions(), threshold=0.5, per_part=1)
    assert set(cases["study"]) == {"s1", "s3", "s6"}


def test_study_error_table_counts_mistakes_per_body_part_and_overall():
    table = study_error_table(_predictions(), threshold=0.5).set_index("body_part")
    assert list(table.index) == ["HAND", "WRIST", "all"]  # BODY_PARTS order, then all
    assert table.loc["WRIST", ["studies", "abnormal", "false_negatives", "false_positives"]].tolist() == [4, 2, 2, 1]
    assert table.loc["WRIST", "sensitivity"] == pytest.approx(0.0)
    assert table.loc["WRIST", "specificity"] == pytest.approx(0.5)
    assert table.loc["all", "error_rate"] == pytest.approx(4 / 6)


def test_browser_is_none_when_not_interactive():
    assert error_browser(run=None, cases=error_cases(_predictions()), interactive=False) is None


def test_browser_and_figure_on_a_real_run(tiny_mura, tmp_path):
    """In Jupyter the browser is a widget showing a Grad-CAM PNG per mistake; the figure is a PNG."""
    import ipywidgets

    from mura_utils.config import TrainConfig
    from mura_utils.report.error_analysis import error_figure, pick_run
    from mura_utils.training.experiment import run_experiment

    config = TrainConfig(
        data_root=str(tiny_mura),
        img_size=32,
        epochs=1,
        batch_size=16,
        device="cpu",
        cache_dir=str(tmp_path / "cache"),
        out_dir=str(tmp_path / "runs" / "custom_cnn_multitask"),
        progress=False,
        verbose=False,
    )
    run_experiment(config)
    run = pick_run(tmp_path / "runs", "custom_cnn", "multitask")
    cases = error_cases(run.predictions, threshold=0.5, per_part=1)
    assert len(cases), "an untrained 1-epoch model makes study-level mistakes"
    browser = error_browser(run, cases, interactive=True)
    assert isinstance(browser, ipywidgets.VBox)
    chooser, picture, _ = browser.children
    first = bytes(picture.value)
    assert first.startswith(b"\x89PNG")
    if len(cases) > 1:
        chooser.value = 1
        assert bytes(picture.value) != first
    figure = error_figure(run, cases, tmp_path / "errors.png")
    assert figure.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(FileNotFoundError, match="resnet50 multitask"):
        pick_run(tmp_path / "runs", "resnet50", "multitask")
