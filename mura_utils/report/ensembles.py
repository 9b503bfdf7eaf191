"""Runs made from other runs: the seed ensemble of one experiment, a run's test-time-augmentation
predictions, and the ensemble of every model's multi-task runs. Each averages image probabilities,
so its study probability (the mean of its images', ``evaluation.metrics.study_probability``) is the
mean of the members' too."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mura_utils.report.runs import Run, drop_repeated_seeds, report_dataset, seed_groups

ENSEMBLE_NAME = "ensemble (multi-task mean)"


def mean_predictions(members: Sequence[Run], name: str) -> pd.DataFrame:
    """Mean image probability over ``members``, matched by path; since a study's probability is
    the mean of its images', its study probability is the mean of theirs too."""
    if not members:
        raise ValueError(f"{name}: no runs to average")
    report_dataset(members)  # never average runs of two datasets
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


_INHERITED = ("dataset", "test_split", "synthetic", "data_root", "img_size", "epochs", "pretrained")


def _inherited(first: Run) -> dict:
    """run.json fields a run made from others keeps: its data and settings (not its seed or threshold)."""
    return {key: first.info[key] for key in _INHERITED if key in first.info}


def seed_ensemble_run(members: Sequence[Run]) -> Run:
    """The mean of one experiment's seeds as a Run: what averaging the seeds' outputs buys."""
    first = members[0]
    keys = {run.settings_key for run in members}
    if len(keys) > 1 or len({(run.model, run.variant) for run in members}) > 1:
        raise ValueError(f"runs {[run.name for run in members]} are not one experiment over seeds; no seed ensemble")
    name = f"{first.model}_{first.variant} ({len(members)}-seed ensemble)"
    if first.setting:
        name = f"{first.model}_{first.variant} {first.setting} ({len(members)}-seed ensemble)"
    info = {
        **_inherited(first),
        "run_name": name,
        "model": first.model,
        "variant": first.variant,
        "threshold": 0.5,
        "members": [run.name for run in members],
        "seeds": [run.seed for run in members],
        "parameters": _total(members, "parameters"),
        "train_seconds": _total(members, "train_seconds"),
    }
    predictions = mean_predictions(members, name)
    return Run(
        name,
        first.model,
        first.variant,
        info,
        predictions,
        kind="seed_ensemble",
        settings=first.settings,
        setting=first.setting,
    )


def tta_run(run: Run) -> Run | None:
    """The run's test-time-augmentation predictions as a Run ("+ TTA"); None when it has none."""
    if run.tta_predictions is None:
        return None
    info = {**run.info, "run_name": f"{run.name} + TTA"}
    return Run(
        f"{run.name} + TTA",
        run.model,
        run.variant,
        info,
        run.tta_predictions,
        path=run.path,
        kind="tta",
        settings=run.settings,
        setting=run.setting,
    )


def representatives(runs: Sequence[Run]) -> list[Run]:
    """One curve per experiment (model, variant, settings) for the figures: the seed ensemble when
    there are several seeds, else the run; ensembles over models are kept."""
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
        **{key: members[0].info[key] for key in ("dataset", "test_split", "synthetic") if key in members[0].info},
        "run_name": ENSEMBLE_NAME,
        "model": "ensemble",
        "variant": "multitask",
        "threshold": 0.5,
        "members": [run.name for run in members],
        "parameters": _total(members, "parameters"),
        "train_seconds": _total(members, "train_seconds"),
    }
    return Run(ENSEMBLE_NAME, "ensemble", "multitask", info, ensemble_predictions(members), kind="ensemble")
