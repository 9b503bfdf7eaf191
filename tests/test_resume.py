"""An interrupted `mura reproduce` continues where it stopped, with real processes: SIGKILL while
notebook 02 trains, then the same command again; finished runs are never retrained or deleted,
and a changed setting over finished runs is refused before anything changes."""

from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import nbformat
import pandas as pd
import psutil
import pytest

from mura_utils.cli import main as cli_main
from mura_utils.cli.commands import _parse_value
from mura_utils.config import TrainConfig
from mura_utils.pipeline import NOTEBOOK_DIR, ReproduceError, plan_reproduce, profile_config_dir, reproduce
from mura_utils.pipeline.runs_folder import refuse_conflicts
from mura_utils.training import experiment

# 2 epochs, so the kill lands after notebook 02's first last.pt and the rerun resumes mid-run
SETTINGS = {"epochs": 2, "img_size": 32, "batch_size": 16, "variants": ["multitask"], "cam_per_group": 1}
NOTEBOOKS = ("01_custom_cnn", "02_resnet50")
TIMING = ["train_seconds", "images_per_second"]


def reproduce_command(data_root: Path, out: Path, notebooks: tuple[str, ...] = NOTEBOOKS) -> list[str]:
    """The same `reproduce` call as a separate process (notebooks 01 and 02 only, to stay fast)."""
    runs_dir = str(out / "runs")  # runs and executed notebooks side by side, as the assertions read them
    call = f"reproduce({str(data_root)!r}, {str(out)!r}, 'demo', {SETTINGS!r}, notebooks={notebooks!r}, "
    call += f"runs_dir={runs_dir!r})"
    return [sys.executable, "-c", f"from mura_utils.pipeline import reproduce; {call}"]


def file_bytes(runs_dir: Path, pattern: str) -> dict[str, bytes]:
    return {str(path.relative_to(runs_dir)): path.read_bytes() for path in sorted(runs_dir.glob(pattern))}


def run_results(runs_dir: Path) -> dict:
    """What the reports read from each run, without wall-clock timings."""
    results = {}
    for folder in sorted(path for path in runs_dir.iterdir() if (path / "run.json").is_file()):
        info = json.loads((folder / "run.json").read_text())
        results[folder.name] = {
            "run": {key: value for key, value in info.items() if key not in ("train_seconds", "images_per_second")},
            "metrics": {
                key: value
                for key, value in json.loads((folder / "test_metrics.json").read_text()).items()
                if key != "checkpoint"  # its path
            },
            "predictions": pd.read_csv(folder / "test_predictions.csv").to_dict("list"),
            "history": pd.read_csv(folder / "history.csv").drop(columns=TIMING).to_dict("list"),
        }
    return results


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from mura_utils.synthetic import make_sample

    return make_sample(tmp_path_factory.mktemp("resume_data"), patients_per_part=3, seed=0)


def test_killed_reproduce_continues_and_matches_an_uninterrupted_run(sample, tmp_path, capsys):
    reference_command = reproduce_command(sample, tmp_path / "reference", notebooks=NOTEBOOKS[1:])
    reference = subprocess.run(reference_command, capture_output=True, text=True)  # 02 uninterrupted
    assert reference.returncode == 0, reference.stderr[-3000:]

    out = tmp_path / "reports"
    runs_dir = out / "runs"
    process = subprocess.Popen(reproduce_command(sample, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resnet_last = runs_dir / "resnet50_multitask_seed0" / "last.pt"
    deadline = time.monotonic() + 300
    while not resnet_last.is_file():  # notebook 02 has finished its first epoch
        assert process.poll() is None, "reproduce ended before notebook 02 trained"
        assert time.monotonic() < deadline, "notebook 02 never wrote last.pt"
        time.sleep(0.05)
    kernels = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGKILL)
    process.wait()
    _, alive = psutil.wait_procs(kernels, timeout=30)
    assert not alive, "the notebook kernel outlived its killed parent"
    assert not (runs_dir / "resnet50_multitask_seed0" / "run.json").exists(), "killed too late to test a resume"
    finished_before = file_bytes(runs_dir, "custom_cnn_*/*")

    again = subprocess.run(reproduce_command(sample, out), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "custom_cnn_multitask_seed0: reuse" in again.stdout
    assert "resnet50_multitask_seed0: resume" in again.stdout
    assert file_bytes(runs_dir, "custom_cnn_*/*") == finished_before  # notebook 01's runs untouched
    resumed = run_results(runs_dir)
    assert set(resumed) == {"custom_cnn_multitask_seed0", "resnet50_multitask_seed0"}
    assert (
        resumed["resnet50_multitask_seed0"] == run_results(tmp_path / "reference" / "runs")["resnet50_multitask_seed0"]
    )
    provenance = json.loads((runs_dir / "reproduce.json").read_text())
    assert provenance["finished_utc"] and set(provenance["notebook_seconds"]) == set(NOTEBOOKS)

    # a changed setting over finished runs: refused, naming it, before anything is written
    checkpoints = file_bytes(runs_dir, "*/*.pt")
    arguments = ["reproduce", "--data-root", str(sample), "--out", str(out), "--runs-dir", str(runs_dir)]
    for name, value in {**SETTINGS, "epochs": 3}.items():
        arguments += ["-p", name, json.dumps(value)]
    capsys.readouterr()
    assert cli_main(arguments) == 2
    error = capsys.readouterr().err
    assert "epochs: saved 2, requested 3" in error and "custom_cnn_multitask_seed0" in error and "--restart" in error
    assert file_bytes(runs_dir, "*/*.pt") == checkpoints
    assert not (runs_dir / "efficientnet_b0_multitask_seed0").exists()  # notebook 03 was refused too


def test_restart_deletes_only_planned_run_folders(tmp_path, tiny_mura):
    runs_dir = tmp_path / "reports" / "runs"
    planned, own = runs_dir / "custom_cnn_multitask_seed0", runs_dir / "effb0"
    for folder in (planned, own):
        TrainConfig(epochs=7, out_dir=str(folder)).save(folder / "config.json")
        (folder / "last.pt").write_bytes(b"")  # trained: a folder holding only config.json would be trained afresh
    plan = plan_reproduce(
        tiny_mura, tmp_path / "reports", "demo", {"variants": ["multitask"]}, notebooks=NOTEBOOKS[:1], runs_dir=runs_dir
    )
    [(config, status, differences)] = plan["01_custom_cnn"]
    requested = experiment.settings_file(profile_config_dir("demo"), "custom_cnn")["epochs"]  # configs/demo
    assert status == "conflict" and differences["epochs"] == (7, requested)
    with pytest.raises(ReproduceError, match=rf"custom_cnn_multitask_seed0: .*epochs: saved 7, requested {requested}"):
        refuse_conflicts(plan, restart=False)
    assert planned.is_dir()
    refuse_conflicts(plan, restart=True)
    assert not planned.exists() and (own / "config.json").is_file()  # a folder the plan does not train stays


def test_parameter_values_parse_like_python_and_papermill():
    assert _parse_value("False") is False and _parse_value("true") is True
    assert _parse_value("None") is None and _parse_value("null") is None
    assert _parse_value("[0, 1, 2]") == [0, 1, 2] and _parse_value("1e-3") == 0.001 and _parse_value("5") == 5
    assert _parse_value("cuda:0") == "cuda:0" and _parse_value("'auto'") == "auto"


@pytest.mark.parametrize(
    "overrides, named",
    [({"pretrained": "False"}, "pretrained"), ({"epochs": 2.5}, "epochs"), ({"seeds": 1}, "seeds")],
)
def test_parameter_of_the_wrong_type_is_refused(tiny_mura, tmp_path, overrides, named):
    with pytest.raises(ReproduceError, match=f"{named}=.*declares {named}"):
        plan_reproduce(tiny_mura, tmp_path, "full", overrides)


def test_int_is_accepted_for_a_float_parameter(tiny_mura, tmp_path):
    plan = plan_reproduce(
        tiny_mura, tmp_path, "full", {"lr": 1, "seeds": [3]}, notebooks=NOTEBOOKS, runs_dir=tmp_path / "runs"
    )
    assert {config.lr for runs in plan.values() for config, _, _ in runs} == {1}
    assert {Path(config.out_dir).name for config, _, _ in plan["02_resnet50"]} == {
        "resnet50_multitask_seed3",
        "resnet50_single_task_seed3",
    }


@pytest.mark.parametrize("name", ["01_custom_cnn", "02_resnet50", "03_efficientnet_densenet"])
def test_training_notebook_passes_every_declared_train_setting(name):
    """The pipeline plans a notebook's runs by calling ``experiment.model_run_configs`` with the notebook's
    parameters: the notebook's one training call (``run_models``, which calls it too) must pass exactly its
    parameters that are TrainConfig fields or run arguments, each under its own name, or the plan would drift."""
    notebook = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    [parameters] = [cell.source for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    declared = {node.targets[0].id for node in ast.parse(parameters).body if isinstance(node, ast.Assign)}
    calls = [
        node
        for source in code
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "run_models"
    ]
    assert len(calls) == 1
    positional = ["models", "runs_dir", "variants", "seeds"]
    assert [argument.id for argument in calls[0].args] == positional
    assert all(isinstance(keyword.value, ast.Name) and keyword.value.id == keyword.arg for keyword in calls[0].keywords)
    accepted = {field.name for field in fields(TrainConfig)} | set(experiment.NOTEBOOK_ARGUMENTS)
    assert {keyword.arg for keyword in calls[0].keywords} == (declared & accepted) - set(positional)


def test_per_model_settings_apply_to_their_model_only(tiny_mura, tmp_path):
    """Notebook 03 trains two backbones: ``model_settings`` gives one of them other settings, and the
    plan (what ``mura reproduce`` compares with run folders) agrees with what the notebook trains."""
    overrides = {"model_settings": {"densenet169": {"img_size": 48, "epochs": 2}}, "img_size": 64, "epochs": 3}
    plan = plan_reproduce(tiny_mura, tmp_path, "demo", overrides, notebooks=("03_efficientnet_densenet",),
                     runs_dir=tmp_path / "runs")  # fmt: skip
    sizes = {
        Path(config.out_dir).name: (config.img_size, config.epochs) for config, _, _ in plan["03_efficientnet_densenet"]
    }
    assert sizes == {
        "efficientnet_b0_multitask_seed0": (64, 3),
        "efficientnet_b0_single_task_seed0": (64, 3),
        "densenet169_multitask_seed0": (48, 2),
        "densenet169_single_task_seed0": (48, 2),
    }
    demo = plan_reproduce(tiny_mura, tmp_path, "demo", {"epochs": 2}, notebooks=("03_efficientnet_densenet",),
                          runs_dir=tmp_path / "runs")["03_efficientnet_densenet"]  # fmt: skip
    files = {
        model: experiment.settings_file(profile_config_dir("demo"), model)
        for model in ("efficientnet_b0", "densenet169")
    }
    assert files["densenet169"]["img_size"] != files["efficientnet_b0"]["img_size"]  # the demo's own per-model sizes
    assert {(config.model, config.img_size, config.epochs) for config, _, _ in demo} == {
        ("efficientnet_b0", files["efficientnet_b0"]["img_size"], 2),
        ("densenet169", files["densenet169"]["img_size"], 2),  # -p wins for every model; the rest stays
    }
    with pytest.raises(
        ReproduceError, match=r"model_settings name model\(s\) \['resnet50'\] that are not trained here"
    ):
        plan_reproduce(tiny_mura, tmp_path, "demo", {"model_settings": {"resnet50": {"epochs": 2}}},
                  notebooks=("03_efficientnet_densenet",), runs_dir=tmp_path / "runs")  # fmt: skip
    with pytest.raises(ReproduceError, match=r"model_settings\['densenet169'\]: \['seed'\] are not per-model"):
        plan_reproduce(tiny_mura, tmp_path, "demo", {"model_settings": {"densenet169": {"seed": 2}}},
                  notebooks=("03_efficientnet_densenet",), runs_dir=tmp_path / "runs")  # fmt: skip


def test_dry_run_lists_runs_with_an_estimate_and_writes_nothing(tiny_mura, tmp_path, capsys):
    settings = {"epochs": 1, "img_size": 32, "batch_size": 8, "variants": ["multitask"], "seeds": [0, 1]}
    reproduce(
        tiny_mura,
        tmp_path / "reports",
        "demo",
        settings,
        notebooks=("02_resnet50",),
        dry_run=True,
        runs_dir=tmp_path / "runs",
    )
    printed = capsys.readouterr().out
    assert "02_resnet50: resnet50_multitask_seed0: train (~" in printed and "resnet50_multitask_seed1: train" in printed
    assert "training left, roughly" in printed
    assert not (tmp_path / "reports").exists() and not (tmp_path / "runs").exists()


def test_fit_reports_progress_to_the_file_named_by_the_environment(tiny_mura, tmp_path, monkeypatch):
    from mura_utils.training.fit import fit
    from mura_utils.utils.progress import PROGRESS_FILE_VARIABLE, ProgressFollower

    monkeypatch.setenv(PROGRESS_FILE_VARIABLE, str(tmp_path / "progress.jsonl"))
    follower = ProgressFollower(tmp_path / "progress.jsonl")
    settings = {"epochs": 2, "img_size": 32, "batch_size": 16, "device": "cpu", "progress": False, "verbose": False}
    fit(TrainConfig(data_root=str(tiny_mura), out_dir=str(tmp_path / "run"), cache_dir=str(tmp_path), **settings))
    lines = follower.new_lines()
    assert {line["run"] for line in lines} == {"run"} and lines[-1]["epoch"] == lines[-1]["epochs"] == 2
    assert lines[-1]["step"] == lines[-1]["steps"] and follower.new_lines() == []


@pytest.mark.parametrize("decay", [1.0, 1.5, -0.1, "0.9"])
def test_bad_ema_decay_is_refused_before_anything_is_written(tmp_path, decay):
    with pytest.raises(ValueError, match=r"ema_decay .* must be 0 \(off\) or between 0 and 1"):
        TrainConfig(ema_decay=decay, out_dir=str(tmp_path / "run"))
    TrainConfig(ema_decay=0.0)
    TrainConfig(ema_decay=0.999)
    if isinstance(decay, float):
        command = ["train", "--out", str(tmp_path / "run"), "--ema-decay", str(decay), "--epochs", "1"]
        assert cli_main(command) == 2
        assert not (tmp_path / "run").exists()


def test_folder_of_a_start_that_failed_before_any_checkpoint_is_trained_afresh(tiny_mura, tmp_path):
    from mura_utils.config import ConfigMismatchError
    from mura_utils.training.experiment import run_status
    from mura_utils.training.fit import check_resumable, fit

    settings = {"model": "resnet18", "img_size": 32, "epochs": 1, "device": "cpu", "progress": False}
    settings |= {"data_root": str(tiny_mura), "out_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache")}
    with pytest.raises(FileNotFoundError, match="weights file not found"):  # a failed start: bad weights file
        fit(TrainConfig(weights_path=str(tmp_path / "missing.safetensors"), **settings))
    assert (tmp_path / "run" / "config.json").is_file()  # left behind by the failed start
    retry = TrainConfig(pretrained=False, **settings)
    assert run_status(retry) == ("train", {})  # not "trained with other settings"
    check_resumable(tmp_path / "run", retry)  # --resume does not refuse either
    (tmp_path / "run" / "last.pt").write_bytes(b"")  # once a checkpoint exists, other settings are a conflict
    assert run_status(retry)[0] == "conflict"
    with pytest.raises(ConfigMismatchError, match="pretrained"):
        check_resumable(tmp_path / "run", retry)
