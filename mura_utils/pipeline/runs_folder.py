"""Where `mura reproduce` keeps trained runs, and when a runs folder refuses a request: a folder per profile
and data (``runs/<profile>-<dataset>-<data folder>``), so a second data folder of one kind never meets the
runs of the first; a planned folder that holds another experiment or a damaged run stops everything."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from mura_utils.pipeline.profiles import ReproduceError


def _slug(name: str) -> str:
    """``name`` fit for a folder name: runs of characters other than letters, digits and ``_.-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def dataset_slug(data_root: str | Path) -> str:
    """The kind of data under ``data_root`` in folder names: mura, fracatlas, or ``manifest-<file name>``."""
    from mura_utils.data.registry import detect_dataset

    dataset = detect_dataset(data_root)
    if dataset == "manifest":
        return "manifest-" + _slug(Path(data_root).stem)
    return dataset


def data_slug(data_root: str | Path) -> str:
    """The data under ``data_root`` in folder names: its kind, then the data root folder's own name
    (lower-cased, other characters than ``a-z0-9_.-`` as ``_``) unless that is the dataset's own name
    (``FracAtlas``, ``MURA-v1.1``): ``mura-sample`` for data/sample, ``fracatlas`` for .../FracAtlas.
    A manifest is named by its file: ``manifest-my_wrists``."""
    from mura_utils.data.registry import dataset_info

    kind = dataset_slug(data_root)
    if kind.startswith("manifest-"):
        return kind
    folder = _slug(Path(data_root).expanduser().resolve().name.lower())
    return kind if folder in (kind, dataset_info(data_root).title.lower()) else f"{kind}-{folder}"


def default_runs_dir(profile: str, data_root: str | Path | None = None) -> Path:
    """Where ``mura reproduce`` keeps trained runs unless told (relative to the current folder):
    ``runs/<profile>-<data_slug>`` (runs/demo-mura-sample, runs/cpu-fracatlas, runs/cpu-manifest-my_wrists),
    apart from the reports (a rerun rebuilds them in minutes, so cleaning them never deletes runs) and apart
    per data folder, so runs of two data folders of one profile never meet. Without ``data_root``: the
    default of the first versions, ``runs/<profile>``."""
    if data_root is None:
        return Path("runs") / profile
    return Path("runs") / f"{profile}-{data_slug(data_root)}"


def earlier_default_runs_dirs(profile: str, data_root: str | Path) -> list[Path]:
    """The defaults of earlier versions for this request, ``runs/<profile>`` and ``runs/<profile>-<dataset>``
    (resolved; the plan names runs it finds there, never reusing them silently)."""
    current = default_runs_dir(profile, data_root)
    earlier = [Path("runs") / profile, Path("runs") / f"{profile}-{dataset_slug(data_root)}"]
    return [folder.resolve() for folder in dict.fromkeys(earlier) if folder != current]


def _runs_dir_for(data_root: str, runs_dir: Path, own_runs_dir: Path | None) -> Path:
    """A runs folder to suggest for ``data_root`` when ``runs_dir`` holds runs of other data: this data's
    default (``own_runs_dir``), else ``runs_dir`` named after the data, else after a digest of its path."""
    if own_runs_dir is not None and Path(own_runs_dir).resolve() != runs_dir.resolve():
        return Path(own_runs_dir)
    try:
        name = data_slug(data_root)
    except (ValueError, OSError):  # data gone or unreadable: the digest still tells two folders apart
        name = ""
    if not name or runs_dir.name.endswith(name):
        name = hashlib.sha1(str(Path(data_root).resolve()).encode()).hexdigest()[:6]
    return runs_dir.parent / f"{runs_dir.name}-{name}"


def _headline(conflicts: list[tuple], names: str, own_runs_dir: Path | None) -> str:
    """The first line of a refusal: what differs, in plain words, and the simplest safe way out."""
    from mura_utils.training.experiment import damaged_files

    runs_dir = Path(conflicts[0][0].out_dir).parent
    for _, differences in conflicts:
        if "data_root" in differences:
            saved, requested = differences["data_root"]
            suggested = _runs_dir_for(requested, runs_dir, own_runs_dir)
            return (
                f"these runs were trained on another data folder ({saved}, not {requested}): "
                f"pass --runs-dir {suggested} for this data"
            )
    for config, differences in conflicts:
        if "config.json" in differences:
            return f"{config.out_dir} is not a run folder of mura_utils: pass another --runs-dir"
    for _, differences in conflicts:
        if not damaged_files(differences):
            items = [f"{name} {saved!r}, not {wanted!r}" for name, (saved, wanted) in differences.items()]
            listed = "; ".join(items[:3]) + (f"; and {len(items) - 3} more" if len(items) > 3 else "")
            return (
                f"these runs were trained with other settings ({listed}): pass another --runs-dir for these "
                "settings, or the earlier settings to continue them"
            )
    missing = sorted({name for _, differences in conflicts for name in damaged_files(differences)})
    return f"these runs are damaged (missing {', '.join(missing)}): restore those files, or add --restart {names}"


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


def refuse_conflicts(
    plan: dict[str, list[tuple]], restart: bool | Sequence[str] = False, own_runs_dir: Path | None = None
) -> list[str]:
    """Stop before anything runs when a run folder holds another experiment or a damaged run; the
    message's first line says what differs and the simplest safe way out. With ``restart`` (True: every
    planned run; or a list of run folder names), first delete those planned folders that are ours, saying
    which, so they are trained afresh. Nothing is deleted when any other conflict remains. Returns the names
    of the deleted run folders. ``own_runs_dir``: the folder to suggest for runs of other data (this
    data's default)."""
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
        other_data = next((config for config, differences in conflicts if "data_root" in differences), None)
        runs_dir = Path(conflicts[0][0].out_dir).parent
        ways = [
            # runs of other data are someone's results: a folder of their own, never --restart, comes first
            *(
                [
                    f"choose another --runs-dir for this data (e.g. --runs-dir "
                    f"{_runs_dir_for(other_data.data_root, runs_dir, own_runs_dir)}); those runs are of other data"
                ]
                if other_data
                else []
            ),
            *(["run the same command as before (the saved settings) to continue them"] if other_settings else []),
            *(["restore the missing files of a damaged run"] if damaged else []),
            f"add --restart {names} to delete and retrain them (--restart alone: every planned run)",
            *([] if other_data else ["choose another --runs-dir"]),
        ]
        raise ReproduceError(
            f"{_headline(conflicts, names, own_runs_dir)}\n"
            f"{len(conflicts)} run folder(s) cannot be used by this request:\n{details}\n"
            f"Nothing was changed. Either {', or '.join(ways)}."
        )
    for config in targets:
        print(f"[mura reproduce] --restart: deleting {config.out_dir}", flush=True)
        shutil.rmtree(config.out_dir)
    return [Path(config.out_dir).name for config in targets]
