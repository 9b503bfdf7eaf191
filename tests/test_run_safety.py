"""Nothing a user trained is ever lost: a run folder holding results survives `mura train` into it
without flags, `mura reproduce` after its checkpoints were deleted, and `make clean`; --overwrite and
--restart are the only ways to replace one, and they say what they remove. A dry run of the full
profile times only reduced steps. Run folders are written through the real save paths, untrained."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import interrupt_in_epoch, save_untrained_checkpoint

from mura_utils.cli import main as cli_main
from mura_utils.config import ConfigMismatchError, TrainConfig
from mura_utils.pipeline import ReproduceError, default_runs_dir, plan_reproduce, reproduce
from mura_utils.pipeline import estimate as step_estimate
from mura_utils.pipeline.runs_folder import refuse_conflicts
from mura_utils.synthetic import make_fracatlas_sample, make_sample
from mura_utils.training import experiment
from mura_utils.training.fit import fit
from mura_utils.training.run_folder import RunFolderInUseError, run_records

REPOSITORY = Path(__file__).resolve().parent.parent
RECORDS = ("history.csv", "val_predictions.csv", "test_predictions.csv", "test_predictions_tta.csv")


def tiny_config(data_root, out_dir, **changes) -> TrainConfig:
    config = TrainConfig(
        model="custom_cnn", data_root=str(data_root), out_dir=str(out_dir), epochs=1, img_size=32, batch_size=16,
        device="cpu", progress=False, verbose=False, cache_dir=str(Path(out_dir).parent / "cache"),
    )  # fmt: skip
    return replace(config, **changes)


def finished_run(config: TrainConfig) -> Path:
    """A run folder as run_experiment leaves it (untrained weights, placeholder tables)."""
    folder = Path(config.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    config.save(folder / "config.json")
    for name in ("best.pt", "last.pt"):
        save_untrained_checkpoint(folder / name)
    for name in RECORDS:
        (folder / name).write_text("path,probability\nx.png,0.5\n")
    (folder / "test_metrics.json").write_text(json.dumps({"study": {"kappa": 0.5}}))
    (folder / "run.json").write_text(json.dumps({"run_name": folder.name}))  # written last
    return folder


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(Path(folder).iterdir()) if path.is_file()}


def train_arguments(config: TrainConfig) -> list[str]:
    return [
        "train", "--data-root", config.data_root, "--out", config.out_dir, "--epochs", "1", "--img-size", "32",
        "--batch-size", "16", "--device", "cpu", "--cache-dir", config.cache_dir, "--no-progress", "--no-verbose",
    ]  # fmt: skip


# 1. mura train never overwrites a finished run by accident


def test_train_into_a_finished_run_is_refused_naming_the_folder_and_what_it_holds(tiny_mura, tmp_path, capsys):
    config = tiny_config(tiny_mura, tmp_path / "run")
    folder = finished_run(config)
    before = folder_bytes(folder)
    assert cli_main(train_arguments(config)) == 2
    error = capsys.readouterr().err
    assert str(folder) in error and "best.pt" in error and "run.json" in error and "test_predictions.csv" in error
    assert "--resume" in error and "--overwrite" in error
    with pytest.raises(RunFolderInUseError, match="holds a trained run"):
        fit(config)  # the library call refuses too
    with pytest.raises(ValueError, match="choose one"):
        fit(config, resume=True, overwrite=True)
    assert folder_bytes(folder) == before


def test_resume_without_last_pt_is_refused_rather_than_retraining_over_best_pt(tiny_mura, tmp_path, capsys):
    config = tiny_config(tiny_mura, tmp_path / "run")
    folder = finished_run(config)
    (folder / "last.pt").unlink()  # deleted to save disk: nothing to continue from
    before = folder_bytes(folder)
    assert cli_main([*train_arguments(config), "--resume"]) == 2
    error = capsys.readouterr().err
    assert str(folder) in error and "no last.pt" in error and "--overwrite" in error
    assert folder_bytes(folder) == before


def test_overwrite_removes_the_old_records_first_and_says_which(tiny_mura, tmp_path, capsys):
    config = tiny_config(tiny_mura, tmp_path / "run")
    folder = finished_run(config)
    (folder / "notes.txt").write_text("mine")  # not a run record: left alone
    old_best = (folder / "best.pt").read_bytes()
    assert cli_main([*train_arguments(config), "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "--overwrite: removed run.json, best.pt, last.pt, history.csv, val_predictions.csv, " in printed
    assert "test_metrics.json, test_predictions.csv, test_predictions_tta.csv from " + str(folder) in printed
    # the stale evaluation is gone with the weights it came from; the new training left its own files
    assert not any((folder / name).exists() for name in ("run.json", "test_metrics.json", "test_predictions.csv"))
    assert (folder / "best.pt").read_bytes() != old_best and (folder / "notes.txt").read_text() == "mine"


def test_an_interrupted_pipeline_run_resumes_and_a_finished_one_is_reused(tiny_mura, tmp_path, monkeypatch):
    config = tiny_config(tiny_mura, tmp_path / "runs" / "custom_cnn_multitask_seed0", epochs=2)
    interrupt_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        experiment.run_or_reuse(config)
    monkeypatch.undo()
    assert experiment.run_status(config) == ("resume", {})
    experiment.run_or_reuse(config)  # not refused by the guard in fit
    assert experiment.run_status(config) == ("reuse", {})
    before = folder_bytes(Path(config.out_dir))
    experiment.run_or_reuse(config)
    assert folder_bytes(Path(config.out_dir)) == before


# 2. the planner treats a damaged finished run as a conflict, not as new work


@pytest.mark.parametrize(
    "deleted, missing",
    [
        (("best.pt", "last.pt"), ["best.pt"]),  # checkpoints deleted to save disk
        (("best.pt",), ["best.pt"]),  # was "resumed", run.json deleted, then evaluation failed
        (("test_metrics.json",), ["test_metrics.json"]),
        (("run.json", "last.pt"), ["last.pt"]),  # interrupted, nothing to continue from
    ],
)
def test_a_damaged_run_is_a_conflict_naming_what_is_missing(tmp_path, deleted, missing):
    config = tiny_config(tmp_path / "data", tmp_path / "runs" / "custom_cnn_multitask_seed0")
    folder = finished_run(config)
    for name in deleted:
        (folder / name).unlink()
    status, differences = experiment.run_status(config)
    assert status == "conflict" and experiment.damaged_files(differences) == missing
    before = folder_bytes(folder)
    with pytest.raises(ConfigMismatchError, match=rf"{re.escape(str(folder))}: a damaged run .*missing {missing[0]}"):
        experiment.run_or_reuse(config)  # what notebooks opened by hand call
    assert folder_bytes(folder) == before


def test_settings_are_compared_before_anything_else_and_last_pt_is_optional_once_finished(tmp_path):
    config = tiny_config(tmp_path / "data", tmp_path / "runs" / "custom_cnn_multitask_seed0")
    folder = finished_run(config)
    (folder / "last.pt").unlink()  # a finished run needs best.pt only
    assert experiment.run_status(config) == ("reuse", {})
    (folder / "best.pt").unlink()
    assert experiment.run_status(replace(config, epochs=5)) == ("conflict", {"epochs": (1, 5)})
    for path in folder.iterdir():
        if path.name != "config.json":
            path.unlink()
    assert experiment.run_status(replace(config, epochs=5)) == ("train", {})  # a start that failed early


def test_reproduce_refuses_a_run_whose_checkpoints_were_deleted_and_changes_nothing(tiny_mura, tmp_path, capsys):
    runs_dir, settings = tmp_path / "runs", {"variants": ["multitask"], "epochs": 1, "img_size": 32}
    [(config, status, _)] = plan_reproduce(tiny_mura, tmp_path / "reports", "demo", settings, ("01_custom_cnn",), None,
                                      runs_dir=runs_dir)["01_custom_cnn"]  # fmt: skip
    assert status == "train"
    folder = finished_run(config)
    for name in ("best.pt", "last.pt"):
        (folder / name).unlink()
    before = folder_bytes(folder)
    arguments = ["reproduce", "--data-root", str(tiny_mura), "--out", str(tmp_path / "reports")]
    arguments += ["--runs-dir", str(runs_dir)]
    for name, value in settings.items():
        arguments += ["-p", name, json.dumps(value)]
    capsys.readouterr()
    assert cli_main(arguments) == 2
    captured = capsys.readouterr()
    assert "custom_cnn_multitask_seed0: conflict: a damaged run" in captured.out  # the plan says why
    error = captured.err
    assert f"{folder}: a damaged run of these settings, missing best.pt" in error
    assert "Nothing was changed" in error and "--restart custom_cnn_multitask_seed0" in error
    assert folder_bytes(folder) == before and not (tmp_path / "reports").exists()


def test_restart_deletes_only_the_named_or_planned_folders_and_says_which(tiny_mura, tmp_path, capsys):
    runs_dir, settings = tmp_path / "runs", {"epochs": 1, "img_size": 32}

    def plan():
        return plan_reproduce(tiny_mura, tmp_path / "reports", "demo", settings, ("01_custom_cnn",), runs_dir=runs_dir)

    configs = [config for config, _, _ in plan()["01_custom_cnn"]]
    damaged, finished = (finished_run(config) for config in configs)  # multitask, single_task
    (damaged / "best.pt").unlink()
    own = finished_run(replace(configs[0], out_dir=str(runs_dir / "effb0")))  # not planned by this command
    kept = folder_bytes(finished)
    with pytest.raises(ReproduceError, match="does not plan: effb0; planned: custom_cnn_multitask_seed0"):
        refuse_conflicts(plan(), ["effb0"])
    capsys.readouterr()
    assert refuse_conflicts(plan(), ["custom_cnn_multitask_seed0"]) == ["custom_cnn_multitask_seed0"]
    assert capsys.readouterr().out == f"[mura reproduce] --restart: deleting {damaged}\n"
    assert not damaged.exists() and folder_bytes(finished) == kept and (own / "run.json").is_file()
    refuse_conflicts(plan(), True)  # --restart alone: every planned folder that exists
    assert capsys.readouterr().out == f"[mura reproduce] --restart: deleting {finished}\n"
    assert not finished.exists() and (own / "best.pt").is_file()


def test_cli_passes_runs_dir_and_restart_names(monkeypatch, tmp_path):
    import mura_utils.pipeline

    calls = []
    monkeypatch.setattr(mura_utils.pipeline, "reproduce", lambda *args, **kwargs: calls.append(kwargs) or tmp_path)
    base = ["reproduce", "--runs-dir", str(tmp_path / "r"), "--dry-run"]
    assert cli_main([*base, "--restart"]) == 0 and calls[-1]["restart"] is True
    assert cli_main([*base, "--restart", "a_seed0", "b_seed0"]) == 0 and calls[-1]["restart"] == ["a_seed0", "b_seed0"]
    assert cli_main(base) == 0 and calls[-1]["restart"] is False and calls[-1]["runs_dir"] == str(tmp_path / "r")


# 3. trained runs live apart from the reports, and make clean never deletes them


def test_reproduce_trains_into_runs_of_the_profile_and_data_by_default(tiny_mura, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = plan_reproduce(tiny_mura, "reports", "demo", {"variants": ["multitask"]}, ("01_custom_cnn",))
    [(config, _, _)] = plan["01_custom_cnn"]
    # the MURA-v1.1 folder itself: the dataset's own name, left out of the folder name
    assert Path(config.out_dir) == tmp_path / "runs" / "demo-mura" / "custom_cnn_multitask_seed0"
    sample = make_sample(tmp_path / "data" / "sample", patients_per_part=1).parent
    assert default_runs_dir("demo", sample) == Path("runs") / "demo-mura-sample"  # make demo's
    odd_tree = make_sample(tmp_path / "My MURA (v2)", patients_per_part=1).parent
    assert default_runs_dir("demo", odd_tree) == Path("runs") / "demo-mura-my_mura_v2_"
    fracatlas = make_fracatlas_sample(tmp_path / "FracAtlas", n_images=10, long_side=64)
    assert default_runs_dir("cpu", fracatlas) == Path("runs") / "cpu-fracatlas"
    elsewhere = make_fracatlas_sample(tmp_path / "fractures_2024", n_images=10, long_side=64)
    assert default_runs_dir("cpu", elsewhere) == Path("runs") / "cpu-fracatlas-fractures_2024"
    manifest = tmp_path / "my_wrists.csv"
    manifest.write_text("path,label\n")
    assert default_runs_dir("cpu", manifest) == Path("runs") / "cpu-manifest-my_wrists"
    odd = tmp_path / "my wrists (v2).csv"
    odd.write_text("path,label\n")
    assert default_runs_dir("cpu", odd) == Path("runs") / "cpu-manifest-my_wrists_v2_"


def test_a_second_data_folder_of_one_kind_plans_fresh_runs_and_each_reuses_its_own(tmp_path, monkeypatch):
    """After `make demo` (data/sample), `mura reproduce --data-root other/MURA-tree --profile demo` trains
    afresh beside it, and repeating either command reuses its own runs."""
    monkeypatch.chdir(tmp_path)
    make_sample(tmp_path / "data" / "sample", patients_per_part=1)
    make_sample(tmp_path / "other" / "MURA-tree", patients_per_part=1, seed=1)

    def planned(data_root):
        plan = plan_reproduce(data_root, "reports", "demo", None, ("01_custom_cnn",))["01_custom_cnn"]
        return {Path(config.out_dir).relative_to(tmp_path).as_posix(): status for config, status, _ in plan}, plan

    for data_root in ("data/sample", "other/MURA-tree"):  # in turn: the first trains, then the second beside it
        statuses, plan = planned(data_root)
        assert set(statuses.values()) == {"train"}, statuses
        for config, _, _ in plan:
            finished_run(config)
    for data_root, folder in (("data/sample", "demo-mura-sample"), ("other/MURA-tree", "demo-mura-mura-tree")):
        statuses, _ = planned(data_root)
        assert statuses == {
            f"runs/{folder}/custom_cnn_multitask_seed0": "reuse",
            f"runs/{folder}/custom_cnn_single_task_seed0": "reuse",
        }


def test_a_conflict_says_first_what_differs_and_the_safe_way_out(tiny_mura, tmp_path, capsys):
    runs_dir, settings = tmp_path / "runs", {"variants": ["multitask"], "epochs": 1, "img_size": 32}
    arguments = ["reproduce", "--data-root", str(tiny_mura), "--out", str(tmp_path / "reports")]
    arguments += ["--runs-dir", str(runs_dir)]
    for name, value in settings.items():
        arguments += ["-p", name, json.dumps(value)]
    [(config, _, _)] = plan_reproduce(tiny_mura, tmp_path / "reports", "demo", settings, ("01_custom_cnn",),
                                      runs_dir=runs_dir)["01_custom_cnn"]  # fmt: skip
    other = make_sample(tmp_path / "other" / "MURA-tree", patients_per_part=1).parent
    folder = finished_run(replace(config, data_root=str(other)))  # a run of another MURA tree
    capsys.readouterr()
    assert cli_main(arguments) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first == (
        f"mura reproduce: error: these runs were trained on another data folder ({other}, not {tiny_mura}): "
        "pass --runs-dir runs/demo-mura for this data"  # this data's default runs folder
    )
    shutil.rmtree(folder)
    folder = finished_run(replace(config, epochs=7))
    assert cli_main(arguments) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("mura reproduce: error: these runs were trained with other settings (epochs 7, not 1)")
    assert first.endswith("pass another --runs-dir for these settings, or the earlier settings to continue them")
    (folder / "config.json").unlink()
    config.save(folder / "config.json")
    (folder / "best.pt").unlink()
    assert cli_main(arguments) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first == (
        "mura reproduce: error: these runs are damaged (missing best.pt): restore those files, "
        "or add --restart custom_cnn_multitask_seed0"
    )


def test_runs_of_other_data_in_the_runs_dir_point_to_another_runs_dir_first(tiny_mura, tmp_path):
    runs_dir, settings = tmp_path / "runs", {"variants": ["multitask"], "epochs": 1, "img_size": 32}
    [(config, _, _)] = plan_reproduce(tiny_mura, tmp_path / "reports", "demo", settings, ("01_custom_cnn",),
                                 runs_dir=runs_dir)["01_custom_cnn"]  # fmt: skip
    fracatlas = make_fracatlas_sample(tmp_path / "FracAtlas", n_images=10, long_side=64)
    folder = finished_run(replace(config, data_root=str(fracatlas)))  # another dataset's run
    before = folder_bytes(folder)
    plan = plan_reproduce(tiny_mura, tmp_path / "reports", "demo", settings, ("01_custom_cnn",), runs_dir=runs_dir)
    with pytest.raises(ReproduceError) as refused:
        refuse_conflicts(plan)
    ways = " ".join(str(refused.value).split()).split("Either ", 1)[1]
    assert ways.startswith(f"choose another --runs-dir for this data (e.g. --runs-dir {runs_dir}-mura)")
    assert ways.index("--runs-dir") < ways.index("--restart")  # the runs of other data are not restarted first
    with pytest.raises(ReproduceError, match=r"for this data \(e\.g\. --runs-dir runs/demo-mura\)"):
        refuse_conflicts(plan, False, Path("runs/demo-mura"))  # what mura reproduce passes: this data's default
    assert folder_bytes(folder) == before

    moved = tmp_path / "copy" / "MURA-v1.1"  # another folder of one dataset (a copy cannot be told apart)
    shutil.copytree(tiny_mura, moved)
    (folder / "config.json").unlink()
    replace(config, data_root=str(moved)).save(folder / "config.json")
    with pytest.raises(ReproduceError) as refused:
        refuse_conflicts(plan_reproduce(tiny_mura, tmp_path / "reports", "demo", settings, ("01_custom_cnn",),
                                        runs_dir=runs_dir))  # fmt: skip
    first, message = str(refused.value).splitlines()[0], " ".join(str(refused.value).split())
    assert first == (
        f"these runs were trained on another data folder ({moved}, not {tiny_mura}): "
        f"pass --runs-dir {runs_dir}-mura for this data"
    )
    assert "run the same command as before (the saved settings) to continue them" in message  # its own data_root
    assert (folder / "best.pt").is_file()


def test_plan_names_runs_left_in_the_old_default_runs_folders(tiny_mura, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    finished_run(tiny_config(tiny_mura, tmp_path / "runs" / "demo" / "custom_cnn_multitask_seed0"))
    reproduce(tiny_mura, "reports", "demo", {"variants": ["multitask"]}, ("01_custom_cnn",), dry_run=True)
    printed = " ".join(capsys.readouterr().out.split())
    assert f"note: {tmp_path / 'runs' / 'demo'} holds 1 trained run(s)" in printed
    assert (
        f"--runs-dir {tmp_path / 'runs' / 'demo'} to reuse them, or move them into {tmp_path / 'runs' / 'demo-mura'}"
        in printed
    )
    # the default before the data folder's name joined it: runs/<profile>-<dataset>
    sample = make_sample(tmp_path / "data" / "sample", patients_per_part=1).parent
    finished_run(tiny_config(sample, tmp_path / "runs" / "demo-mura" / "custom_cnn_multitask_seed0"))
    reproduce(sample, "reports", "demo", {"variants": ["multitask"]}, ("01_custom_cnn",), dry_run=True)
    printed = " ".join(capsys.readouterr().out.split())
    earlier, current = tmp_path / "runs" / "demo-mura", tmp_path / "runs" / "demo-mura-sample"
    assert f"note: {earlier} holds 1 trained run(s)" in printed
    assert f"--runs-dir {earlier} to reuse them, or move them into {current}" in printed


def test_plan_names_runs_left_in_the_reports_folder_by_earlier_versions(tiny_mura, tmp_path, capsys):
    finished_run(tiny_config(tiny_mura, tmp_path / "reports" / "runs" / "custom_cnn_multitask_seed0"))
    reproduce(tiny_mura, tmp_path / "reports", "demo", {"variants": ["multitask"]}, ("01_custom_cnn",),
              dry_run=True, runs_dir=tmp_path / "runs")  # fmt: skip
    printed = " ".join(capsys.readouterr().out.split())
    assert f"note: {tmp_path / 'reports' / 'runs'} holds 1 trained run(s)" in printed
    assert f"--runs-dir {tmp_path / 'reports' / 'runs'}" in printed


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_clean_removes_reports_sample_and_cache_but_never_trained_runs(tmp_path):
    shutil.copy(REPOSITORY / "Makefile", tmp_path / "Makefile")
    run = finished_run(tiny_config(tmp_path / "data" / "sample", tmp_path / "runs" / "demo" / "resnet50_seed0"))
    earlier = finished_run(tiny_config(tmp_path / "data", tmp_path / "reports" / "runs" / "custom_cnn_seed0"))
    for name in ("reports/README.md", "reports/index.md", "reports/figures/roc.png", "reports/notebooks/00.ipynb"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "data" / "sample" / "MURA-v1.1").mkdir(parents=True)
    (tmp_path / "data" / "mura_cache").mkdir()
    run_bytes, earlier_bytes = folder_bytes(run), folder_bytes(earlier)

    clean = subprocess.run(["make", "-s", "clean"], cwd=tmp_path, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    assert folder_bytes(run) == run_bytes and folder_bytes(earlier) == earlier_bytes
    assert "kept reports/runs: it holds trained runs" in clean.stdout
    assert sorted(path.name for path in (tmp_path / "reports").iterdir()) == ["README.md", "runs"]
    assert not (tmp_path / "data" / "sample").exists() and not (tmp_path / "data" / "mura_cache").exists()

    clean_runs = subprocess.run(["make", "-s", "clean-runs"], cwd=tmp_path, capture_output=True, text=True)
    assert clean_runs.returncode == 0, clean_runs.stderr
    assert "deleting the trained runs in runs/ (1 run folder(s))" in clean_runs.stdout
    assert "deleting the trained runs in reports/runs/ (1 run folder(s))" in clean_runs.stdout
    assert not (tmp_path / "runs").exists() and not run_records(earlier)


# 10. a dry run is quick: reduced steps, scaled by pixels


def test_full_profile_dry_run_times_reduced_steps_only(tiny_mura, tmp_path, monkeypatch, capsys):
    timed = []

    def fake_step_seconds(config, steps=2):
        timed.append((config.model, config.img_size, config.batch_size))
        return 2.0, 0.5  # forward + backward, optimizer

    monkeypatch.setattr(step_estimate, "step_seconds", fake_step_seconds)
    monkeypatch.setattr(step_estimate, "seconds_per_step", lambda *a, **k: pytest.fail("a full-size step was timed"))
    reproduce(tiny_mura, tmp_path / "reports", "full", {"device": "cpu"}, dry_run=True, runs_dir=tmp_path / "runs")
    assert sorted(timed) == [
        (model, step_estimate.ESTIMATE_IMG_SIZE, step_estimate.ESTIMATE_BATCH_SIZE)
        for model in sorted(("custom_cnn", "resnet50", "efficientnet_b0", "densenet169"))
    ]  # once per model, at 96 px and 4 images instead of 320 px and 64
    printed = " ".join(capsys.readouterr().out.split())
    assert "training left, roughly:" in printed and "scaled by pixels" in printed and "factor of" in printed
    assert not (tmp_path / "reports").exists() and not (tmp_path / "runs").exists()

    full = TrainConfig(model="resnet50", img_size=320, batch_size=64, device="cpu")
    scale = 64 * 320**2 / (step_estimate.ESTIMATE_BATCH_SIZE * step_estimate.ESTIMATE_IMG_SIZE**2)
    threads = torch.get_num_threads()  # timed on one thread, trained on these
    assert step_estimate.estimate_seconds_per_step(full) == pytest.approx((2.0 * scale + 0.5) / threads)
    assert torch.get_num_threads() == threads


def test_estimate_of_a_real_step_is_positive():
    config = TrainConfig(model="custom_cnn", img_size=320, batch_size=64, device="cpu")
    assert step_estimate.estimate_seconds_per_step(config) > 0


def test_the_estimate_times_a_reduced_step_on_one_thread_and_scales_it(monkeypatch):
    """Forward + backward scale with the pixels of a batch, the optimizer step does not, and the
    whole divides by the threads training uses; the reduced step runs on one thread."""
    timed = []

    def fake_step_seconds(config, steps=2):
        timed.append((config.img_size, config.batch_size, torch.get_num_threads()))
        return 0.01, 0.002  # (forward + backward, optimizer) of the reduced step

    monkeypatch.setattr(step_estimate, "step_seconds", fake_step_seconds)
    threads = torch.get_num_threads()
    config = TrainConfig(model="custom_cnn", img_size=192, batch_size=32, device="cpu")
    estimate = step_estimate.estimate_seconds_per_step(config, img_size=96, batch_size=4)
    assert timed == [(96, 4, 1)] and torch.get_num_threads() == threads  # one thread while timing, restored after
    assert estimate == pytest.approx((0.01 * (32 * 192**2) / (4 * 96**2) + 0.002) / threads)
    small = TrainConfig(model="custom_cnn", img_size=64, batch_size=2, device="cpu")  # smaller than the reduced step
    assert step_estimate.estimate_seconds_per_step(small, img_size=96, batch_size=4) == pytest.approx(0.012 / threads)
    assert timed[-1][:2] == (64, 2)
