"""One experiment = train a model, then evaluate its best checkpoint on MURA valid (the held-out
test set) and leave a self-describing run folder that the reports read.

    runs_dir/<model>_<variant>/  config.json best.pt last.pt history.csv val_predictions.csv
                                 test_predictions.csv test_metrics.json run.json
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pandas as pd

from .checkpoint import read_checkpoint
from .config import TrainConfig
from .data import resolve_mura_root
from .evaluate import evaluate_checkpoint
from .io import atomic_write_text
from .models import build_model, count_parameters
from .train import fit

VARIANTS = {"multitask": True, "single_task": False}


def is_synthetic(data_root: str | Path) -> bool:
    """True for the embedded synthetic sample (``mura sample`` leaves a marker file in it)."""
    from .synthetic import SYNTHETIC_MARKER

    return (resolve_mura_root(data_root) / SYNTHETIC_MARKER).is_file()


def run_experiment(config: TrainConfig, resume: bool = False, test_split: str = "valid") -> Path:
    """Train ``config`` then evaluate best.pt on ``test_split``; returns the run folder."""
    result = fit(config, resume=resume)
    out_dir = Path(config.out_dir)
    if int(os.environ.get("RANK", "0")) != 0:
        return out_dir  # under torchrun only rank 0 evaluates and writes
    predictions, metrics = evaluate_checkpoint(
        out_dir / "best.pt",
        config.data_root,
        test_split,
        threshold=0.5,
        device=config.device,
        cache_dir=config.cache_dir,
        use_cache=config.use_cache,
        progress=config.progress,
    )
    atomic_write_text(out_dir / "test_predictions.csv", predictions.to_csv(index=False))
    atomic_write_text(out_dir / "test_metrics.json", json.dumps(metrics, indent=2))
    checkpoint = read_checkpoint(out_dir / "best.pt")
    history = result.history
    info = {
        "run_name": out_dir.name,
        "model": config.model,
        "variant": "multitask" if config.multitask else "single_task",
        "parameters": count_parameters(build_model(config.model, pretrained=False, multitask=config.multitask)),
        "train_seconds": float(history["train_seconds"].sum()) if len(history) else 0.0,
        "images_per_second": float(history["images_per_second"].median()) if len(history) else 0.0,
        "best_epoch": int(checkpoint["epoch"]),
        "threshold": float(checkpoint["threshold"]),
        "img_size": int(checkpoint["img_size"]),
        "epochs": config.epochs,
        "pretrained": bool(config.pretrained and config.model != "custom_cnn"),
        "seed": config.seed,
        "data_root": str(resolve_mura_root(config.data_root)),
        "synthetic": is_synthetic(config.data_root),
        "test_split": test_split,
    }
    atomic_write_text(out_dir / "run.json", json.dumps(info, indent=2))
    return out_dir


def run_variants(
    model: str, runs_dir: str | Path, variants: tuple[str, ...] = ("multitask", "single_task"), **overrides
) -> list[Path]:
    """Train and evaluate one model as multi-task and single-task runs, so the multi-task claim
    is measured, not assumed. ``overrides`` are TrainConfig fields (epochs, img_size, ...)."""
    base = TrainConfig(model=model, **overrides)
    folders = []
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose from {sorted(VARIANTS)}")
        config = replace(base, multitask=VARIANTS[variant], out_dir=str(Path(runs_dir) / f"{model}_{variant}"))
        folders.append(run_experiment(config))
    return folders


def run_summary(run_dirs: list[str | Path]) -> pd.DataFrame:
    """A quick table of finished runs (the full comparison with CIs lives in mura_utils.report)."""
    rows = []
    for run_dir in run_dirs:
        info = json.loads((Path(run_dir) / "run.json").read_text())
        metrics = json.loads((Path(run_dir) / "test_metrics.json").read_text())
        rows.append(
            {
                "run": info["run_name"],
                "image_accuracy": metrics["image"]["accuracy"],
                "image_auroc": metrics["image"]["auroc"],
                "study_kappa": metrics["study"]["kappa"],
                "study_auroc": metrics["study"]["auroc"],
                "body_part_accuracy": metrics["body_part_accuracy"],
                "best_epoch": info["best_epoch"],
                "train_seconds": round(info["train_seconds"], 1),
            }
        )
    return pd.DataFrame(rows)
