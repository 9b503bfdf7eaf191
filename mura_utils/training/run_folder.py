"""A run folder that holds a trained run is never replaced by accident: training into it needs
``resume`` (continue it; train.check_resumable compares the settings) or ``overwrite`` (which
removes its old records first and says which), so weights and the predictions made from them
never go out of step."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from mura_utils.utils.io import fsync_directory

# what training and evaluation leave in a run folder (config.json alone is a start that failed early)
RUN_RECORDS = (
    "run.json",  # first in the list: removed first, a half-removed folder is never taken for a finished run
    "*.pt",
    "history.csv",
    "val_predictions.csv",
    "test_metrics.json",
    "test_predictions*.csv",
)


class RunFolderInUseError(RuntimeError):
    """A run folder holds a trained run that the requested training would replace."""


def run_records(folder: str | Path) -> list[str]:
    """Names of the checkpoints and run records in ``folder`` (run.json first), [] when none."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = sorted(path.name for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))
    return [name for pattern in RUN_RECORDS for name in names if fnmatch.fnmatchcase(name, pattern)]


def claim_run_folder(
    out_dir: str | Path, resume: bool = False, overwrite: bool = False, remove: bool = True
) -> list[str]:
    """Check that training may write into ``out_dir``: refuse (RunFolderInUseError, naming the folder
    and what it holds) when it holds a trained run, unless ``resume`` finds its last.pt to continue or
    ``overwrite`` is given; with ``overwrite`` (and ``remove``) its records are deleted first and
    named on stdout. Returns the records that are (or, with ``remove=False``, would be) removed."""
    if resume and overwrite:
        raise ValueError("--resume continues a run and --overwrite replaces it: choose one")
    out_dir = Path(out_dir)
    records = run_records(out_dir)
    if not records or (resume and (out_dir / "last.pt").is_file()):
        return []
    held = ", ".join(records)
    if resume:
        raise RunFolderInUseError(
            f"{out_dir} holds {held} but no last.pt, so there is nothing to resume, and training afresh would "
            "replace them. Nothing was changed. Add --overwrite (instead of --resume) to remove them and train "
            "again, or choose another --out."
        )
    if not overwrite:
        raise RunFolderInUseError(
            f"{out_dir} holds a trained run ({held}). Nothing was changed. Add --resume to continue it with the "
            "same settings, --overwrite to remove these files and train afresh, or choose another --out."
        )
    if remove:
        for name in records:
            (out_dir / name).unlink(missing_ok=True)
        fsync_directory(out_dir)
        print(f"--overwrite: removed {held} from {out_dir}", flush=True)
    return records
