"""Finished training runs as Python objects: run folders (run.json, config.json, test predictions,
history, optional test-time-augmentation predictions), grouped by model, variant and every other
training setting over seeds, and the ensembles built from them (over seeds of one experiment; over
the multi-task models). Runs of different datasets are never pooled."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import pandas as pd

from mura_utils.config import _PATH_FIELDS, RESULT_NEUTRAL_FIELDS, TrainConfig
from mura_utils.data import mura as mura_dataset
from mura_utils.evaluation.compare import read_predictions  # one reader of prediction CSVs for report and compare
from mura_utils.models.registry import model_label, model_rank

ENSEMBLE_LABEL = "Ensemble (multi-task mean)"  # the report's name for model "ensemble" (not a registry model)
VARIANT_LABELS = {"multitask": "multi-task", "single_task": "single-task"}
REQUIRED_COLUMNS = ("path", "body_part", "study", "label", "probability")
# run.json "dataset" of runs written before datasets were recorded: they all trained on MURA
MURA_DATASET = mura_dataset.INFO.to_dict()  # runs written before datasets were recorded are MURA runs
DATASET_REQUIRED = ("name", "title", "body_parts", "positive_label", "negative_label")
# TrainConfig fields that name the experiment itself (model, variant, seed) rather than its settings
NOT_SETTINGS = frozenset({"model", "multitask", "seed", "out_dir"}) | RESULT_NEUTRAL_FIELDS
# run.json records what a run really used where config.json records what was asked for (img_size
# None: the model's default; pretrained: ignored by custom_cnn; data_root: MURA-v1.1 or its parent;
# dataset "auto": the one detected)
EFFECTIVE_FIELDS = ("img_size", "pretrained", "data_root", "epochs")
NO_CONFIG = "(no config.json)"  # the value of a setting of a run folder without config.json
NOT_RECORDED = "(not recorded)"  # a setting that the run's config.json does not have (another version)


@dataclass
class Run:
    """One finished training run: its run.json, test predictions (one row per image) and history."""

    name: str
    model: str
    variant: str  # "multitask" | "single_task"
    info: dict
    predictions: pd.DataFrame
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    path: Path | None = None
    tta_predictions: pd.DataFrame | None = None  # test_predictions_tta.csv, when the run has one
    kind: str = "run"  # "run" | "seed_ensemble" | "tta" | "ensemble"
    settings: dict = field(default_factory=dict)  # what it was trained and tested with (see run_settings)
    setting: str = ""  # what sets it apart from the same model's other experiments (see name_settings)

    @property
    def multitask(self) -> bool:
        return self.variant == "multitask"

    @property
    def seed(self):
        """run.json's training seed (None for runs written before seeds were recorded)."""
        return self.info.get("seed")

    @property
    def settings_key(self) -> str:
        """The settings as one comparable value: runs with equal keys are one experiment over seeds."""
        return json.dumps(self.settings, sort_keys=True, default=str)

    @property
    def dataset(self) -> dict:
        """run.json's "dataset" (runs of older versions: MURA), with its test split from run.json."""
        return run_dataset(self.info)

    @property
    def label(self) -> str:
        """How figures and tables name the run: 'ResNet50 · multi-task', 'ResNet50 · multi-task ·
        img_size 128' where the same model was also trained with other settings."""
        if self.model == "ensemble":
            return ENSEMBLE_LABEL
        base = f"{report_model_label(self.model)} · {VARIANT_LABELS.get(self.variant, self.variant)}"
        base += f" · {self.setting}" if self.setting else ""
        if self.kind == "seed_ensemble":
            return f"{base} · {len(self.info.get('members', []))}-seed ensemble"
        return f"{base} + TTA" if self.kind == "tta" else base


def report_model_label(model: str) -> str:
    """How tables and figures name a model: the registry's label ("DenseNet169"), the ensemble's
    ENSEMBLE_LABEL, any other (timm) name as it is."""
    return ENSEMBLE_LABEL if model == "ensemble" else model_label(model)


def run_dataset(info: dict, where: str = "run.json") -> dict:
    """The dataset a run was trained and tested on, from run.json's "dataset" (MURA when absent:
    runs written before datasets were recorded); raises naming ``where`` when a key is missing."""
    recorded = info.get("dataset")
    if recorded is None:
        dataset = dict(MURA_DATASET)
    elif not isinstance(recorded, dict) or any(key not in recorded for key in DATASET_REQUIRED):
        raise ValueError(f'{where}: "dataset" must be an object with keys {list(DATASET_REQUIRED)}, got {recorded!r}')
    else:
        dataset = {"has_patients": True, "citation": "", "licence": "", "has_boxes": False, **recorded}
        dataset["body_parts"] = [str(part) for part in recorded["body_parts"]]
    dataset["test_split"] = str(info.get("test_split") or dataset.get("test_split") or "valid")
    return dataset


def dataset_short_name(dataset: dict) -> str:
    """How the report's sentences name a dataset: 'MURA' (as before datasets were recorded), else its title."""
    return "MURA" if dataset["name"] == "mura" else str(dataset["title"])


def report_dataset(runs: Sequence[Run]) -> dict:
    """The one dataset of ``runs`` (their test splits joined); raises naming the run folders of each
    dataset when they were trained on different ones: a report never pools datasets."""
    by_dataset: dict[tuple, list[Run]] = {}
    for run in runs:
        dataset = run.dataset
        by_dataset.setdefault((dataset["name"], dataset["title"]), []).append(run)
    if len(by_dataset) > 1:
        folders = "; ".join(
            f"{title} ({name}): {', '.join(_folder_name(run) for run in members)}"
            for (name, title), members in by_dataset.items()
        )
        raise ValueError(
            f"runs of {len(by_dataset)} datasets cannot share one report or ensemble ({folders}); "
            "put each dataset's run folders in a runs folder of their own and report them separately"
        )
    datasets = [run.dataset for run in runs] or [run_dataset({})]
    splits = ", ".join(dict.fromkeys(dataset["test_split"] for dataset in datasets))
    body_parts = list(dict.fromkeys(part for dataset in datasets for part in dataset["body_parts"]))
    return {**datasets[0], "test_split": splits, "body_parts": body_parts}


def run_settings(folder: Path, info: dict) -> dict:
    """What a run was trained and tested with, to tell experiments apart: config.json's TrainConfig
    fields minus the model, variant, seed and RESULT_NEUTRAL_FIELDS (paths resolved; a field that
    config.json predates at its default, the behaviour before it existed), run.json's effective
    img_size, pretrained, data_root (not for a manifest: run.json records its folder, config.json the
    file) and epochs in place of the requested ones, the dataset's name and the test split. Without
    config.json the other fields are NO_CONFIG."""
    path = folder / "config.json"
    defaults = {item.name: item.default for item in fields(TrainConfig)}
    if path.is_file():
        try:
            config = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not a JSON config file ({error})") from error
        if not isinstance(config, dict):
            raise ValueError(f"{path}: a config file holds one JSON object of TrainConfig fields")
        values = {**defaults, **config}
        for name in _PATH_FIELDS:
            if values.get(name):
                values[name] = str(Path(values[name]).expanduser().resolve())
    else:
        values = dict.fromkeys(defaults, NO_CONFIG)
    manifest = str(values.get("data_root") or "").lower().endswith(".csv")
    effective = [name for name in EFFECTIVE_FIELDS if not (name == "data_root" and manifest)]
    values.update((name, info[name]) for name in effective if info.get(name) is not None)
    values["dataset"] = run_dataset(info)["name"]
    values["test_split"] = str(info.get("test_split", "valid"))
    return {name: value for name, value in values.items() if name not in NOT_SETTINGS}


def _setting_text(name: str, value) -> str:
    return f"{name} {value}" if value is not NOT_RECORDED else f"{name} not recorded"


def name_settings(runs: Sequence[Run]) -> None:
    """Set each run's ``setting``: the settings whose values differ between runs of its model
    (either variant), e.g. 'img_size 128', so every experiment's rows and curves are told apart;
    '' where the model was trained with one set of settings."""
    by_model: dict[str, list[Run]] = {}
    for run in runs:
        if run.kind == "run" and run.model != "ensemble":
            by_model.setdefault(run.model, []).append(run)
    for members in by_model.values():
        names = list(dict.fromkeys(name for run in members for name in run.settings))
        varying = [
            name
            for name in names
            if len({json.dumps(run.settings.get(name, NOT_RECORDED), default=str) for run in members}) > 1
        ]
        for run in members:
            values = {name: run.settings.get(name, NOT_RECORDED) for name in varying}
            parts = [_setting_text(name, value) for name, value in values.items() if value != NO_CONFIG]
            parts += ["no config.json"] if NO_CONFIG in values.values() else []
            run.setting = " · ".join(parts)


def _sort_key(run: Run) -> tuple:
    return (model_rank(run.model), run.model, not run.multitask, run.name)


def load_run(folder: str | Path) -> Run:
    """Read one run folder; raises naming the folder when its test predictions are missing."""
    folder = Path(folder)
    try:
        info = json.loads((folder / "run.json").read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{folder / 'run.json'}: not valid JSON ({error})") from error
    predictions_path = folder / "test_predictions.csv"
    if not predictions_path.is_file():
        raise FileNotFoundError(
            f"{folder}: has run.json but no test_predictions.csv (the run did not finish its test-set evaluation)"
        )
    predictions = read_predictions(predictions_path, REQUIRED_COLUMNS)
    tta_path = folder / "test_predictions_tta.csv"
    tta_predictions = read_predictions(tta_path, REQUIRED_COLUMNS) if tta_path.is_file() else None
    history_path = folder / "history.csv"
    history = pd.read_csv(history_path) if history_path.is_file() else pd.DataFrame()
    has_parts = "predicted_body_part" in predictions and predictions["predicted_body_part"].notna().any()
    variant = info.get("variant") or ("multitask" if has_parts else "single_task")
    run_dataset(info, str(folder / "run.json"))  # a malformed "dataset" fails here, naming the file
    return Run(
        name=info.get("run_name", folder.name),
        model=info.get("model", "unknown"),
        variant=variant,
        info=info,
        predictions=predictions,
        history=history,
        path=folder,
        tta_predictions=tta_predictions,
        settings=run_settings(folder, info),
    )


def load_runs(runs_dir: str | Path) -> list[Run]:
    """Every run folder under ``runs_dir`` (folders without run.json are skipped), ordered by model
    and then multi-task before single-task, so tables and legends read the same way every time;
    runs of a model trained with several settings are named by what differs (``name_settings``)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"{runs_dir}: runs folder not found")
    folders = sorted(folder for folder in runs_dir.iterdir() if (folder / "run.json").is_file())
    runs = sorted((load_run(folder) for folder in folders), key=_sort_key)
    name_settings(runs)
    return runs


def _seed_order(seed) -> tuple:
    """Sort key of a run.json seed: numeric order (2 before 10); unrecorded or non-numeric seeds last."""
    try:
        return (0, float(seed), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(seed))


def _folder_name(run: Run) -> str:
    return run.path.name if run.path is not None else run.name


def _newest_first(run: Run) -> tuple:
    """run.json's modification time (newest first), then the folder name for a stable order."""
    run_json = run.path / "run.json" if run.path is not None else None
    written = run_json.stat().st_mtime if run_json is not None and run_json.is_file() else float("-inf")
    return (-written, _folder_name(run))


def drop_repeated_seeds(runs: Sequence[Run]) -> tuple[list[Run], dict[str, str]]:
    """Runs with one folder per (model, variant, settings, seed), and {left-out folder: why}:
    ``mura reproduce`` writes ``<model>_<variant>_seed<k>`` next to older ``<model>_<variant>``
    folders of the same seed, which would otherwise count as extra seeds. Of repeats, the folder
    named by ``experiment.run_folder_name`` is kept, else the one whose run.json is newest. Runs
    without a recorded seed are all kept (they cannot be told apart); runs with other settings
    (image size, epochs, ...) are other experiments, not repeats."""
    from mura_utils.training.experiment import run_folder_name

    repeats: dict[tuple, list[Run]] = {}
    for run in runs:
        if run.kind == "run" and run.model != "ensemble" and run.seed is not None:
            repeats.setdefault((run.model, run.variant, run.settings_key, _seed_order(run.seed)), []).append(run)
    left_out: dict[str, str] = {}
    dropped: set[int] = set()
    for (model, variant, _, (numeric, value, _)), members in repeats.items():
        if len(members) < 2:
            continue
        seed = int(value) if numeric == 0 and value.is_integer() else members[0].seed
        named = [run for run in members if _folder_name(run) == run_folder_name(model, variant, seed)]
        kept = named[0] if named else min(members, key=_newest_first)
        why = "the folder mura reproduce names" if named else "the newest run.json"
        for run in members:
            if run is not kept:
                dropped.add(id(run))
                left_out[_folder_name(run)] = f"repeats seed {seed} of {run.label}; kept {_folder_name(kept)}, {why}"
    return [run for run in runs if id(run) not in dropped], left_out


def warn_left_out(left_out: dict[str, str]) -> None:
    """One warning naming the run folders left out of a report because they repeat a seed."""
    if left_out:
        folders = "; ".join(f"{folder}: {why}" for folder, why in left_out.items())
        warnings.warn(f"run folder(s) left out of the report, they repeat a seed: {folders}", stacklevel=3)


def seed_groups(runs: Sequence[Run]) -> dict[tuple[str, str, str], list[Run]]:
    """Trained runs grouped by experiment, (model, variant, settings_key) from run.json and
    config.json (never from folder names): runs that differ in anything but the seed (image size,
    epochs, learning rate, pretraining, data, ...) are separate groups, never averaged. Seeds in
    numeric order; a seed with several folders counts once (see ``drop_repeated_seeds``, warns).
    Names each run's setting (``name_settings``); raises when the runs span several datasets."""
    report_dataset(runs)
    runs, left_out = drop_repeated_seeds(runs)
    warn_left_out(left_out)
    trained = [run for run in runs if run.kind == "run" and run.model != "ensemble"]
    name_settings(trained)
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in trained:
        groups.setdefault((run.model, run.variant, run.settings_key), []).append(run)
    return {key: sorted(members, key=lambda r: (_seed_order(r.seed), r.name)) for key, members in groups.items()}
