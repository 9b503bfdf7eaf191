"""Planning before anything runs: parameters checked against the notebooks, every training run
listed as train / resume / reuse / conflict, conflicts refused with nothing changed on disk."""

from __future__ import annotations

import ast
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from mura_utils.pipeline.profiles import (
    FIXED_PARAMETERS,
    NOTEBOOK_DIR,
    NOTEBOOKS,
    PROFILES,
    ReproduceError,
    notebook_settings,
)
from mura_utils.utils.formatting import format_estimate


def dataset_slug(data_root: str | Path) -> str:
    """A short name for the data under ``data_root`` in folder names: mura, fracatlas, or
    ``manifest-<file name>`` (characters other than letters, digits, ``_.-`` replaced by ``_``)."""
    from mura_utils.data.registry import detect_dataset

    dataset = detect_dataset(data_root)
    if dataset == "manifest":
        return "manifest-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(data_root).stem)
    return dataset


def default_runs_dir(profile: str, data_root: str | Path | None = None) -> Path:
    """Where ``mura reproduce`` keeps trained runs unless told (relative to the current folder):
    ``runs/<profile>-<dataset>``, apart from the reports (which a rerun rebuilds in minutes, so cleaning
    them never deletes runs) and apart per dataset, so a FracAtlas and a MURA run of one profile never
    meet in one folder (a manifest: ``runs/cpu-manifest-my_wrists``). Versions before this one used
    ``runs/<profile>`` (the plan names runs it finds there)."""
    if data_root is None:
        return Path("runs") / profile
    return Path("runs") / f"{profile}-{dataset_slug(data_root)}"


def _other_dataset(differences: dict[str, tuple]) -> bool:
    """Whether a conflict is over *which dataset* a run learned from (not merely the path it was read
    from: the same MURA copied elsewhere is no other data). Unknown (a path gone): False."""
    if "dataset" in differences:
        return True
    if "data_root" not in differences:
        return False
    try:
        return len({dataset_slug(root) for root in differences["data_root"]}) > 1
    except Exception:  # a saved data_root that no longer exists or is unreadable: no claim either way
        return False


def notebook_parameters(data_root: Path, out: Path, runs_dir: Path, profile: dict, external_root: Path | None) -> dict:
    """Everything a notebook may declare in its parameters cell (paths absolute); each notebook
    receives only the names it declares."""
    return {
        **profile,
        "data_root": str(data_root),
        "runs_dir": str(runs_dir),
        "reports_dir": str(out),
        "external_root": str(external_root) if external_root else "",
    }


def declared_defaults(source: Path) -> dict:
    """{name: default value} of a notebook's parameters cell (plain literals)."""
    import papermill

    defaults = {}
    for name, parameter in papermill.inspect_notebook(str(source)).items():
        try:
            defaults[name] = ast.literal_eval(parameter["default"])
        except (ValueError, SyntaxError) as error:
            raise ReproduceError(
                f"{source.name}: parameter {name} = {parameter['default']} is not a plain literal"
            ) from error
    return defaults


def _type_name(value) -> str:
    return type(value).__name__


def check_parameter_types(overrides: dict, defaults_by_notebook: dict[str, dict]) -> None:
    """Refuse an override whose type differs from the notebook's declared default (an int is a
    fine float; a default of None takes anything): ``-p pretrained False`` must not be a string."""
    problems = []
    for name, value in overrides.items():
        for notebook, defaults in defaults_by_notebook.items():
            if name not in defaults or defaults[name] is None:
                continue
            expected = type(defaults[name])
            fits = (isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)) or (
                expected is float and isinstance(value, int) and not isinstance(value, bool)
            )
            if not fits:
                problems.append(
                    f"{name}={value!r} is of type {_type_name(value)}, but {notebook} declares "
                    f"{name} = {defaults[name]!r} (of type {expected.__name__})"
                )
                break
    if problems:
        raise ReproduceError("parameter type mismatch: " + "; ".join(problems))


def plan_notebook_runs(defaults: dict, offered: dict) -> list:
    """The TrainConfig of every run a training notebook will ask for (its parameters cell
    declares ``models``), mirroring its one call to ``experiment.run_models``."""
    from mura_utils.config import TrainConfig
    from mura_utils.training import experiment

    if "models" not in defaults:
        return []
    values = {**defaults, **{name: value for name, value in offered.items() if name in defaults}}
    settings = {field.name: values[field.name] for field in fields(TrainConfig) if field.name in values}
    models = list(values["models"]) + list(values.get("extra_models", []))  # notebook 03 may add backbones
    model_settings = values.get("model_settings") or {}  # notebook 03: per-model settings on top
    return experiment.plan_runs(
        models, values["runs_dir"], values["variants"], values["seeds"], model_settings, **settings
    )


def plan_runs(
    data_root: str | Path,
    out: str | Path = "reports",
    profile: str = "demo",
    overrides: dict | None = None,
    notebooks: tuple[str, ...] = NOTEBOOKS,
    external_root: str | Path | None = None,
    notebook_dir: str | Path = NOTEBOOK_DIR,
    runs_dir: str | Path | None = None,
) -> dict[str, list[tuple]]:
    """{notebook: [(TrainConfig, status, differences), ...]} for every run the pipeline would
    train under ``runs_dir`` (default: ``default_runs_dir(profile, data_root)``), where status is train |
    resume | reuse | conflict (see experiment.run_status). Checks the profile, the parameter names
    and their types; changes nothing on disk."""
    from mura_utils.training import experiment

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    runs_dir = Path(runs_dir if runs_dir is not None else default_runs_dir(profile, data_root)).resolve()
    data_root, out = Path(data_root).resolve(), Path(out).resolve()
    sources = [Path(notebook_dir) / f"{name}.ipynb" for name in notebooks]
    missing = [str(source) for source in sources if not source.is_file()]
    if missing:
        raise ReproduceError(f"notebook(s) not found: {', '.join(missing)}")
    defaults = {source.stem: declared_defaults(source) for source in sources}
    declared = set().union(*(set(values) for values in defaults.values())) - set(FIXED_PARAMETERS)
    unknown = set(overrides or {}) - declared
    if unknown:
        raise ReproduceError(f"parameter(s) {sorted(unknown)} are declared by no notebook; known: {sorted(declared)}")
    check_parameter_types(overrides or {}, defaults)
    plan = {}
    for source in sources:
        settings = notebook_settings(profile, source.stem, overrides)
        offered = notebook_parameters(
            data_root, out, runs_dir, settings, Path(external_root) if external_root else None
        )
        try:
            configs = plan_notebook_runs(defaults[source.stem], offered)
        except ValueError as error:
            raise ReproduceError(f"{source.name}: {error}") from None
        plan[source.stem] = [(config, *experiment.run_status(config)) for config in configs]
    return plan


def describe_plan(
    plan: dict[str, list[tuple]],
    runs_dir: Path,
    estimates: dict[str, float] | None = None,
    out: Path | None = None,
    earlier_dirs: Sequence[Path] = (),
) -> str:
    """One line per run: what will happen to it (with a time estimate when given; a conflict says
    why), then run folders the plan does not produce, and trained runs left where earlier versions
    trained: ``out``/runs and ``earlier_dirs`` (the old default ``runs/<profile>``)."""
    from mura_utils.training.experiment import describe_conflict

    lines, planned = [], set()
    for notebook, runs in plan.items():
        for config, status, differences in runs:
            name = Path(config.out_dir).name
            planned.add(name)
            estimate = f" (~{format_estimate(estimates[name])})" if estimates and name in estimates else ""
            reason = f": {describe_conflict(differences)}" if status == "conflict" else ""
            lines.append(f"  {notebook}: {name}: {status}{estimate}{reason}")
    if estimates:
        lines.append(f"  training left, roughly: {format_estimate(sum(estimates.values()))} ({ESTIMATE_NOTE})")
    others = sorted(
        folder.name for folder in runs_dir.glob("*") if (folder / "run.json").is_file() and folder.name not in planned
    )
    if others:
        lines.append(f"  not planned, yet in {runs_dir} (the reports include them): {', '.join(others)}")
    for earlier in [*([Path(out) / "runs"] if out is not None else []), *earlier_dirs]:
        if Path(earlier).resolve() == runs_dir.resolve():
            continue
        elsewhere = sorted(folder.name for folder in Path(earlier).glob("*") if (folder / "run.json").is_file())
        if elsewhere:
            lines.append(
                f"  note: {earlier} holds {len(elsewhere)} trained run(s) from a version that trained there "
                f"({', '.join(elsewhere[:3])}{', ...' if len(elsewhere) > 3 else ''}): pass --runs-dir {earlier} "
                f"to reuse them, or move them into {runs_dir}"
            )
    return "\n".join(lines)


ESTIMATE_NOTE = (
    "on a CPU one small step per model, timed on one thread and scaled by pixels and threads: take it within "
    "a factor of 2 to 3 either way; data loading is left out"
)


def estimate_training_seconds(plan: dict[str, list[tuple]], data_root: str | Path) -> dict[str, float]:
    """{run folder: rough training seconds left} for the runs to train or resume: epochs left x
    steps per epoch x one step's estimate on this machine's device (``experiment.estimate_seconds_per_step``:
    a reduced step scaled up on a CPU, so a dry run answers in seconds) + 10% for validation."""
    from mura_utils.data.registry import dataset_info, load_index
    from mura_utils.training import experiment

    train_images = len(load_index(data_root, splits=(dataset_info(data_root).train_split,)))
    step_seconds: dict[tuple, float] = {}
    estimates = {}
    for runs in plan.values():
        for config, status, _ in runs:
            if status not in ("train", "resume"):
                continue
            key = (config.model, config.img_size, config.batch_size, config.device, config.amp)
            if key not in step_seconds:
                print(f"[mura reproduce] timing one {config.model} step ...", flush=True)
                step_seconds[key] = experiment.estimate_seconds_per_step(config)
            steps = math.ceil(train_images * (1 - config.val_fraction) / config.batch_size)
            estimates[Path(config.out_dir).name] = experiment.remaining_epochs(config) * steps * step_seconds[key] * 1.1
    return estimates


def restart_targets(plan: dict[str, list[tuple]], restart: bool | Sequence[str]) -> list:
    """The planned configs whose folders ``restart`` deletes: every planned folder that exists
    (``True``) or the named runs' folders (a list of run folder names, each one the plan holds)."""
    planned = {Path(config.out_dir).name: (config, status) for runs in plan.values() for config, status, _ in runs}
    if restart is True:
        names = list(planned)
    else:
        names = list(dict.fromkeys(restart or ()))
        unknown = [name for name in names if name not in planned]
        if unknown:
            raise ReproduceError(
                f"--restart names run(s) this command does not plan: {', '.join(unknown)}; "
                f"planned: {', '.join(sorted(planned))}"
            )
    return [planned[name][0] for name in names if planned[name][1] != "train"]


def _refuse_conflicts(
    plan: dict[str, list[tuple]], restart: bool | Sequence[str] = False, own_runs_dir: Path | None = None
) -> list[str]:
    """Stop before anything runs when a run folder holds another experiment or a damaged run;
    with ``restart`` (True: every planned run; or a list of run folder names), first delete those
    planned folders that are ours, saying which, so they are trained afresh. Nothing is deleted
    when any other conflict remains. Returns the names of the deleted run folders. ``own_runs_dir``:
    the folder to suggest when the runs there are of another dataset (the default for this data)."""
    from mura_utils.training.experiment import damaged_files, describe_conflict

    targets = restart_targets(plan, restart)
    chosen = {config.out_dir for config in targets}
    foreign = [config.out_dir for config in targets if not (Path(config.out_dir) / "config.json").is_file()]
    if foreign:
        raise ReproduceError(
            "--restart deletes only run folders of mura_utils (with a config.json); these are not: "
            + ", ".join(foreign)
            + ". Nothing was changed."
        )
    conflicts = [
        (config, differences)
        for runs in plan.values()
        for config, status, differences in runs
        if status == "conflict" and config.out_dir not in chosen
    ]
    if conflicts:
        details = "\n".join(
            f"  - {config.out_dir}: {describe_conflict(differences)}" for config, differences in conflicts
        )
        names = " ".join(Path(config.out_dir).name for config, _ in conflicts)
        damaged = any(damaged_files(differences) for _, differences in conflicts)
        other_settings = any(not damaged_files(differences) for _, differences in conflicts)
        other_data = any(_other_dataset(differences) for _, differences in conflicts)
        config = conflicts[0][0]
        runs_dir = Path(config.out_dir).parent
        if other_data and (own_runs_dir is None or Path(own_runs_dir).resolve() == runs_dir.resolve()):
            own_runs_dir = runs_dir.parent / f"{runs_dir.name}-{dataset_slug(config.data_root)}"
        elsewhere = f"--runs-dir {own_runs_dir}"
        ways = [
            # runs of other data are someone's results: a folder of their own, never --restart, comes first
            *(
                [f"choose another --runs-dir for this data (e.g. {elsewhere}); those runs are of other data"]
                if other_data
                else []
            ),
            *(["run the same command as before (the saved settings) to continue them"] if other_settings else []),
            *(["restore the missing files of a damaged run"] if damaged else []),
            f"add --restart {names} to delete and retrain them (--restart alone: every planned run)",
            *([] if other_data else ["choose another --runs-dir"]),
        ]
        raise ReproduceError(
            f"{len(conflicts)} run folder(s) cannot be used by this request:\n{details}\n"
            f"Nothing was changed. Either {', or '.join(ways)}."
        )
    for config in targets:
        print(f"[mura reproduce] --restart: deleting {config.out_dir}", flush=True)
        shutil.rmtree(config.out_dir)
    return [Path(config.out_dir).name for config in targets]
