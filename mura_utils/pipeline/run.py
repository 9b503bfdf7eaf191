"""Executing the plan: papermill runs each notebook with this interpreter's kernel, live progress
per training run, provenance in reproduce.json."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from mura_utils.pipeline.estimate import estimate_training_seconds
from mura_utils.pipeline.plan import declared_defaults, describe_plan, notebook_parameters, plan_reproduce
from mura_utils.pipeline.profiles import (
    NOTEBOOK_DIR,
    NOTEBOOKS,
    PROFILES,
    ReproduceError,
    profile_config_dir,
)
from mura_utils.pipeline.runs_folder import default_runs_dir, earlier_default_runs_dirs, refuse_conflicts
from mura_utils.utils.io import atomic_write_text
from mura_utils.utils.progress import PROGRESS_FILE_VARIABLE


def _kernel_for_this_python(records_dir: Path) -> str:
    """A kernelspec that runs notebooks with *this* interpreter (the project's environment), so a
    stray user-level 'python3' kernel can never pick another environment."""
    name = "mura-reproduce"
    spec_dir = records_dir / ".jupyter" / "kernels" / name
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
        filter(None, [str(records_dir / ".jupyter"), os.environ.get("JUPYTER_PATH")])
    )
    return name


def _with_live_progress(execute, progress_file: Path, notebook: str, to_train: list[str]) -> None:
    """Run ``execute`` (one notebook) in a thread while showing its training progress: a bar per
    run with epoch, elapsed time and an estimate of what remains (progress_bar), from ``progress_file``."""
    from mura_utils.utils.progress import ProgressFollower, progress_bar

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
                    bar = progress_bar(total=total, initial=done, desc=f"{notebook}: {run}{position}", unit="step")
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
    restart: bool | Sequence[str] = False,
    dry_run: bool = False,
    runs_dir: str | Path | None = None,
) -> Path:
    """Execute ``notebooks`` in order with ``profile`` (+ ``overrides``); returns the reports folder
    ``out`` (tables, figures, and under runs/ the executed notebooks and reproduce.json). Trained
    runs go to ``runs_dir`` (default ``runs/<profile>-<dataset>-<data folder>``, see ``default_runs_dir``), apart
    from the reports. Finished runs are
    reused, interrupted ones resumed; ``restart`` (True, or run folder names) deletes and retrains
    planned runs; ``dry_run`` only prints the plan."""
    # runs trained under the defaults of earlier versions (runs/<profile>, runs/<profile>-<dataset>) are named,
    # never silently retrained
    earlier_dirs = earlier_default_runs_dirs(profile, data_root) if runs_dir is None else []
    runs_dir = Path(runs_dir if runs_dir is not None else default_runs_dir(profile, data_root)).resolve()
    plan = plan_reproduce(data_root, out, profile, overrides, notebooks, external_root, notebook_dir, runs_dir)
    data_root, out = Path(data_root).resolve(), Path(out).resolve()
    records_dir = out / "runs"  # executed notebooks and reproduce.json: part of the reports
    estimates = estimate_training_seconds(plan, data_root) if dry_run else None
    print(
        f"[mura reproduce] plan ({profile} profile):\n{describe_plan(plan, runs_dir, estimates, out, earlier_dirs)}",
        flush=True,
    )
    if dry_run:
        return out
    restarted = refuse_conflicts(plan, restart, default_runs_dir(profile, data_root))
    plan = {
        notebook: [
            (config, "restart" if Path(config.out_dir).name in restarted else status, differences)
            for config, status, differences in runs
        ]
        for notebook, runs in plan.items()
    }
    runs_dir.mkdir(parents=True, exist_ok=True)
    records_dir.mkdir(parents=True, exist_ok=True)
    parameters = {**PROFILES[profile], **(overrides or {})}
    kernel = _kernel_for_this_python(records_dir)
    from mura_utils import __version__
    from mura_utils.report import git_commit

    provenance = {
        "profile": profile,
        "parameters": parameters,
        "data_root": str(data_root),
        "runs_dir": str(runs_dir),
        "external_root": str(external_root) if external_root else None,
        "package_version": __version__,
        "git_commit": git_commit(),
        "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "notebooks": list(notebooks),
        "config_dir": str(profile_config_dir(profile)),
        # the training settings files as they were read: configs/ may change after this run
        "train_configs": {
            path.stem: json.loads(path.read_text()) for path in sorted(profile_config_dir(profile).glob("*.json"))
        },
        "runs": {Path(config.out_dir).name: status for runs in plan.values() for config, status, _ in runs},
        "notebook_seconds": {},
    }
    atomic_write_text(records_dir / "reproduce.json", json.dumps(provenance, indent=2))
    external = Path(external_root) if external_root else None
    offered_by_notebook = {
        name: notebook_parameters(
            profile,
            declared_defaults(Path(notebook_dir) / f"{name}.ipynb"),
            overrides,
            data_root,
            out,
            runs_dir,
            external,
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
            notebooks, notebook_dir, records_dir, kernel, offered_by_notebook, plan, progress_file, provenance
        )
    finally:
        if earlier_variable is None:
            os.environ.pop(PROGRESS_FILE_VARIABLE, None)
        else:
            os.environ[PROGRESS_FILE_VARIABLE] = earlier_variable
        shutil.rmtree(progress_folder, ignore_errors=True)
    provenance["finished_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    atomic_write_text(records_dir / "reproduce.json", json.dumps(provenance, indent=2))
    return out


def _execute_notebooks(
    notebooks, notebook_dir, records_dir, kernel, offered_by_notebook, plan, progress_file, provenance
) -> None:
    """Each notebook in turn through papermill, executed copy in ``records_dir``; its wall time goes
    into reproduce.json."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    for name in notebooks:
        source = Path(notebook_dir) / f"{name}.ipynb"
        executed = records_dir / f"{name}.ipynb"
        print(f"[mura reproduce] running {source.name} ...", flush=True)
        started = time.perf_counter()
        try:
            _with_live_progress(
                partial(
                    papermill.execute_notebook,
                    str(source),
                    str(executed),
                    kernel_name=kernel,
                    cwd=str(source.parent),
                    parameters=offered_by_notebook[name],  # the names it declares
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
        atomic_write_text(records_dir / "reproduce.json", json.dumps(provenance, indent=2))
