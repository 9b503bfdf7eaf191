"""`mura reproduce`: run the notebooks in order through papermill with one profile's parameters,
keep every executed notebook under ``reports/runs/``, and stop at the first failing cell with a
message naming the notebook and the cell. The only module that knows about papermill.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path

from .io import atomic_write_text

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
    """A notebook failed; the message names the notebook, the cell and the error."""


def _kernel_for_this_python(runs_dir: Path) -> str:
    """A kernelspec that runs notebooks with *this* interpreter (the project's environment), so a
    stray user-level 'python3' kernel can never pick another environment."""
    name = "mura-reproduce"
    spec_dir = runs_dir / ".jupyter" / "kernels" / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
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


def reproduce(
    data_root: str | Path,
    out: str | Path = "reports",
    profile: str = "demo",
    overrides: dict | None = None,
    notebooks: tuple[str, ...] = NOTEBOOKS,
    external_root: str | Path | None = None,
    notebook_dir: str | Path = NOTEBOOK_DIR,
) -> Path:
    """Execute ``notebooks`` in order with ``profile`` (+ ``overrides``); returns the reports folder."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    data_root, out = Path(data_root).resolve(), Path(out).resolve()
    runs_dir = out / "runs"
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
        "notebook_overrides": PROFILE_NOTEBOOK_OVERRIDES.get(profile, {}),
    }
    sources = [Path(notebook_dir) / f"{name}.ipynb" for name in notebooks]
    missing = [str(source) for source in sources if not source.is_file()]
    if missing:
        raise ReproduceError(f"notebook(s) not found: {', '.join(missing)}")
    declared_by = {source.stem: set(papermill.inspect_notebook(str(source))) for source in sources}
    unknown = set(overrides or {}) - set().union(*declared_by.values())
    if unknown:
        raise ReproduceError(
            f"parameter(s) {sorted(unknown)} are declared by no notebook; "
            f"known: {sorted(set().union(*declared_by.values()))}"
        )
    for stale in runs_dir.iterdir():  # run folders of an earlier reproduce must not leak into this report
        if stale.is_dir() and (stale / "config.json").is_file():
            shutil.rmtree(stale)
    atomic_write_text(runs_dir / "reproduce.json", json.dumps(provenance, indent=2))
    for name, source in zip(notebooks, sources):
        executed = runs_dir / f"{name}.ipynb"
        print(f"[mura reproduce] running {source.name} ...", flush=True)
        declared = declared_by[name]
        per_notebook = {
            **PROFILES[profile],
            **PROFILE_NOTEBOOK_OVERRIDES.get(profile, {}).get(name, {}),
            **(overrides or {}),
        }
        offered = notebook_parameters(data_root, out, per_notebook, Path(external_root) if external_root else None)
        try:
            papermill.execute_notebook(
                str(source),
                str(executed),
                kernel_name=kernel,
                cwd=str(source.parent),
                parameters={k: v for k, v in offered.items() if k in declared},
                progress_bar=False,
            )
        except PapermillExecutionError as error:
            first_line = next((line for line in str(error.source).splitlines() if line.strip()), "")
            raise ReproduceError(
                f"notebook {source.name} failed in cell {error.cell_index} "
                f"(execution count {error.exec_count}, `{first_line[:80]}`): "
                f"{error.ename}: {error.evalue}. "
                f"The executed notebook with the error is at {executed}"
            ) from None
    provenance["finished_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    atomic_write_text(runs_dir / "reproduce.json", json.dumps(provenance, indent=2))
    return out
