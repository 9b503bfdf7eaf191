"""`mura reproduce`: run the notebooks in order through papermill with one profile's parameters,
keep every executed notebook under ``reports/runs/``, and stop at the first failing cell with a
message naming the notebook and the cell. The only module that knows about papermill.

It never deletes a finished run: before anything executes, it plans every training run of every
notebook and checks each existing run folder. A finished run with the same settings is reused, an
interrupted one resumes from last.pt, and a folder trained with other settings stops the whole
command (naming the folder and the settings) with nothing changed on disk, unless ``restart``.
So an interrupted ``mura reproduce`` continues when the same command is run again.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import fields
from functools import partial
from pathlib import Path

from .io import atomic_write_text
from .progress import PROGRESS_FILE_VARIABLE

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = (
    "00_data_overview",
    "01_custom_cnn",
    "02_resnet50",
    "03_efficientnet_densenet",
    "04_external_generalization",
    "05_comparison",
    "06_error_analysis",
)

# Parameters shared by every notebook, per profile; a notebook ignores the ones it does not declare.
PROFILES: dict[str, dict] = {
    # demo: the whole pipeline on the synthetic sample on 2 CPU cores in minutes; numbers say nothing
    "demo": {
        "epochs": 2,
        "img_size": 48,
        "batch_size": 32,
        "pretrained": False,
        "device": "cpu",
        "n_resamples": 200,
        "cam_per_group": 3,
        "seed": 0,
        "seeds": [0],
        "progress": False,
        "interactive": False,  # notebook 06: static figures, no widgets
    },
    # full: the settings for a real MURA run on one GPU (ImageNet weights need internet or --weights)
    "full": {
        "epochs": 20,
        "img_size": 320,
        "batch_size": 64,
        "pretrained": True,
        "device": "auto",
        "n_resamples": 2000,
        "cam_per_group": 6,
        "seed": 0,
        "seeds": [0, 1, 2],
        "num_workers": 4,
        "progress": False,
        "interactive": False,
    },
}

# Per-notebook settings on top of a profile (``-p NAME VALUE`` still wins). The demo gives each model
# what it needs to learn on the synthetic sample within ~10 minutes on 2 CPU cores: the small custom
# CNN can afford 160 px (10x10 Grad-CAM maps) and many epochs; the ImageNet-size backbones, trained from
# scratch offline, get fewer px and epochs and a from-scratch learning rate.
PROFILE_NOTEBOOK_OVERRIDES: dict[str, dict[str, dict]] = {
    "demo": {
        "01_custom_cnn": {"img_size": 160, "epochs": 16, "batch_size": 16, "lr": 1e-3},
        "02_resnet50": {"img_size": 64, "epochs": 6, "batch_size": 16, "lr": 1e-3},
        "03_efficientnet_densenet": {"img_size": 80, "epochs": 8, "batch_size": 16, "lr": 1e-3},
    },
}


class ReproduceError(RuntimeError):
    """A notebook failed or the request cannot run; the message names the notebook, the cell
    or the setting, and the error."""


def notebook_settings(profile: str, notebook: str, overrides: dict | None = None) -> dict:
    """One notebook's parameters: the profile, then its per-notebook settings, then ``-p`` overrides."""
    return {**PROFILES[profile], **PROFILE_NOTEBOOK_OVERRIDES.get(profile, {}).get(notebook, {}), **(overrides or {})}


# Parameters that describe a notebook itself, never set from outside.
FIXED_PARAMETERS = ("models",)


def _kernel_for_this_python(runs_dir: Path) -> str:
    """A kernelspec that runs notebooks with *this* interpreter (the project's environment), so a
    stray user-level 'python3' kernel can never pick another environment."""
    name = "mura-reproduce"
    spec_dir = runs_dir / ".jupyter" / "kernels" / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        # log level ERROR: the kernel's own start-up warnings (e.g. "running over TCP without encryption",
        # about a kernel that only this process talks to, on this machine) say nothing to a person
        "argv": [
            sys.executable,
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
            "--IPKernelApp.log_level=ERROR",
        ],
        "display_name": "mura (reproduce)",
        "language": "python",
    }
    atomic_write_text(spec_dir / "kernel.json", json.dumps(spec))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        filter(None, [str(runs_dir / ".jupyter"), os.environ.get("JUPYTER_PATH")])
    )
    return name


def notebook_parameters(data_root: Path, out: Path, profile: dict, external_root: Path | None) -> dict:
    """Everything a notebook may declare in its parameters cell (paths absolute); each notebook
    receives only the names it declares."""
    return {
        **profile,
        "data_root": str(data_root),
        "runs_dir": str(out / "runs"),
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
    from . import experiment
    from .config import TrainConfig

    if "models" not in defaults:
        return []
    values = {**defaults, **{name: value for name, value in offered.items() if name in defaults}}
    settings = {field.name: values[field.name] for field in fields(TrainConfig) if field.name in values}
    models = list(values["models"]) + list(values.get("extra_models", []))  # notebook 03 may add backbones
    return experiment.plan_runs(models, values["runs_dir"], values["variants"], values["seeds"], **settings)


def plan_runs(
    data_root: str | Path,
    out: str | Path = "reports",
    profile: str = "demo",
    overrides: dict | None = None,
    notebooks: tuple[str, ...] = NOTEBOOKS,
    external_root: str | Path | None = None,
    notebook_dir: str | Path = NOTEBOOK_DIR,
) -> dict[str, list[tuple]]:
    """{notebook: [(TrainConfig, status, differences), ...]} for every run the pipeline would
    train, where status is train | resume | reuse | conflict (see experiment.run_status).
    Checks the profile, the parameter names and their types; changes nothing on disk."""
    from . import experiment

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
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
        offered = notebook_parameters(data_root, out, settings, Path(external_root) if external_root else None)
        try:
            configs = plan_notebook_runs(defaults[source.stem], offered)
        except ValueError as error:
            raise ReproduceError(f"{source.name}: {error}") from None
        plan[source.stem] = [(config, *experiment.run_status(config)) for config in configs]
    return plan


def describe_plan(plan: dict[str, list[tuple]], runs_dir: Path, estimates: dict[str, float] | None = None) -> str:
    """One line per run: what will happen to it (with a time estimate when given), then run
    folders the plan does not produce."""
    lines, planned = [], set()
    for notebook, runs in plan.items():
        for config, status, _ in runs:
            name = Path(config.out_dir).name
            planned.add(name)
            estimate = f" (~{_duration(estimates[name])})" if estimates and name in estimates else ""
            lines.append(f"  {notebook}: {name}: {status}{estimate}")
    if estimates:
        lines.append(f"  training left, roughly: {_duration(sum(estimates.values()))} (timed steps on this machine)")
    others = sorted(
        folder.name for folder in runs_dir.glob("*") if (folder / "run.json").is_file() and folder.name not in planned
    )
    if others:
        lines.append(f"  not planned, yet in {runs_dir} (the reports include them): {', '.join(others)}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{max(minutes, 1)} min"


def estimate_training_seconds(plan: dict[str, list[tuple]], data_root: str | Path) -> dict[str, float]:
    """{run folder: rough training seconds left} for the runs to train or resume: epochs left x
    steps per epoch x one step timed on this machine's device (+10% for validation)."""
    from . import experiment
    from .data import load_mura_index

    train_images = len(load_mura_index(data_root, splits=("train",)))
    step_seconds: dict[tuple, float] = {}
    estimates = {}
    for runs in plan.values():
        for config, status, _ in runs:
            if status not in ("train", "resume"):
                continue
            key = (config.model, config.img_size, config.batch_size, config.device, config.amp)
            if key not in step_seconds:
                print(f"[mura reproduce] timing {config.model} steps at {config.img_size} px ...", flush=True)
                step_seconds[key] = experiment.seconds_per_step(config)
            steps = math.ceil(train_images * (1 - config.val_fraction) / config.batch_size)
            estimates[Path(config.out_dir).name] = experiment.remaining_epochs(config) * steps * step_seconds[key] * 1.1
    return estimates


def _refuse_conflicts(plan: dict[str, list[tuple]], restart: bool) -> None:
    """Stop before anything runs when a run folder holds another experiment (or, with
    ``restart``, delete the planned folders that are ours and start them afresh)."""
    conflicts = [
        (config, differences) for runs in plan.values() for config, status, differences in runs if status == "conflict"
    ]
    foreign = [config for config, differences in conflicts if "config.json" in differences]
    if restart:
        if foreign:
            raise ReproduceError(
                "--restart deletes only run folders of mura_utils (with a config.json); these are not: "
                + ", ".join(config.out_dir for config in foreign)
            )
        for runs in plan.values():
            for config, status, _ in runs:
                if status != "train" and (Path(config.out_dir) / "config.json").is_file():
                    shutil.rmtree(config.out_dir)
        return
    if conflicts:
        from .config import format_differences

        details = "\n".join(
            f"  - {config.out_dir}: {format_differences(differences)}" for config, differences in conflicts
        )
        raise ReproduceError(
            f"{len(conflicts)} run folder(s) hold runs with other settings than this request:\n{details}\n"
            "Nothing was changed. Run the same command as before to continue those runs, add --restart to "
            "delete and retrain the planned runs, or choose another --out."
        )


def _with_live_progress(execute, progress_file: Path, notebook: str, to_train: list[str]) -> None:
    """Run ``execute`` (one notebook) in a thread while showing its training progress: a bar per
    run with epoch, elapsed time and an estimate of what remains (tqdm), from ``progress_file``."""
    from tqdm.auto import tqdm

    from .progress import ProgressFollower

    outcome: dict = {}

    def target() -> None:
        try:
            execute()
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name=f"papermill {notebook}", daemon=True)
    thread.start()
    follower, bar, run = ProgressFollower(progress_file), None, None
    follower.new_lines()  # skip earlier notebooks' lines
    try:
        while thread.is_alive():
            thread.join(timeout=0.5)
            for line in follower.new_lines():
                if line["run"] != run:
                    if bar is not None:
                        bar.close()
                    run = line["run"]
                    position = f" ({to_train.index(run) + 1}/{len(to_train)})" if run in to_train else ""
                    done = (line["epoch"] - 1) * line["steps"] + line["step"]
                    total = line["epochs"] * line["steps"]
                    # a resumed run starts at its epoch: the rate (and what remains) counts from there
                    bar = tqdm(total=total, initial=done, desc=f"{notebook}: {run}{position}", unit="step")
                bar.n = (line["epoch"] - 1) * line["steps"] + line["step"]
                bar.set_postfix_str(f"epoch {line['epoch']}/{line['epochs']}", refresh=False)
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    if "error" in outcome:
        raise outcome["error"]


def reproduce(
    data_root: str | Path,
    out: str | Path = "reports",
    profile: str = "demo",
    overrides: dict | None = None,
    notebooks: tuple[str, ...] = NOTEBOOKS,
    external_root: str | Path | None = None,
    notebook_dir: str | Path = NOTEBOOK_DIR,
    restart: bool = False,
    dry_run: bool = False,
) -> Path:
    """Execute ``notebooks`` in order with ``profile`` (+ ``overrides``); returns the reports folder.
    Finished runs are reused, interrupted ones resumed; ``restart`` retrains the planned runs;
    ``dry_run`` only prints the plan."""

    plan = plan_runs(data_root, out, profile, overrides, notebooks, external_root, notebook_dir)
    data_root, out = Path(data_root).resolve(), Path(out).resolve()
    runs_dir = out / "runs"
    estimates = estimate_training_seconds(plan, data_root) if dry_run else None
    print(f"[mura reproduce] plan ({profile} profile):\n{describe_plan(plan, runs_dir, estimates)}", flush=True)
    if dry_run:
        return out
    _refuse_conflicts(plan, restart)
    runs_dir.mkdir(parents=True, exist_ok=True)
    parameters = {**PROFILES[profile], **(overrides or {})}
    kernel = _kernel_for_this_python(runs_dir)
    from . import __version__
    from .report import git_commit

    provenance = {
        "profile": profile,
        "parameters": parameters,
        "data_root": str(data_root),
        "external_root": str(external_root) if external_root else None,
        "package_version": __version__,
        "git_commit": git_commit(),
        "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "notebooks": list(notebooks),
        "notebook_overrides": {name: PROFILE_NOTEBOOK_OVERRIDES.get(profile, {}).get(name, {}) for name in notebooks},
        "runs": {Path(config.out_dir).name: status for runs in plan.values() for config, status, _ in runs},
        "notebook_seconds": {},
    }
    atomic_write_text(runs_dir / "reproduce.json", json.dumps(provenance, indent=2))
    offered_by_notebook = {
        name: notebook_parameters(
            data_root, out, notebook_settings(profile, name, overrides), Path(external_root) if external_root else None
        )
        for name in notebooks
    }
    # on local disk, not beside the runs: --out may be a network drive (Colab's Google Drive)
    progress_folder = Path(tempfile.mkdtemp(prefix="mura_progress_"))
    progress_file = progress_folder / "progress.jsonl"
    earlier_variable = os.environ.get(PROGRESS_FILE_VARIABLE)
    os.environ[PROGRESS_FILE_VARIABLE] = str(progress_file)  # the kernels inherit it
    try:
        _execute_notebooks(
            notebooks, notebook_dir, runs_dir, kernel, offered_by_notebook, plan, progress_file, provenance
        )
    finally:
        if earlier_variable is None:
            os.environ.pop(PROGRESS_FILE_VARIABLE, None)
        else:
            os.environ[PROGRESS_FILE_VARIABLE] = earlier_variable
        shutil.rmtree(progress_folder, ignore_errors=True)
    provenance["finished_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    atomic_write_text(runs_dir / "reproduce.json", json.dumps(provenance, indent=2))
    return out


def _execute_notebooks(
    notebooks, notebook_dir, runs_dir, kernel, offered_by_notebook, plan, progress_file, provenance
) -> None:
    """Each notebook in turn through papermill; its wall time goes into reproduce.json."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    for name in notebooks:
        source = Path(notebook_dir) / f"{name}.ipynb"
        executed = runs_dir / f"{name}.ipynb"
        print(f"[mura reproduce] running {source.name} ...", flush=True)
        declared = set(papermill.inspect_notebook(str(source))) - set(FIXED_PARAMETERS)
        offered = offered_by_notebook[name]
        started = time.perf_counter()
        try:
            _with_live_progress(
                partial(
                    papermill.execute_notebook,
                    str(source),
                    str(executed),
                    kernel_name=kernel,
                    cwd=str(source.parent),
                    parameters={k: v for k, v in offered.items() if k in declared},
                    progress_bar=False,
                ),
                progress_file,
                name,
                [Path(config.out_dir).name for config, status, _ in plan.get(name, []) if status != "reuse"],
            )
        except PapermillExecutionError as error:
            first_line = next((line for line in str(error.source).splitlines() if line.strip()), "")
            raise ReproduceError(
                f"notebook {source.name} failed in cell {error.cell_index} "
                f"(execution count {error.exec_count}, `{first_line[:80]}`): "
                f"{error.ename}: {error.evalue}. "
                f"The executed notebook with the error is at {executed}"
            ) from None
        provenance["notebook_seconds"][name] = round(time.perf_counter() - started, 1)
        atomic_write_text(runs_dir / "reproduce.json", json.dumps(provenance, indent=2))
