"""Training end to end on a tiny synthetic tree: outputs, determinism, resume, atomic checkpoints,
evaluation on MURA valid, and 2-process DDP (gloo) on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import interrupt_in_epoch

from mura_utils.cli import main as cli_main
from mura_utils.config import TrainConfig
from mura_utils.data.dataset import patient_split
from mura_utils.data.mura import load_mura_index
from mura_utils.models import checkpoint as checkpoint_module
from mura_utils.models.checkpoint import read_checkpoint
from mura_utils.training import fit as train_module
from mura_utils.training.fit import fit
from mura_utils.training.state import restore_rng_states


def tiny_config(data_root, out_dir, **changes) -> TrainConfig:
    config = TrainConfig(
        model="custom_cnn",
        data_root=str(data_root),
        out_dir=str(out_dir),
        epochs=2,
        img_size=32,
        batch_size=16,
        seed=0,
        device="cpu",
        progress=False,
        verbose=False,
        cache_dir=str(Path(out_dir).parent / "cache"),
    )
    return replace(config, **changes)


def test_fit_writes_outputs_and_chooses_on_patient_split(tiny_mura, tmp_path):
    result = fit(tiny_config(tiny_mura, tmp_path / "run"))
    for name in ("best.pt", "last.pt", "history.csv", "config.json", "val_predictions.csv"):
        assert (tmp_path / "run" / name).is_file(), name
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    best = read_checkpoint(tmp_path / "run" / "best.pt")
    assert best["epoch"] == result.best_epoch
    assert best["config"]["model"] == "custom_cnn" and best["img_size"] == 32
    # the checkpoint is chosen on patients of MURA *train*, never on MURA valid
    validation = pd.read_csv(tmp_path / "run" / "val_predictions.csv")
    assert set(validation["split"]) == {"train"}
    _, expected_val = patient_split(load_mura_index(tiny_mura, splits=("train",)), 0.1, 0)
    assert sorted(validation["path"]) == sorted(expected_val["path"])
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_same_seed_gives_identical_metrics(tiny_mura, tmp_path):
    first = fit(tiny_config(tiny_mura, tmp_path / "a"))
    second = fit(tiny_config(tiny_mura, tmp_path / "b"))
    assert json.dumps(first.best_metrics, sort_keys=True) == json.dumps(second.best_metrics, sort_keys=True)
    pd.testing.assert_frame_equal(
        first.history.drop(columns=["train_seconds", "images_per_second"]),
        second.history.drop(columns=["train_seconds", "images_per_second"]),
    )


def test_early_stopping_only_when_asked(tiny_mura, tmp_path, monkeypatch):
    """patience=N stops N epochs after the last improvement; the default runs every epoch."""
    real_metrics = train_module.compute_metrics

    def flat_after_first_epoch(predictions, **options):
        metrics = real_metrics(predictions, **options)
        metrics["study"]["auroc"] = 0.9 if len(calls) == 0 else 0.5  # epoch 1 is best, the rest never improve
        calls.append(1)
        return metrics

    calls = []
    monkeypatch.setattr(train_module, "compute_metrics", flat_after_first_epoch)
    stopped = fit(tiny_config(tiny_mura, tmp_path / "stopped", epochs=6, patience=2, selection_metric="study_auroc"))
    assert list(stopped.history["epoch"]) == [1, 2, 3] and stopped.best_epoch == 1
    calls.clear()
    full = fit(tiny_config(tiny_mura, tmp_path / "full", epochs=4, selection_metric="study_auroc"))
    assert list(full.history["epoch"]) == [1, 2, 3, 4] and full.best_epoch == 1


def test_training_batches_same_with_and_without_cache(tiny_mura, tmp_path):
    """The cache path (one gather per batch) and the DataLoader path (persistent workers decoding
    PNGs) give the same batches, each image in the same place, for the same order, epoch after epoch."""
    from mura_utils.data.dataset import RadiographDataset, open_image_cache

    index = load_mura_index(tiny_mura, splits=("train",)).head(20)
    config = tiny_config(tiny_mura, tmp_path / "run", batch_size=6, num_workers=1)
    cache = open_image_cache(index, 32, tiny_mura, tmp_path / "cache", progress=False)
    cached = train_module.TrainingBatches(
        RadiographDataset(index, 32, raw=True, cache=cache), config, True, torch.device("cpu")
    )
    decoded = train_module.TrainingBatches(RadiographDataset(index, 32, raw=True), config, True, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        order = torch.randperm(len(index), generator=generator).tolist()
        pairs = list(zip(cached.epoch(order), decoded.epoch(order)))
        assert len(pairs) == len(index) // 6 == cached.steps(len(order)) == decoded.steps(len(order))  # drop_last
        for ours, theirs in pairs:
            for key in ("position", "image", "label", "body_part"):
                assert torch.equal(ours[key], theirs[key]), key
        assert [p for ours, _ in pairs for p in ours["position"].tolist()] == order[:18]


def same_training(first: Path, second: Path) -> None:
    """Two run folders hold the same history (bar wall-clock timings) and bit-identical last weights."""
    timing = ["train_seconds", "images_per_second"]
    histories = [pd.read_csv(folder / "history.csv").drop(columns=timing) for folder in (first, second)]
    pd.testing.assert_frame_equal(*histories, check_exact=True)
    weights = [read_checkpoint(folder / "last.pt")["state_dict"] for folder in (first, second)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0]), "weights differ"


def test_use_cache_changes_no_result(tiny_mura, tmp_path):
    """use_cache is result-neutral: the same batches in the same order, each image augmented alike,
    and the same dropout (the DataLoader draws no seed from the global torch stream)."""
    fit(tiny_config(tiny_mura, tmp_path / "cached"))
    fit(tiny_config(tiny_mura, tmp_path / "decoded", use_cache=False))
    same_training(tmp_path / "cached", tmp_path / "decoded")


def test_resume_with_workers_equals_the_uninterrupted_run(tiny_mura, tmp_path, monkeypatch):
    """num_workers is result-neutral across a resume: persistent workers take their seed from the
    loader's own generator, not from the global stream that dropout draws from."""
    settings = {"use_cache": False, "num_workers": 1}
    fit(tiny_config(tiny_mura, tmp_path / "straight", **settings))
    interrupt_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_config(tiny_mura, tmp_path / "resumed", **settings))
    monkeypatch.undo()
    fit(tiny_config(tiny_mura, tmp_path / "resumed", **settings), resume=True)
    same_training(tmp_path / "straight", tmp_path / "resumed")


def test_fit_without_cache(tiny_mura, tmp_path):
    result = fit(tiny_config(tiny_mura, tmp_path / "run", epochs=1, use_cache=False))
    assert result.best_epoch == 1 and not (tmp_path / "cache").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (benchmarks/gpu_check.sh runs it on a GPU)")
def test_fit_on_cuda(tiny_mura, tmp_path):
    """Pinned batches, the prefetch thread, non_blocking copies and augmentation on the GPU."""
    result = fit(tiny_config(tiny_mura, tmp_path / "run", epochs=2, device="cuda"))
    assert (tmp_path / "run" / "best.pt").is_file() and result.history["train_loss"].notna().all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (benchmarks/gpu_check.sh runs it on a GPU)")
def test_resume_on_cuda_restores_the_cuda_generator(tiny_mura, tmp_path):
    fit(tiny_config(tiny_mura, tmp_path / "run", epochs=1, device="cuda"))
    states = read_checkpoint(tmp_path / "run" / "last.pt")["rng"]["ranks"][0]
    assert states["cuda"] is not None
    torch.cuda.manual_seed(12345)  # anything else
    generators = {"shuffle": torch.Generator(), "augment": torch.Generator()}
    restore_rng_states(states, generators, torch.device("cuda"))
    assert torch.equal(torch.cuda.get_rng_state(), states["cuda"])
    assert torch.equal(generators["augment"].get_state(), states["augment"])


def test_resume_continues_from_last_checkpoint(tiny_mura, tmp_path, monkeypatch):
    straight = fit(tiny_config(tiny_mura, tmp_path / "straight", epochs=3))
    interrupt_in_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_config(tiny_mura, tmp_path / "resumed", epochs=3))
    monkeypatch.undo()
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 2
    resumed = fit(tiny_config(tiny_mura, tmp_path / "resumed", epochs=3), resume=True)
    assert list(resumed.history["epoch"]) == [1, 2, 3]
    columns = ["train_loss", "val_study_auroc", "val_image_kappa"]
    pd.testing.assert_frame_equal(straight.history[columns], resumed.history[columns])


def test_resume_with_another_seed_is_refused_before_anything_changes(tiny_mura, tmp_path, capsys):
    """The patient split depends on the seed: resuming with another one would leak validation patients."""
    out = tmp_path / "run"
    fit(tiny_config(tiny_mura, out, epochs=1))
    before = {name: (out / name).read_bytes() for name in ("config.json", "last.pt", "best.pt")}
    arguments = ["train", "--data-root", str(tiny_mura), "--epochs", "1", "--img-size", "32", "--batch-size", "16"]
    arguments += ["--out", str(out), "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert cli_main([*arguments, "--resume", "--seed", "1"]) == 2
    error = capsys.readouterr().err
    assert "seed: saved 0, requested 1" in error and str(out) in error
    assert {name: (out / name).read_bytes() for name in before} == before
    assert cli_main([*arguments, "--resume", "--seed", "0"]) == 0  # same settings (bar cosmetics): fine


@pytest.mark.parametrize(
    "change, named",
    [({"selection_metric": "study_kapa"}, "selection_metric"), ({"val_fraction": 1.5}, "val_fraction")],
)
def test_config_is_validated_at_construction(change, named):
    with pytest.raises(ValueError, match=named):
        TrainConfig(**change)


def test_crash_while_saving_never_leaves_a_half_written_best(tiny_mura, tmp_path, monkeypatch):
    out = tmp_path / "run"
    interrupt_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_config(tiny_mura, out, epochs=2))
    monkeypatch.undo()
    before = {name: (out / name).read_bytes() for name in ("best.pt", "last.pt")}

    def exploding_save(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(checkpoint_module.torch, "save", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_config(tiny_mura, out, epochs=2), resume=True)  # epoch 2 saves best.pt or last.pt: both crash
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not list(out.glob("*.tmp"))


def test_cli_train_then_evaluate_writes_metrics_json(tiny_mura, tmp_path):
    out = tmp_path / "cli_run"
    assert (
        cli_main(
            [
                "train",
                "--data-root",
                str(tiny_mura),
                "--model",
                "custom_cnn",
                "--epochs",
                "1",
                "--img-size",
                "32",
                "--batch-size",
                "16",
                "--out",
                str(out),
                "--no-progress",
                "--device",
                "cpu",
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    assert (
        cli_main(
            [
                "evaluate",
                "--checkpoint",
                str(out / "best.pt"),
                "--data-root",
                str(tiny_mura),
                "--split",
                "valid",
                "--out",
                str(tmp_path / "eval"),
                "--no-progress",
                "--device",
                "cpu",
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    keys = {"accuracy", "auroc", "kappa", "sensitivity", "specificity", "f1"}
    assert set(metrics["image"]) == keys and set(metrics["study"]) == keys
    valid = load_mura_index(tiny_mura, splits=("valid",))
    assert metrics["n_images"] == len(valid) and metrics["n_studies"] == valid["study"].nunique()
    assert set(metrics["per_body_part"]) <= set(valid["body_part"])
    assert all(set(v) == {"study_kappa", "study_auroc", "studies"} for v in metrics["per_body_part"].values())
    assert 0 <= metrics["body_part_accuracy"] <= 1
    predictions = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    assert sorted(predictions["path"]) == sorted(valid["path"])


def test_cli_reports_bad_data_root(tmp_path, capsys):
    assert cli_main(["train", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert str(tmp_path) in capsys.readouterr().err


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_torchrun_two_gloo_processes(tiny_mura, tmp_path):
    """DDP on CPU: finishes, one checkpoint, each validation image predicted exactly once."""
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "mura_utils.cli",
        "train",
        "--data-root",
        str(tiny_mura),
        "--model",
        "custom_cnn",
        "--epochs",
        "2",
        "--img-size",
        "32",
        "--batch-size",
        "8",
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]
    validation = pd.read_csv(out / "val_predictions.csv")
    _, expected_val = patient_split(load_mura_index(tiny_mura, splits=("train",)), 0.1, 0)
    assert len(validation) == len(expected_val)
    assert validation["path"].is_unique and set(validation["path"]) == set(expected_val["path"])
    assert len(pd.read_csv(out / "history.csv")) == 2
    ranks = read_checkpoint(out / "last.pt")["rng"]["ranks"]  # every rank's augmentation stream is saved
    assert len(ranks) == 2 and not torch.equal(ranks[0]["augment"], ranks[1]["augment"])
    torch.load(out / "last.pt", weights_only=True)  # tensors and plain types only
