"""Notebooks are thin and clean, and the whole papermill pipeline runs on a tiny sample."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from mura_utils.pipeline import NOTEBOOK_DIR, NOTEBOOKS, ReproduceError, reproduce
from mura_utils.pipeline.colab import BRANCH, COLAB_SETUP, REPOSITORY_URL, colab_badge, colab_url

NOTEBOOK_FILES = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def test_every_pipeline_notebook_exists():
    assert {path.stem for path in NOTEBOOK_FILES} == set(NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_notebook_is_thin_and_has_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "parameters" in code[1].metadata.get("tags", []), "the code cell after Colab's must be tagged parameters"
    assert [cell for cell in code if "parameters" in cell.metadata.get("tags", [])] == [code[1]]
    first = code[1].source.splitlines()
    assert all(line.strip() == "" or "=" in line for line in first), "parameters are plain assignments"
    for cell in code:
        assert not cell.get("outputs") and cell.get("execution_count") is None, "outputs must be stripped"
        assert not any(line.lstrip().startswith(("def ", "class ", "lambda")) for line in cell.source.splitlines())
    assert sum(len(cell.source.splitlines()) for cell in code[2:]) < 40, "logic belongs in mura_utils"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_notebook_opens_in_colab_with_one_click(path):
    """The badge is the first cell and the Colab install cell the first code cell, both exactly as
    mura_utils.pipeline.colab writes them (the repository's address is written once, there)."""
    notebook = nbformat.read(path, as_version=4)
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source == colab_badge(path.name)
    assert colab_url(path.name).endswith(f"/blob/{BRANCH}/notebooks/{path.name}")
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code[0].source == COLAB_SETUP and REPOSITORY_URL in COLAB_SETUP
    assert sum("colab.research.google.com" in cell.source for cell in notebook.cells) == 1  # one badge
    assert sum("google.colab" in cell.source for cell in notebook.cells) == 1  # one install cell


def test_colab_cell_does_nothing_outside_colab(monkeypatch):
    import subprocess
    import sys

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("installed outside Colab"))
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("asked outside Colab"))
    exec(compile(COLAB_SETUP, "colab-setup", "exec"), {})


def test_colab_cell_installs_and_offers_drive_inside_colab(monkeypatch):
    import subprocess
    import sys
    import types

    calls, mounted = [], []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounted.append)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: calls.append(command))
    for answer, mounts in (("n", []), ("y", ["/content/drive"])):
        mounted.clear()
        monkeypatch.setattr("builtins.input", lambda prompt, answer=answer: answer)
        exec(compile(COLAB_SETUP, "colab-setup", "exec"), {})
        assert calls[-1][1:4] == ["-m", "pip", "install"] and calls[-1][-1] == f"git+{REPOSITORY_URL}.git@{BRANCH}"
        assert mounted == mounts


def test_default_sample_is_written_when_missing_and_only_then(tmp_path, monkeypatch, capsys):
    from mura_utils.synthetic import default_sample, ensure_default_sample

    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    assert "$(BIN)/mura sample $(SAMPLE)\n" in makefile  # `make sample` writes the sample's default size too
    monkeypatch.setattr(default_sample, "DEFAULT_SAMPLE_PATIENTS", 1)  # quicker, same code path
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert ensure_default_sample("../data/sample") == Path("../data/sample")
    assert (tmp_path / "data" / "sample" / "MURA-v1.1" / "train_image_paths.csv").is_file()
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 and "wrote the synthetic MURA-v1.1 sample" in printed[0]
    ensure_default_sample("../data/sample")  # there now: nothing written, nothing said
    assert capsys.readouterr().out == ""
    ensure_default_sample(tmp_path / "elsewhere" / "sample")  # not the default path: left alone
    assert not (tmp_path / "elsewhere").exists()


def test_data_overview_opened_alone_writes_the_sample_and_runs(tmp_path):
    """Notebook 00 opened first, with its defaults and no `make sample`: the sample is written, then it runs."""
    import papermill

    (tmp_path / "notebooks").mkdir()
    shutil.copy(NOTEBOOK_DIR / "00_data_overview.ipynb", tmp_path / "notebooks")
    executed = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(tmp_path / "notebooks" / "00_data_overview.ipynb"), str(executed),
                               cwd=str(tmp_path / "notebooks"), progress_bar=False)  # fmt: skip
    assert (tmp_path / "data" / "sample" / "MURA-v1.1" / "SYNTHETIC_SAMPLE.txt").is_file()
    assert (tmp_path / "reports" / "figures" / "sample_images.png").is_file()
    outputs = [
        output.get("text", "")
        for cell in nbformat.read(executed, as_version=4).cells
        for output in cell.get("outputs", [])
    ]
    assert sum("wrote the synthetic MURA-v1.1 sample" in text for text in outputs) == 1


@pytest.fixture(scope="module")
def demo_reports(tmp_path_factory):
    """The full pipeline on a very small sample: 1 epoch, 32 px."""
    from mura_utils.synthetic import make_sample

    base = tmp_path_factory.mktemp("pipeline")
    root = make_sample(base / "data", patients_per_part=3, seed=0)
    return reproduce(
        root,
        base / "reports",
        "demo",
        {"epochs": 1, "img_size": 32, "n_resamples": 20, "cam_per_group": 1, "progress": False},
        runs_dir=base / "runs",  # trained runs apart from the reports
    )


def test_pipeline_writes_every_report(demo_reports):
    out = Path(demo_reports)
    for name in NOTEBOOKS:
        assert (out / "runs" / f"{name}.ipynb").is_file()
    for name in ("index.md", "comparison.md", "comparison.csv", "external.md", "external.csv"):
        assert (out / name).is_file(), name
    for name in (
        "roc_study",
        "roc_image",
        "per_body_part_kappa",
        "confusion_matrices",
        "training_curves",
        "reliability",
        "ablation",
        "roc_external",
        "sample_images",
    ):
        assert (out / "figures" / f"{name}.png").stat().st_size > 5000, name
    galleries = sorted(p.stem for p in (out / "figures" / "gradcam").glob("*.png"))
    assert galleries == sorted(
        f"{m}_{v}_seed0"
        for m in ("custom_cnn", "resnet50", "densenet169", "efficientnet_b0")
        for v in ("multitask", "single_task")
    )
    index = (out / "index.md").read_text()
    assert "SYNTHETIC" in index and "abnormal" in index
    provenance = json.loads((out / "runs" / "reproduce.json").read_text())
    assert provenance["parameters"]["epochs"] == 1 and provenance["finished_utc"]
    assert set(provenance["notebook_seconds"]) == set(NOTEBOOKS) and set(provenance["runs"].values()) == {"train"}


def test_comparison_table_has_all_models_variants_and_ensemble(demo_reports):
    table = pd.read_csv(Path(demo_reports) / "comparison.csv")
    # one row per run (4 models x 2 variants), its test-time-augmentation row, and the multi-task ensemble
    assert (table["kind"] == "run").sum() == 8 and (table["kind"] == "tta").sum() == 8
    assert (table["kind"] == "ensemble").sum() == 1 and len(table) == 17
    assert set(table["variant"].dropna()) >= {"multitask", "single_task"}
    for column in (
        "image_accuracy",
        "image_auroc",
        "study_kappa",
        "study_auroc",
        "study_sensitivity",
        "study_specificity",
        "body_part_accuracy",
        "study_auroc_ci_low",
        "study_auroc_ci_high",
        "parameters",
        "train_seconds",
        "images_per_second",
    ):
        assert column in table.columns, column
    markdown = (Path(demo_reports) / "comparison.md").read_text()
    assert markdown.count("\n|") >= 10


def test_report_matches_mura_evaluate_on_the_same_checkpoint(demo_reports):
    from mura_utils.evaluation.predictions import evaluate_checkpoint

    run = Path(demo_reports).parent / "runs" / "custom_cnn_multitask_seed0"
    info = json.loads((run / "run.json").read_text())
    _, metrics = evaluate_checkpoint(
        run / "best.pt", info["data_root"], "valid", device="cpu", progress=False, use_cache=False
    )
    table = pd.read_csv(Path(demo_reports) / "comparison.csv").set_index("run")
    assert table.loc["custom_cnn_multitask_seed0", "study_kappa"] == pytest.approx(metrics["study"]["kappa"], abs=1e-6)
    if metrics["study"]["auroc"] is not None:
        assert table.loc["custom_cnn_multitask_seed0", "study_auroc"] == pytest.approx(
            metrics["study"]["auroc"], abs=1e-6
        )
    assert table.loc["custom_cnn_multitask_seed0", "image_accuracy"] == pytest.approx(metrics["image"]["accuracy"])


def test_failing_notebook_stops_with_its_name_and_cell(tmp_path, tiny_mura):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    broken = nbformat.read(NOTEBOOK_DIR / "00_data_overview.ipynb", as_version=4)
    broken.cells.append(nbformat.v4.new_code_cell("raise RuntimeError('planted failure')"))
    nbformat.write(broken, notebooks / "00_data_overview.ipynb")
    shutil.copy(NOTEBOOK_DIR / "05_comparison.ipynb", notebooks / "05_comparison.ipynb")
    with pytest.raises(ReproduceError, match=r"00_data_overview.ipynb failed in cell \d+.*planted failure") as error:
        reproduce(
            tiny_mura,
            tmp_path / "reports",
            "demo",
            notebooks=("00_data_overview", "05_comparison"),
            notebook_dir=notebooks,
            runs_dir=tmp_path / "runs",
        )
    assert (tmp_path / "reports" / "runs" / "00_data_overview.ipynb").is_file()
    assert not (tmp_path / "reports" / "runs" / "05_comparison.ipynb").exists()
    assert "00_data_overview.ipynb" in str(error.value)


def test_unknown_parameter_is_refused(tmp_path, tiny_mura):
    with pytest.raises(ReproduceError, match="epoch"):
        reproduce(tiny_mura, tmp_path / "reports", "demo", {"epoch": 3}, runs_dir=tmp_path / "runs")


def test_error_analysis_notebook_writes_static_figures_under_papermill(demo_reports):
    out = Path(demo_reports)
    executed = nbformat.read(out / "runs" / "06_error_analysis.ipynb", as_version=4)
    parameters = next(cell for cell in executed.cells if "injected-parameters" in cell.metadata.get("tags", []))
    assert "interactive = False" in parameters.source
    outputs = [output for cell in executed.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not any("application/vnd.jupyter.widget-view+json" in output.get("data", {}) for output in outputs)
    assert any("static figure above is the record" in output.get("text", "") for output in outputs)
    (figure,) = (out / "figures").glob("errors_custom_cnn_multitask*.png")  # run folder names may carry a seed
    assert figure.stat().st_size > 5000
    (table,) = out.glob("errors_custom_cnn_multitask*.csv")
    cases = pd.read_csv(table)
    assert set(cases["error"]) <= {"FN", "FP"}
    assert cases.empty or cases.groupby(["body_part", "error"]).size().max() <= 2


def test_readme_badges_open_the_notebooks_at_the_one_repository_address():
    """The README's Colab links are the ones mura_utils.pipeline.colab gives each notebook."""
    readme = (NOTEBOOK_DIR.parent / "README.md").read_text()
    for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
        assert colab_url(path.name) in readme, path.name
