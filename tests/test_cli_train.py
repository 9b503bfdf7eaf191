"""``mura train`` options generated from TrainConfig (aliases, --config reruns, unknown models) and
EMA of the weights (validated, selected, saved, resumed). Tiny custom_cnn runs at 32 px."""

from __future__ import annotations

import json
import typing
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch
from conftest import interrupt_in_epoch

from mura_utils.cli import build_parser
from mura_utils.cli import main as cli_main
from mura_utils.cli.train_options import train_config as _train_config
from mura_utils.config import TrainConfig
from mura_utils.models.checkpoint import read_checkpoint
from mura_utils.models.restore import load_model
from mura_utils.training import fit as train_module
from mura_utils.training.fit import fit


def parse_train(*flags: str) -> TrainConfig:
    return _train_config(build_parser().parse_args(["train", *flags]))


def test_every_config_field_is_an_option_with_its_help():
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    squeezed = help_text.replace(" ", "")  # argparse wraps lines at hyphens too
    for item in fields(TrainConfig):
        flag = "--" + item.name.replace("_", "-")
        assert flag in help_text, flag
        assert item.metadata["help"].replace(" ", "") in squeezed, item.name
        if typing.get_type_hints(TrainConfig)[item.name] is bool:
            assert f"--no-{item.name.replace('_', '-')}" in help_text


def test_defaults_come_from_the_dataclass_and_flags_set_every_kind_of_field():
    assert parse_train("--out", "o") == TrainConfig(out_dir="o")
    config = parse_train(
        "--out", "o", "--weight-decay", "0.05", "--no-augment", "--no-amp", "--val-fraction", "0.2",
        "--img-size", "48", "--cache-dir", "c", "--model", "resnet18", "--class-weighting",
    )  # fmt: skip
    assert (config.weight_decay, config.augment, config.amp, config.val_fraction) == (0.05, False, False, 0.2)
    assert (config.img_size, config.cache_dir, config.model, config.class_weighting) == (48, "c", "resnet18", True)
    assert parse_train("--out", "o", "--img-size", "none").img_size is None


def test_old_flag_spellings_still_work():
    config = parse_train(
        "--out", "o", "--no-pretrained", "--weights", "w.pth", "--single-task", "--no-cache", "--no-progress",
        "--ema", "0.99",
    )  # fmt: skip
    assert config == TrainConfig(
        out_dir="o", pretrained=False, weights_path="w.pth", multitask=False, use_cache=False, progress=False,
        ema_decay=0.99,
    )  # fmt: skip
    assert build_parser().parse_args(["train", "--out", "o", "--resume"]).resume


def test_a_saved_config_reruns_exactly_and_explicit_flags_override_it(tmp_path):
    saved = TrainConfig(model="resnet18", epochs=3, weight_decay=0.02, augment=False, out_dir=str(tmp_path / "r"))
    saved.save(tmp_path / "config.json")
    assert parse_train("--config", str(tmp_path / "config.json")) == saved
    assert parse_train("--config", str(tmp_path / "config.json"), "--epochs", "5", "--augment") == replace(
        saved, epochs=5, augment=True
    )


def test_bad_config_files_and_missing_out_are_named(tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"model": "resnet18", "epoch": 3}')
    assert cli_main(["train", "--config", str(tmp_path / "bad.json")]) == 2
    assert "bad.json" in capsys.readouterr().err
    assert cli_main(["train", "--data-root", str(tmp_path)]) == 2
    assert "--out is required" in capsys.readouterr().err


def test_unknown_model_fails_at_once_with_close_matches(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train_module, "fit", lambda *args, **kwargs: pytest.fail("fit must not start"))
    assert cli_main(["train", "--out", str(tmp_path / "o"), "--model", "convnext_tiyn"]) == 2
    error = capsys.readouterr().err
    assert "unknown model 'convnext_tiyn'" in error and "convnext_tiny" in error


def tiny_config(data_root, out_dir, **changes) -> TrainConfig:
    config = TrainConfig(
        model="custom_cnn", data_root=str(data_root), out_dir=str(out_dir), epochs=2, img_size=32, batch_size=16,
        device="cpu", progress=False, verbose=False, cache_dir=str(Path(out_dir).parent / "cache"),
    )  # fmt: skip
    return replace(config, **changes)


def test_ema_weights_are_validated_selected_and_saved(tiny_mura, tmp_path, monkeypatch):
    validated = []
    real_validation = train_module.validation_predictions

    def record(model, *args, **kwargs):
        validated.append({name: value.clone() for name, value in model.state_dict().items()})
        return real_validation(model, *args, **kwargs)

    monkeypatch.setattr(train_module, "validation_predictions", record)
    result = fit(tiny_config(tiny_mura, tmp_path / "ema", ema_decay=0.5))
    last = read_checkpoint(tmp_path / "ema" / "last.pt")
    ema_weights = {name.removeprefix("module."): value for name, value in last["ema_state_dict"].items()}
    assert int(ema_weights.pop("n_averaged")) > 1
    # what was validated in the last epoch is the EMA, not the raw weights last.pt resumes from
    torch.testing.assert_close(validated[-1], ema_weights)
    differs = [name for name, value in last["state_dict"].items() if not torch.equal(value, ema_weights[name])]
    assert differs and "backbone.blocks.0.1.running_mean" in differs  # BatchNorm statistics are averaged too
    best = read_checkpoint(tmp_path / "ema" / "best.pt")
    torch.testing.assert_close(best["state_dict"], validated[result.best_epoch - 1])
    model, _ = load_model(tmp_path / "ema" / "best.pt")  # a plain model: loads like any checkpoint
    torch.testing.assert_close(model.state_dict(), best["state_dict"])
    assert json.loads((tmp_path / "ema" / "config.json").read_text())["ema_decay"] == 0.5


def test_resume_restores_the_ema(tiny_mura, tmp_path, monkeypatch):
    straight = fit(tiny_config(tiny_mura, tmp_path / "straight", ema_decay=0.5, epochs=3))
    interrupt_in_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_config(tiny_mura, tmp_path / "resumed", ema_decay=0.5, epochs=3))
    monkeypatch.undo()
    resumed = fit(tiny_config(tiny_mura, tmp_path / "resumed", ema_decay=0.5, epochs=3), resume=True)
    columns = ["train_loss", "val_study_auroc", "val_image_kappa"]
    assert straight.history[columns].equals(resumed.history[columns])
    straight_ema = read_checkpoint(tmp_path / "straight" / "last.pt")["ema_state_dict"]
    torch.testing.assert_close(read_checkpoint(tmp_path / "resumed" / "last.pt")["ema_state_dict"], straight_ema)


def test_bad_ema_decay_is_named(tiny_mura, tmp_path):
    with pytest.raises(ValueError, match="ema_decay"):
        fit(tiny_config(tiny_mura, tmp_path / "bad", ema_decay=1.5, epochs=1))
