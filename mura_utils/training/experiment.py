"""One experiment = train a model, then evaluate its best checkpoint on the dataset's held-out test
split (MURA valid, FracAtlas's fixed 20%) and leave a self-describing run folder that the reports read.

    runs_dir/<model>_<variant>_seed<k>/  config.json best.pt last.pt history.csv val_predictions.csv
                                         test_predictions.csv test_metrics.json run.json

run.json is written last (and removed first when a folder is trained again): it marks a finished
run. Asked for a run whose folder exists, ``run_models`` reuses a finished one as it is, resumes
an interrupted one from last.pt, and refuses one trained with other settings or a damaged one (a
finished run without its best.pt, an interrupted one without its last.pt): results are never
overwritten by accident.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import pandas as pd

from mura_utils.config import ConfigMismatchError, TrainConfig, describe_mismatch, format_differences
from mura_utils.evaluation.predictions import add_confidence_intervals, evaluate_checkpoint_views
from mura_utils.models.checkpoint import read_checkpoint
from mura_utils.models.networks import build_model, count_parameters
from mura_utils.training.fit import fit
from mura_utils.training.run_folder import run_records
from mura_utils.utils.io import atomic_write_text

VARIANTS = {"multitask": True, "single_task": False}
# run.json is written last: a finished run has all of these, and reports read them
FINISHED_PURPOSES = {
    "best.pt": "the weights its test predictions came from",
    "test_predictions.csv": "its test-set predictions",
    "test_metrics.json": "its test-set metrics",
    "run.json": "its record",
}
FINISHED_FILES = tuple(FINISHED_PURPOSES)
MISSING = "missing"  # run_status's "saved" value for a file a damaged run lacks


def is_synthetic(data_root: str | Path, dataset: str = "auto") -> bool:
    """True for an embedded synthetic sample (``mura sample`` and its siblings leave a marker file in it)."""
    from mura_utils.data.registry import dataset_folder
    from mura_utils.synthetic import SYNTHETIC_MARKER

    return (dataset_folder(data_root, dataset) / SYNTHETIC_MARKER).is_file()


def run_experiment(config: TrainConfig, resume: bool = False, test_split: str | None = None) -> Path:
    """Train ``config`` then evaluate best.pt on ``test_split`` (default: the dataset's held-out split,
    MURA valid or FracAtlas/manifest test); returns the run folder."""
    from mura_utils.data.registry import dataset_folder, dataset_info, load_index
    from mura_utils.training.run_folder import claim_run_folder

    info = dataset_info(config.data_root, config.dataset)
    test_split = test_split or info.test_split
    if load_index(config.data_root, config.dataset, splits=(test_split,)).empty:  # not after hours of training
        raise ValueError(f"{config.data_root}: no images in the held-out split {test_split!r} to test on")
    out_dir = Path(config.out_dir)
    claim_run_folder(out_dir, resume, remove=False)  # refuse a trained run's folder before touching run.json
    if int(os.environ.get("RANK", "0")) == 0:
        (out_dir / "run.json").unlink(missing_ok=True)  # not finished until written again
    result = fit(config, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return out_dir  # under torchrun only rank 0 evaluates and writes
    evaluation = {
        "threshold": 0.5,
        "device": config.device,
        "cache_dir": config.cache_dir,
        "use_cache": config.use_cache,
        "progress": config.progress,
        "dataset": config.dataset,
    }
    # plain and test-time augmentation (each image averaged with its mirror) in one pass: the report compares them
    views = evaluate_checkpoint_views(out_dir / "best.pt", config.data_root, test_split, **evaluation)
    (predictions, metrics), (tta_predictions, _) = views["plain"], views["tta"]
    metrics = add_confidence_intervals(metrics, predictions, seed=config.seed)  # patient bootstrap
    atomic_write_text(out_dir / "test_predictions.csv", predictions.to_csv(index=False))
    atomic_write_text(out_dir / "test_predictions_tta.csv", tta_predictions.to_csv(index=False))
    atomic_write_text(out_dir / "test_metrics.json", json.dumps(metrics, indent=2))
    checkpoint = read_checkpoint(out_dir / "best.pt")
    history = result.history
    info = {
        "run_name": out_dir.name,
        "model": config.model,
        "variant": "multitask" if config.multitask else "single_task",
        "parameters": count_parameters(
            build_model(config.model, False, config.multitask, num_body_parts=len(info.body_parts))
        ),
        "train_seconds": float(history["train_seconds"].sum()) if len(history) else 0.0,
        "images_per_second": float(history["images_per_second"].median()) if len(history) else 0.0,
        "best_epoch": int(checkpoint["epoch"]),
        "threshold": float(checkpoint["threshold"]),
        "img_size": int(checkpoint["img_size"]),
        "epochs": config.epochs,
        "pretrained": bool(config.pretrained and config.model != "custom_cnn"),
        "seed": config.seed,
        "data_root": str(dataset_folder(config.data_root, config.dataset)),
        "synthetic": is_synthetic(config.data_root, config.dataset),
        "test_split": test_split,
        "dataset": info.to_dict(),
    }
    atomic_write_text(out_dir / "run.json", json.dumps(info, indent=2))
    return out_dir


def run_folder_name(model: str, variant: str, seed: int) -> str:
    return f"{model}_{variant}_seed{seed}"


# What a training notebook passes to ``run_models`` besides its TrainConfig fields, each under its own name
# (``mura reproduce`` plans a notebook's runs by calling ``model_run_configs`` with the same parameters)
NOTEBOOK_ARGUMENTS = ("models", "runs_dir", "variants", "seeds", "extra_models", "model_settings", "config_dir")
# A run's identity, set by the notebook (folder, variant, seed, data), never by a settings file or model_settings
_RUN_IDENTITY = ("model", "multitask", "seed", "out_dir")


def settings_file(config_dir: str | Path, model: str) -> dict:
    """A profile's training settings for ``model``: the TrainConfig fields of ``config_dir/<model>.json``
    (``configs/<profile>/``, which ``mura train --config`` reads too), without ``model``."""
    path = Path(config_dir) / f"{model}.json"
    named = TrainConfig.load(path).model  # refuses an unreadable file or unknown fields, naming the file
    values = json.loads(path.read_text())
    if named != model:
        raise ValueError(f"{path}: names model {named!r}; a settings file <model>.json holds that model's settings")
    misplaced = sorted(set(values) & {"data_root", "out_dir", "multitask", "seed"})
    if misplaced:
        raise ValueError(f"{path}: {misplaced} belong to each run (data, folder, variant, seed), not to a profile")
    return {name: value for name, value in values.items() if name != "model"}


def model_run_configs(
    models: Sequence[str],
    runs_dir: str | Path,
    variants: Sequence[str] = ("multitask", "single_task"),
    seeds: Sequence[int] = (0,),
    model_settings: dict[str, dict] | None = None,
    extra_models: Sequence[str] = (),
    config_dir: str | Path = "",
    **settings,
) -> list[TrainConfig]:
    """The TrainConfig of every run (model x variant x seed, ``models`` then ``extra_models``) with its
    folder under ``runs_dir``. A model's settings: ``settings`` (TrainConfig fields: epochs, img_size, ...),
    then, with ``config_dir`` (a profile's ``configs/<profile>``), its ``<model>.json`` there (a model
    without one, e.g. an extra backbone, takes the first model's), then ``model_settings[model]``. Both
    the notebooks (through ``run_models``) and ``mura reproduce``'s plan call this. Invalid settings fail here."""
    models = [*models, *extra_models]
    unknown = [variant for variant in variants if variant not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    if "seed" in settings:
        raise ValueError("pass seeds=[...] (a list), not seed=")
    if isinstance(seeds, (int, str)) or not seeds or not all(isinstance(seed, int) for seed in seeds):
        raise ValueError(f"seeds must be a non-empty list of whole numbers, got {seeds!r}")
    model_settings = dict(model_settings or {})
    strangers = sorted(set(model_settings) - set(models))
    if strangers:
        raise ValueError(f"model_settings name model(s) {strangers} that are not trained here ({list(models)})")
    known = {field.name for field in fields(TrainConfig)} - set(_RUN_IDENTITY)
    for model, values in model_settings.items():
        wrong = sorted(set(values) - known) if isinstance(values, dict) else [repr(values)]
        if wrong:
            raise ValueError(f"model_settings[{model!r}]: {wrong} are not per-model training settings")
    per_model = {}
    for model in models:
        own = Path(config_dir) / f"{model}.json"
        profile = settings_file(config_dir, model if own.is_file() else models[0]) if config_dir else {}
        per_model[model] = {**settings, **profile, **model_settings.get(model, {})}
    return [
        TrainConfig(
            model=model,
            multitask=VARIANTS[variant],
            seed=seed,
            out_dir=str(Path(runs_dir) / run_folder_name(model, variant, seed)),
            **per_model[model],
        )
        for seed in seeds  # every model and variant of seed 0 first: an early stop still compares them
        for model in models
        for variant in variants
    ]


def missing_run_files(folder: str | Path) -> dict[str, str]:
    """{file: what it is} for what a run folder with records lacks to be reused (a finished run:
    run.json) or continued (an interrupted one); {} when nothing is missing."""
    folder = Path(folder)
    if (folder / "run.json").is_file():
        needed = {name: FINISHED_PURPOSES[name] for name in FINISHED_FILES}
    else:
        needed = {"last.pt": "the checkpoint an interrupted run continues from"}
    return {name: purpose for name, purpose in needed.items() if not (folder / name).is_file()}


def run_status(config: TrainConfig) -> tuple[str, dict[str, tuple]]:
    """What to do with ``config``'s run folder, settings compared before anything else:
    ("train", {}) when it is new (or holds only the config.json of a start that failed before
    saving a checkpoint); ("reuse", {}) when it finished with these settings; ("resume", {}) when
    it was interrupted (last.pt); ("conflict", {setting: (saved, requested)}) when it holds another
    experiment; ("conflict", {file: (MISSING, what it is)}) when it holds this one damaged (a
    finished run without its best.pt, say), which neither training nor reuse may touch."""
    folder = Path(config.out_dir)
    if not folder.is_dir() or not any(folder.iterdir()):
        return "train", {}
    saved_path = folder / "config.json"
    if not saved_path.is_file():
        return "conflict", {"config.json": ("missing: not a run folder of mura_utils", "a run folder")}
    if not run_records(folder):
        return "train", {}  # a start that failed before its first epoch: nothing to keep, config.json is replaced
    try:
        saved = TrainConfig.load(saved_path)
    except (ValueError, TypeError) as error:
        return "conflict", {"config.json": (f"unreadable ({error})", "a run config")}
    differences = saved.differences(config)
    if differences:
        return "conflict", differences
    missing = missing_run_files(folder)
    if missing:
        return "conflict", {name: (MISSING, purpose) for name, purpose in missing.items()}
    return ("reuse" if (folder / "run.json").is_file() else "resume"), {}


def damaged_files(differences: dict[str, tuple]) -> list[str]:
    """The files a conflict of ``run_status`` names as missing ([] for other conflicts)."""
    return [name for name, (saved, _) in differences.items() if saved == MISSING and name != "config.json"]


def describe_conflict(differences: dict[str, tuple]) -> str:
    """Why ``run_status`` calls a folder a conflict, in a line."""
    if "config.json" in differences:
        return f"config.json {differences['config.json'][0]}"
    missing = damaged_files(differences)
    if missing:
        listed = ", ".join(f"{name} ({differences[name][1]})" for name in missing)
        return f"a damaged run of these settings, missing {listed}"
    return f"trained with other settings ({format_differences(differences)})"


def run_or_reuse(config: TrainConfig, way_out: str = "") -> Path:
    """Train and evaluate ``config`` unless its folder already holds that finished run; an
    interrupted one continues from last.pt; a folder with other settings, or a damaged run, is
    refused untouched."""
    status, differences = run_status(config)
    if status == "conflict":
        folder = Path(config.out_dir)
        if damaged_files(differences):
            raise ConfigMismatchError(
                f"{folder}: {describe_conflict(differences)}. Nothing was changed; "
                + (way_out or "restore those files, or move the folder away to train it again")
            )
        raise ConfigMismatchError(
            describe_mismatch(
                folder,
                differences,
                way_out or "move that folder away, or choose another runs_dir, to train these settings",
            )
        )
    if status == "reuse":
        if config.verbose:
            print(f"{Path(config.out_dir).name}: finished earlier with these settings, reused as it is", flush=True)
        return Path(config.out_dir)
    return run_experiment(config, resume=status == "resume")


def run_models(
    models: Sequence[str],
    runs_dir: str | Path,
    variants: Sequence[str] = ("multitask", "single_task"),
    seeds: Sequence[int] = (0,),
    model_settings: dict[str, dict] | None = None,
    extra_models: Sequence[str] = (),
    config_dir: str | Path = "",
    **settings,
) -> list[Path]:
    """Train and evaluate every model as multi-task and single-task runs, per seed, so the
    multi-task claim is measured, not assumed; the runs and their settings are ``model_run_configs``'s
    (the same arguments). Finished runs are reused and interrupted ones resumed (see ``run_or_reuse``);
    every folder is checked before anything trains."""
    configs = model_run_configs(models, runs_dir, variants, seeds, model_settings, extra_models, config_dir, **settings)
    for config in configs:  # refuse before any training, not after the first run
        if run_status(config)[0] == "conflict":
            run_or_reuse(config)
    return [run_or_reuse(config) for config in configs]


def run_summary(run_dirs: list[str | Path]) -> pd.DataFrame:
    """A quick table of finished runs (the full comparison with CIs lives in mura_utils.report)."""
    rows = []
    for run_dir in run_dirs:
        info = json.loads((Path(run_dir) / "run.json").read_text())
        metrics = json.loads((Path(run_dir) / "test_metrics.json").read_text())
        rows.append(
            {
                "run": info["run_name"],
                "image_accuracy": metrics["image"]["accuracy"],
                "image_auroc": metrics["image"]["auroc"],
                "study_kappa": metrics["study"]["kappa"],
                "study_auroc": metrics["study"]["auroc"],
                "body_part_accuracy": metrics["body_part_accuracy"],
                "best_epoch": info["best_epoch"],
                "train_seconds": round(info["train_seconds"], 1),
            }
        )
    return pd.DataFrame(rows)
