"""Planning before anything runs: what each notebook receives (the profile, its configs/ files, -p overrides),
checked against the notebooks' parameters cells, and every training run listed as train / resume / reuse /
conflict (runs_folder refuses the conflicts), with nothing changed on disk."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from mura_utils.pipeline.estimate import ESTIMATE_NOTE
from mura_utils.pipeline.profiles import (
    FIXED_PARAMETERS,
    NOTEBOOK_DIR,
    NOTEBOOKS,
    PROFILES,
    ReproduceError,
    profile_config_dir,
)
from mura_utils.pipeline.runs_folder import default_runs_dir
from mura_utils.utils.formatting import format_estimate


def notebook_parameters(
    profile: str,
    defaults: dict,
    overrides: dict | None,
    data_root: Path,
    out: Path,
    runs_dir: Path,
    external_root: Path | None,
) -> dict:
    """What one notebook receives (its declared names only, ``defaults``: its parameters cell): the
    profile's parameters, its training settings files (``config_dir``), the ``-p`` overrides and the paths
    (absolute). A ``-p`` training setting wins for every model: a training notebook also gets it in
    ``model_settings``, which wins over the files (a ``-p model_settings`` entry wins over both)."""
    from mura_utils.config import TrainConfig

    overrides = overrides or {}
    values = {
        **PROFILES[profile],
        **overrides,
        "config_dir": str(profile_config_dir(profile)),
        "data_root": str(data_root),
        "runs_dir": str(runs_dir),
        "reports_dir": str(out),
        "external_root": str(external_root) if external_root else "",
    }
    if "model_settings" in defaults and "models" in defaults:
        trainable = {field.name for field in fields(TrainConfig)} - {"data_root"}
        every_model = {name: value for name, value in overrides.items() if name in trainable and name in defaults}
        per_model = overrides.get("model_settings") or {}
        models = [*defaults["models"], *values.get("extra_models", defaults.get("extra_models", []))]
        values["model_settings"] = {
            model: {**every_model, **per_model.get(model, {})} for model in models if every_model or model in per_model
        }
    return {name: value for name, value in values.items() if name in defaults}


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


def notebook_run_configs(defaults: dict, offered: dict) -> list:
    """The TrainConfig of every run a training notebook (its parameters cell declares ``models``) will
    ask for: ``experiment.model_run_configs`` called with the notebook's parameters, as the notebook's
    one call to ``experiment.run_models`` passes them (tests/test_resume.py holds the notebooks to that)."""
    from mura_utils.config import TrainConfig
    from mura_utils.training import experiment

    if "models" not in defaults:
        return []
    values = {**defaults, **{name: value for name, value in offered.items() if name in defaults}}
    accepted = {field.name for field in fields(TrainConfig)} | set(experiment.NOTEBOOK_ARGUMENTS)
    return experiment.model_run_configs(**{name: value for name, value in values.items() if name in accepted})


def plan_reproduce(
    data_root: str | Path,
    out: str | Path = "reports",
    profile: str = "demo",
    overrides: dict | None = None,
    notebooks: tuple[str, ...] = NOTEBOOKS,
    external_root: str | Path | None = None,
    notebook_dir: str | Path = NOTEBOOK_DIR,
    runs_dir: str | Path | None = None,
) -> dict[str, list[tuple]]:
    """The plan of ``mura reproduce``: {notebook: [(TrainConfig, status, differences), ...]} for every run
    the notebooks would train under ``runs_dir`` (default: ``default_runs_dir(profile, data_root)``), where
    status is train | resume | reuse | conflict (see experiment.run_status). Checks the profile, the
    parameter names and their types; changes nothing on disk."""
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
    fixed = sorted(set(overrides or {}) & set(FIXED_PARAMETERS))
    if fixed:
        raise ReproduceError(f"parameter(s) {fixed} belong to each notebook or come with --profile; -p cannot set them")
    unknown = set(overrides or {}) - declared
    if unknown:
        raise ReproduceError(f"parameter(s) {sorted(unknown)} are declared by no notebook; known: {sorted(declared)}")
    check_parameter_types(overrides or {}, defaults)
    external = Path(external_root) if external_root else None
    plan, trained = {}, []
    for source in sources:
        offered = notebook_parameters(profile, defaults[source.stem], overrides, data_root, out, runs_dir, external)
        try:
            configs = notebook_run_configs(defaults[source.stem], offered)
        except (ValueError, FileNotFoundError) as error:
            raise ReproduceError(f"{source.name}: {error}") from None
        plan[source.stem] = [(config, *experiment.run_status(config)) for config in configs]
        trained += [config.model for config in configs]
    strangers = sorted(set((overrides or {}).get("model_settings") or {}) - set(trained))
    if strangers:
        raise ReproduceError(
            f"model_settings name model(s) {strangers} that are not trained here ({sorted(set(trained))})"
        )
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
