"""Checkpoints are read with weights_only=True: a planted pickle payload is refused unrun by predict,
evaluate and train --resume; checkpoints written by the save path (old numpy RNG state included) load.
Local ImageNet weights files (--weights) likewise, whatever torch's own default."""

from __future__ import annotations

import io
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import interrupt_in_epoch, save_untrained_checkpoint

from mura_utils.cli import main as cli_main
from mura_utils.models.checkpoint import CheckpointError, read_checkpoint
from mura_utils.models.restore import load_model


class CreatesFile:
    """Unpickling this calls ``open(marker, 'w')``: the file appearing proves the payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_payload(path: Path, marker: Path) -> Path:
    """A checkpoint that looks right (model_name, state_dict, format) but carries a payload."""
    contents = torch.load(save_untrained_checkpoint(path), weights_only=True)
    contents["metrics"] = {"auroc": CreatesFile(marker)}
    torch.save(contents, path)
    return path


@pytest.fixture
def planted(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "payload_ran"
    return plant_payload(tmp_path / "best.pt", marker), marker


def test_the_planted_payload_is_live(tmp_path):
    """Control: the unsafe loader would run it, so the refusals below are not vacuous."""
    marker = tmp_path / "ran_unsafely"
    path = plant_payload(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_read_checkpoint_refuses_a_payload_without_running_it(planted):
    path, marker = planted
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    message = str(caught.value)
    assert str(path) in message and "non-weight objects" in message and "open" in message
    with pytest.raises(CheckpointError, match="non-weight"):
        load_model(path)
    assert not marker.exists()


def test_cli_predict_refuses_a_payload(planted, tiny_mura, capsys):
    path, marker = planted
    image = sorted((tiny_mura / "valid").glob("XR_*/patient*/study*/*.png"))[0]
    assert cli_main(["predict", str(image), "--checkpoint", str(path), "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and "non-weight objects" in error
    assert not marker.exists()


def test_cli_evaluate_refuses_a_payload(planted, tiny_mura, tmp_path, capsys):
    path, marker = planted
    argv = ["evaluate", "--checkpoint", str(path), "--data-root", str(tiny_mura), "--out", str(tmp_path / "eval")]
    assert cli_main([*argv, "--device", "cpu", "--no-cache", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and "non-weight objects" in error
    assert not marker.exists() and not (tmp_path / "eval").exists()


def train_argv(data_root: Path, out: Path, epochs: int) -> list[str]:
    return [
        "train",
        "--data-root",
        str(data_root),
        "--out",
        str(out),
        "--epochs",
        str(epochs),
        "--img-size",
        "32",
        "--batch-size",
        "16",
        "--no-pretrained",
        "--device",
        "cpu",
        "--cache-dir",
        str(out.parent / "cache"),
        "--no-progress",
    ]


def test_cli_train_resume_refuses_a_payload_in_last_pt(tiny_mura, tmp_path, capsys):
    out, marker = tmp_path / "run", tmp_path / "payload_ran"
    out.mkdir()
    plant_payload(out / "last.pt", marker)
    assert cli_main([*train_argv(tiny_mura, out, 1), "--resume"]) == 2
    error = capsys.readouterr().err
    assert str(out / "last.pt") in error and "non-weight objects" in error
    assert not marker.exists() and not (out / "best.pt").exists()


def test_resume_from_a_last_pt_of_the_old_save_path_with_numpy_rng_state(tiny_mura, tmp_path, monkeypatch):
    """last.pt files written before the plain-types rule hold np.random.get_state() arrays and numpy
    scalars; they still load (through a numpy-only allow-list) and training resumes from them."""
    out = tmp_path / "run"
    interrupt_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        cli_main(train_argv(tiny_mura, out, 2))
    monkeypatch.undo()
    fresh = torch.load(out / "last.pt", weights_only=True)  # the current save path: plain already
    rank_zero = fresh["rng"]["ranks"][0]  # one entry per DDP rank
    assert isinstance(rank_zero["numpy"][1], torch.Tensor)
    old = dict(fresh)
    old["rng"] = {**rank_zero, "numpy": np.random.get_state()}  # the old layout: rank 0's states only
    old["best_score"] = np.float64(fresh["best_score"])
    torch.save(old, out / "last.pt")  # what the previous save path wrote
    with pytest.raises(Exception, match="numpy"):
        torch.load(out / "last.pt", weights_only=True)  # so the allow-list is what makes it load
    loaded = read_checkpoint(out / "last.pt")
    assert isinstance(loaded["rng"]["numpy"][1], np.ndarray)
    assert cli_main([*train_argv(tiny_mura, out, 2), "--resume"]) == 0
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert read_checkpoint(out / "last.pt")["epoch"] == 2


def test_save_checkpoint_writes_only_plain_values(tmp_path):
    state = np.random.get_state()
    path = save_untrained_checkpoint(
        tmp_path / "best.pt",
        metrics={"auroc": np.float64(0.75), "counts": np.array([3, 4])},
        rng={"numpy": state},
    )
    with open(path, "rb") as handle:
        loaded = torch.load(io.BytesIO(handle.read()), weights_only=True)  # no allow-list needed
    assert loaded["metrics"]["auroc"] == 0.75 and type(loaded["metrics"]["auroc"]) is float
    assert loaded["metrics"]["counts"].tolist() == [3, 4]
    assert isinstance(loaded["state_dict"], OrderedDict)
    np.random.set_state(state)
    expected = np.random.rand(3)
    np.random.set_state(loaded["rng"]["numpy"])  # numpy takes the tensor key back: the same stream
    assert np.random.rand(3).tolist() == expected.tolist()
    model, checkpoint = load_model(path)
    assert checkpoint["epoch"] == 1 and not model.training


def test_save_checkpoint_names_a_value_that_is_not_plain(tmp_path):
    with pytest.raises(TypeError, match=r"checkpoint\['extra'\]\['when'\].*Path"):
        save_untrained_checkpoint(tmp_path / "best.pt", extra={"when": Path("x")})
    assert not (tmp_path / "best.pt").exists()


# --- local ImageNet weights files (--weights) ------------------------------------------------------


def plant_weights_payload(path: Path, marker: Path) -> Path:
    """A resnet18 weights file in a training-checkpoint wrapper whose extra entry carries a payload."""
    import timm

    state = timm.create_model("resnet18", pretrained=False).state_dict()
    torch.save({"state_dict": state, "best_metric": CreatesFile(marker)}, path)
    return path


def test_weights_file_with_a_payload_is_refused_unrun_even_where_torch_load_defaults_to_unsafe(tmp_path, monkeypatch):
    """torch < 2.6 (allowed by pyproject) unpickles by default: simulated by a torch.load whose default is
    weights_only=False. build_model still refuses the file, names it, and the payload never runs."""
    from mura_utils.models.networks import build_model
    from mura_utils.models.weights import WeightsFileError

    marker = tmp_path / "payload_ran"
    path = plant_weights_payload(tmp_path / "resnet18.pth", marker)
    real_load = torch.load

    def load_with_old_default(*args, weights_only=False, **kwargs):
        return real_load(*args, weights_only=weights_only, **kwargs)

    monkeypatch.setattr(torch, "load", load_with_old_default)
    with pytest.raises(WeightsFileError) as caught:
        build_model("resnet18", pretrained=True, weights_path=str(path))
    message = str(caught.value)
    assert str(path) in message and "non-weight objects" in message and "nothing from this file was run" in message
    assert not marker.exists()
    load_with_old_default(path)  # control: the old default runs it, so the refusal above is not vacuous
    assert marker.exists()


def test_cli_train_refuses_a_weights_file_with_a_payload(tiny_mura, tmp_path, capsys):
    marker = tmp_path / "payload_ran"
    path = plant_weights_payload(tmp_path / "resnet18.pth", marker)
    argv = [arg for arg in train_argv(tiny_mura, tmp_path / "run", 1) if arg != "--no-pretrained"]
    assert cli_main([*argv, "--model", "resnet18", "--weights", str(path)]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and "non-weight objects" in error
    assert not marker.exists() and not (tmp_path / "run" / "best.pt").exists()
