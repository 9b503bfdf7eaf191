"""`mura reproduce`: run the notebooks in order through papermill with one profile, train into
``runs/<profile>-<dataset>-<data folder>`` (``--runs-dir``), keep the reports and every executed notebook
under ``reports/`` (executed notebooks in ``reports/runs/``), and stop at the first failing cell with a
message naming the notebook and the cell. The only package that knows about papermill (``profiles``: what
runs, with the training settings in ``configs/<profile>/<model>.json``; ``plan``: what each run folder gets;
``runs_folder``: where runs go and when a folder refuses; ``estimate``: a dry run's time estimate; ``run``:
papermill and progress; ``colab``: the notebooks' Colab badge and install cell).

It never deletes a finished run: before anything executes, it plans every training run of every
notebook and checks each existing run folder. A finished run with the same settings is reused, an
interrupted one resumes from last.pt, and a folder trained with other settings (or on other data), or a
damaged run (a finished one without best.pt, an interrupted one without last.pt), stops the whole command
(naming the folder and why) with nothing changed on disk, unless ``restart`` names it.
So an interrupted ``mura reproduce`` continues when the same command is run again.
"""

from mura_utils.pipeline.estimate import estimate_training_seconds
from mura_utils.pipeline.plan import (
    check_parameter_types,
    declared_defaults,
    describe_plan,
    notebook_parameters,
    notebook_run_configs,
    plan_reproduce,
)
from mura_utils.pipeline.profiles import (
    CONFIG_DIR,
    FIXED_PARAMETERS,
    NOTEBOOK_DIR,
    NOTEBOOKS,
    PROFILES,
    ReproduceError,
    profile_config_dir,
)
from mura_utils.pipeline.run import reproduce
from mura_utils.pipeline.runs_folder import data_slug, default_runs_dir, refuse_conflicts, restart_targets

__all__ = [
    "CONFIG_DIR",
    "FIXED_PARAMETERS",
    "NOTEBOOK_DIR",
    "NOTEBOOKS",
    "PROFILES",
    "ReproduceError",
    "check_parameter_types",
    "data_slug",
    "declared_defaults",
    "default_runs_dir",
    "describe_plan",
    "estimate_training_seconds",
    "notebook_parameters",
    "notebook_run_configs",
    "plan_reproduce",
    "profile_config_dir",
    "refuse_conflicts",
    "reproduce",
    "restart_targets",
]
