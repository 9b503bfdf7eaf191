"""`mura reproduce`: run the notebooks in order through papermill with one profile's parameters,
train into ``runs/<profile>-<dataset>`` (``--runs-dir``), keep the reports and every executed notebook under
``reports/`` (executed notebooks in ``reports/runs/``), and stop at the first failing cell with a
message naming the notebook and the cell. The only package that knows about papermill
(``profiles``: what runs; ``plan``: what each run folder gets; ``run``: papermill and progress).

It never deletes a finished run: before anything executes, it plans every training run of every
notebook and checks each existing run folder. A finished run with the same settings is reused, an
interrupted one resumes from last.pt, and a folder trained with other settings, or a damaged run
(a finished one without best.pt, an interrupted one without last.pt), stops the whole command
(naming the folder and why) with nothing changed on disk, unless ``restart`` names it.
So an interrupted ``mura reproduce`` continues when the same command is run again.
"""

from mura_utils.pipeline.plan import (
    check_parameter_types,
    declared_defaults,
    default_runs_dir,
    describe_plan,
    estimate_training_seconds,
    notebook_parameters,
    plan_notebook_runs,
    plan_runs,
    restart_targets,
)
from mura_utils.pipeline.profiles import (
    FIXED_PARAMETERS,
    NOTEBOOK_DIR,
    NOTEBOOKS,
    PROFILE_NOTEBOOK_OVERRIDES,
    PROFILES,
    ReproduceError,
    notebook_settings,
)
from mura_utils.pipeline.run import reproduce

__all__ = [
    "FIXED_PARAMETERS",
    "NOTEBOOK_DIR",
    "NOTEBOOKS",
    "PROFILES",
    "PROFILE_NOTEBOOK_OVERRIDES",
    "ReproduceError",
    "check_parameter_types",
    "declared_defaults",
    "default_runs_dir",
    "describe_plan",
    "estimate_training_seconds",
    "notebook_parameters",
    "notebook_settings",
    "plan_notebook_runs",
    "plan_runs",
    "reproduce",
    "restart_targets",
]
