"""Each profile's training settings are plain TrainConfig files, configs/<profile>/<model>.json: the
notebooks and `mura reproduce` read them, and `mura train --config` on one of them trains exactly the run
that the profile trains for that model."""

from __future__ import annotations

import json
from dataclasses import fields

import nbformat
import pytest

from mura_utils.cli import main as cli_main
from mura_utils.config import TrainConfig
from mura_utils.models.registry import MODEL_ORDER
from mura_utils.pipeline import CONFIG_DIR, NOTEBOOK_DIR, PROFILES, declared_defaults, plan_reproduce
from mura_utils.training import experiment

PROFILE_NAMES = ("demo", "cpu", "full")
TRAINING_NOTEBOOKS = ("01_custom_cnn", "02_resnet50", "03_efficientnet_densenet")


def test_every_profile_has_one_file_per_model_of_training_settings_only():
    assert sorted(path.name for path in CONFIG_DIR.iterdir() if path.is_dir()) == sorted(PROFILES)
    train_fields = {field.name for field in fields(TrainConfig)}
    for profile in PROFILE_NAMES:
        files = sorted((CONFIG_DIR / profile).glob("*.json"))
        assert sorted(path.stem for path in files) == sorted(MODEL_ORDER), profile
        for path in files:
            values = json.loads(path.read_text())
            assert set(values) <= train_fields, path
            assert not set(values) & {"data_root", "out_dir", "multitask", "seed"}, path  # each run's own
            assert TrainConfig.load(path).model == values["model"] == path.stem
            # notebooks 04 and 06 evaluate on the device the profile's runs trained on
            assert values["device"] == PROFILES[profile]["device"], path
        # only the notebooks' other parameters stay in the profile table (the device also serves 04 and 06)
        assert set(PROFILES[profile]) & train_fields <= {"device", "seed"}


@pytest.mark.parametrize("profile", PROFILE_NAMES)
def test_mura_train_with_a_profile_file_writes_the_config_the_profile_trains(profile, tiny_mura, tmp_path, monkeypatch):
    """Same config.json apart from out_dir: `mura train` stops right after writing it (no training)."""
    plan = plan_reproduce(
        tiny_mura, tmp_path / "reports", profile, None, TRAINING_NOTEBOOKS, runs_dir=tmp_path / "runs"
    )
    planned = {
        config.model: config for runs in plan.values() for config, _, _ in runs if config.multitask and config.seed == 0
    }
    assert sorted(planned) == sorted(MODEL_ORDER)
    save = TrainConfig.save

    def save_then_stop(config, path):
        save(config, path)
        raise RuntimeError("stopped after config.json")

    monkeypatch.setattr(TrainConfig, "save", save_then_stop)
    for model, config in planned.items():
        out_dir = tmp_path / "train" / model
        arguments = ["train", "--config", str(CONFIG_DIR / profile / f"{model}.json"), "--data-root", str(tiny_mura)]
        assert cli_main([*arguments, "--out-dir", str(out_dir)]) == 2  # stopped on purpose
        written = json.loads((out_dir / "config.json").read_text())
        assert written.pop("out_dir") == str(out_dir)
        expected = config.to_dict()
        expected.pop("out_dir")
        assert written == expected, model


def test_minus_p_wins_over_the_files_for_every_model(tiny_mura, tmp_path):
    plan = plan_reproduce(tiny_mura, tmp_path, "demo", {"img_size": 48, "lr": 0.01}, TRAINING_NOTEBOOKS,
                          runs_dir=tmp_path / "runs")  # fmt: skip
    configs = [config for runs in plan.values() for config, _, _ in runs]
    assert len(configs) == 8 and {(config.img_size, config.lr) for config in configs} == {(48, 0.01)}
    # the rest of each model's file stays: the demo's DenseNet169 keeps its 5 epochs, EfficientNet-B0 its 8
    epochs = {config.model: config.epochs for config in configs}
    assert epochs == {
        model: json.loads((CONFIG_DIR / "demo" / f"{model}.json").read_text())["epochs"] for model in epochs
    }
    assert epochs["densenet169"] == 5 and epochs["efficientnet_b0"] == 8


@pytest.mark.parametrize("name", TRAINING_NOTEBOOKS)
def test_a_notebook_opened_alone_keeps_its_parameters_cell_defaults(name, tmp_path):
    defaults = declared_defaults(NOTEBOOK_DIR / f"{name}.ipynb")
    assert defaults["config_dir"] == "" and defaults["model_settings"] == {}
    arguments = {key: value for key, value in defaults.items() if key in experiment.NOTEBOOK_ARGUMENTS}
    settings = {key: value for key, value in defaults.items() if key in {field.name for field in fields(TrainConfig)}}
    for config in experiment.model_run_configs(**arguments, **settings):
        assert {key: getattr(config, key) for key in settings} == settings


def test_a_model_without_its_own_file_takes_the_first_models(tmp_path):
    """An extra backbone of notebook 03 (``extra_models``) trains with the settings of the notebook's first model."""
    configs = experiment.model_run_configs(["efficientnet_b0"], tmp_path, ["multitask"], [0], extra_models=["resnet18"],
                                           config_dir=CONFIG_DIR / "demo", data_root="x")  # fmt: skip
    first, extra = configs
    assert extra.model == "resnet18" and (extra.img_size, extra.epochs, extra.lr) == (
        first.img_size,
        first.epochs,
        first.lr,
    )


def test_a_settings_file_may_not_name_a_runs_own_fields(tmp_path):
    (tmp_path / "custom_cnn.json").write_text(json.dumps({"model": "custom_cnn", "seed": 3}))
    with pytest.raises(ValueError, match=r"custom_cnn.json: \['seed'\] belong to each run"):
        experiment.model_run_configs(["custom_cnn"], tmp_path / "runs", config_dir=tmp_path)
    (tmp_path / "custom_cnn.json").write_text(json.dumps({"model": "resnet50"}))
    with pytest.raises(ValueError, match="names model 'resnet50'"):
        experiment.model_run_configs(["custom_cnn"], tmp_path / "runs", config_dir=tmp_path)


def test_training_notebooks_name_the_settings_files_they_read():
    for name in TRAINING_NOTEBOOKS:
        notebook = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        [parameters] = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
        assert 'config_dir = ""' in parameters.source and "../configs/" in parameters.source
