"""Finished training runs as Python objects: run folders (run.json, test predictions, history,
optional test-time-augmentation predictions), grouped by (model, variant) over seeds, and the
ensembles built from them (over seeds of one model; over the multi-task models)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..compare import read_predictions  # one reader of prediction CSVs for report and compare

ENSEMBLE_NAME = "ensemble (multi-task mean)"
MODEL_ORDER = ("custom_cnn", "resnet50", "densenet169", "efficientnet_b0")
MODEL_LABELS = {
    "custom_cnn": "Custom CNN",
    "resnet50": "ResNet50",
    "densenet169": "DenseNet169",
    "efficientnet_b0": "EfficientNet-B0",
    "ensemble": "Ensemble (multi-task mean)",
}
VARIANT_LABELS = {"multitask": "multi-task", "single_task": "single-task"}
REQUIRED_COLUMNS = ("path", "body_part", "study", "label", "probability")


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

    @property
    def multitask(self) -> bool:
        return self.variant == "multitask"

    @property
    def seed(self):
        """run.json's training seed (None for runs written before seeds were recorded)."""
        return self.info.get("seed")

    @property
    def label(self) -> str:
        """How figures and tables name the run: 'ResNet50 · multi-task'."""
        if self.model == "ensemble":
            return MODEL_LABELS["ensemble"]
        base = f"{MODEL_LABELS.get(self.model, self.model)} · {VARIANT_LABELS.get(self.variant, self.variant)}"
        if self.kind == "seed_ensemble":
            return f"{base} · {len(self.info.get('members', []))}-seed ensemble"
        return f"{base} + TTA" if self.kind == "tta" else base


def _sort_key(run: Run) -> tuple:
    model_rank = MODEL_ORDER.index(run.model) if run.model in MODEL_ORDER else len(MODEL_ORDER)
    return (model_rank, run.model, not run.multitask, run.name)


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
    return Run(
        name=info.get("run_name", folder.name),
        model=info.get("model", "unknown"),
        variant=variant,
        info=info,
        predictions=predictions,
        history=history,
        path=folder,
        tta_predictions=tta_predictions,
    )


def load_runs(runs_dir: str | Path) -> list[Run]:
    """Every run folder under ``runs_dir`` (folders without run.json are skipped), ordered by model
    and then multi-task before single-task, so tables and legends read the same way every time."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"{runs_dir}: runs folder not found")
    folders = sorted(folder for folder in runs_dir.iterdir() if (folder / "run.json").is_file())
    return sorted((load_run(folder) for folder in folders), key=_sort_key)


def mean_predictions(members: Sequence[Run], name: str) -> pd.DataFrame:
    """Mean image probability over ``members``, matched by path; since a study's probability is
    the mean of its images', its study probability is the mean of theirs too."""
    if not members:
        raise ValueError(f"{name}: no runs to average")
    index_columns = [
        c for c in ("path", "split", "body_part", "patient", "study", "label") if c in members[0].predictions
    ]
    base = members[0].predictions[index_columns].reset_index(drop=True)
    if base["path"].duplicated().any():
        raise ValueError(f"run {members[0].name}: test_predictions.csv lists an image twice")
    probabilities = []
    for run in members:
        table = run.predictions.set_index("path")
        if table.index.duplicated().any() or set(table.index) != set(base["path"]):
            raise ValueError(
                f"run {run.name} was tested on other images than run {members[0].name}; "
                "an ensemble needs the same test set"
            )
        if (table["label"].reindex(base["path"]).to_numpy() != base["label"].to_numpy()).any():
            raise ValueError(f"run {run.name} labels some test images differently from run {members[0].name}")
        probabilities.append(table["probability"].reindex(base["path"]).to_numpy(dtype=float))
    ensemble = base.copy()
    ensemble["probability"] = np.mean(probabilities, axis=0)
    ensemble["predicted_body_part"] = None  # the members' body-part probabilities are not stored
    ensemble["body_part_probability"] = np.nan
    ensemble.attrs["name"] = name
    ensemble.attrs["members"] = [run.name for run in members]
    return ensemble


def ensemble_predictions(runs: Sequence[Run]) -> pd.DataFrame:
    """Mean image probability over the multi-task runs (every model and seed, each seed once), matched by path."""
    members = [
        run for run in drop_repeated_seeds(runs)[0] if run.multitask and run.model != "ensemble" and run.kind == "run"
    ]
    if not members:
        raise ValueError("no multi-task runs to ensemble")
    return mean_predictions(members, ENSEMBLE_NAME)


def _total(members: Sequence[Run], key: str) -> float:
    values = [run.info.get(key) for run in members]
    return float(sum(values)) if all(isinstance(v, (int, float)) for v in values) else float("nan")


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
    """Runs with one folder per (model, variant, seed), and {left-out folder: why}: ``mura reproduce``
    writes ``<model>_<variant>_seed<k>`` next to older ``<model>_<variant>`` folders of the same seed,
    which would otherwise count as extra seeds. Of repeats, the folder named by
    ``experiment.run_folder_name`` is kept, else the one whose run.json is newest. Runs without a
    recorded seed are all kept (they cannot be told apart)."""
    from ..experiment import run_folder_name

    repeats: dict[tuple, list[Run]] = {}
    for run in runs:
        if run.kind == "run" and run.model != "ensemble" and run.seed is not None:
            repeats.setdefault((run.model, run.variant, _seed_order(run.seed)), []).append(run)
    left_out: dict[str, str] = {}
    dropped: set[int] = set()
    for (model, variant, (numeric, value, _)), members in repeats.items():
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


def seed_groups(runs: Sequence[Run]) -> dict[tuple[str, str], list[Run]]:
    """Trained runs grouped by (model, variant) from run.json (never from folder names), seeds in
    numeric order; a seed with several folders counts once (see ``drop_repeated_seeds``, warns)."""
    runs, left_out = drop_repeated_seeds(runs)
    warn_left_out(left_out)
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        if run.kind == "run" and run.model != "ensemble":
            groups.setdefault((run.model, run.variant), []).append(run)
    return {key: sorted(members, key=lambda r: (_seed_order(r.seed), r.name)) for key, members in groups.items()}


def seed_ensemble_run(members: Sequence[Run]) -> Run:
    """The mean of one (model, variant)'s seeds as a Run: what averaging the seeds' outputs buys."""
    first = members[0]
    name = f"{first.model}_{first.variant} ({len(members)}-seed ensemble)"
    info = {
        "run_name": name,
        "model": first.model,
        "variant": first.variant,
        "threshold": 0.5,
        "members": [run.name for run in members],
        "seeds": [run.seed for run in members],
        "parameters": _total(members, "parameters"),
        "train_seconds": _total(members, "train_seconds"),
    }
    return Run(name, first.model, first.variant, info, mean_predictions(members, name), kind="seed_ensemble")


def tta_run(run: Run) -> Run | None:
    """The run's test-time-augmentation predictions as a Run ("+ TTA"); None when it has none."""
    if run.tta_predictions is None:
        return None
    info = {**run.info, "run_name": f"{run.name} + TTA"}
    return Run(f"{run.name} + TTA", run.model, run.variant, info, run.tta_predictions, path=run.path, kind="tta")


def representatives(runs: Sequence[Run]) -> list[Run]:
    """One curve per (model, variant) for the figures: the seed ensemble when there are several
    seeds, else the run; ensembles over models are kept."""
    chosen = []
    for members in seed_groups(runs).values():
        chosen.append(seed_ensemble_run(members) if len(members) > 1 else members[0])
    return chosen + [run for run in runs if run.model == "ensemble"]


def ensemble_run(runs: Sequence[Run]) -> Run | None:
    """The ensemble as a Run (so figures treat it like a model); None with fewer than two
    multi-task runs, where an 'ensemble' would just repeat one run; a repeated seed counts once."""
    members = [
        run for run in drop_repeated_seeds(runs)[0] if run.multitask and run.model != "ensemble" and run.kind == "run"
    ]
    if len(members) < 2:
        return None

    info = {
        "run_name": ENSEMBLE_NAME,
        "model": "ensemble",
        "variant": "multitask",
        "threshold": 0.5,
        "members": [run.name for run in members],
        "parameters": _total(members, "parameters"),
        "train_seconds": _total(members, "train_seconds"),
    }
    return Run(ENSEMBLE_NAME, "ensemble", "multitask", info, ensemble_predictions(members), kind="ensemble")
