"""One experiment = train a model, then evaluate its best checkpoint on the dataset's held-out test
split (MURA valid, FracAtlas's fixed 20%) and leave a self-describing run folder that the reports read.

    runs_dir/<model>_<variant>_seed<k>/  config.json best.pt last.pt history.csv val_predictions.csv
                                         test_predictions.csv test_metrics.json run.json

run.json is written last (and removed first when a folder is trained again): it marks a finished
run. Asked for a run whose folder exists, ``run_variants`` reuses a finished one as it is, resumes
an interrupted one from last.pt, and refuses one trained with other settings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .checkpoint import read_checkpoint
from .config import ConfigMismatchError, TrainConfig, describe_mismatch
from .data import resolve_mura_root
from .evaluate import add_confidence_intervals, evaluate_checkpoint
from .io import atomic_write_text
from .models import build_model, count_parameters
from .train import fit

VARIANTS = {"multitask": True, "single_task": False}
FINISHED_FILES = ("best.pt", "test_metrics.json", "run.json")  # run.json last: a finished run has all three


def dataset_folder(data_root: str | Path, dataset: str = "auto") -> Path:
    """The folder that holds a dataset: the MURA-v1.1 folder, the FracAtlas folder, a manifest's folder."""
    from .datasets import detect_dataset

    name = detect_dataset(data_root) if dataset in (None, "", "auto") else dataset
    if name == "mura":
        return resolve_mura_root(data_root)
    root = Path(data_root).expanduser().resolve()
    return root.parent if name == "manifest" else root


def is_synthetic(data_root: str | Path, dataset: str = "auto") -> bool:
    """True for an embedded synthetic sample (``mura sample`` and its siblings leave a marker file in it)."""
    from .synthetic import SYNTHETIC_MARKER

    return (dataset_folder(data_root, dataset) / SYNTHETIC_MARKER).is_file()


def run_experiment(config: TrainConfig, resume: bool = False, test_split: str | None = None) -> Path:
    """Train ``config`` then evaluate best.pt on ``test_split`` (default: the dataset's held-out split,
    MURA valid or FracAtlas/manifest test); returns the run folder."""
    from .datasets import dataset_info

    info = dataset_info(config.data_root, config.dataset)
    test_split = test_split or info.test_split
    out_dir = Path(config.out_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        (out_dir / "run.json").unlink(missing_ok=True)  # not finished until written again
    result = fit(config, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return out_dir  # under torchrun only rank 0 evaluates and writes
    evaluation = {
        "threshold": 0.5,
        "device": config.device,
        "cache_dir": config.cache_dir,
        "use_cache": config.use_cache,
        "progress": config.progress,
        "dataset": config.dataset,
    }
    predictions, metrics = evaluate_checkpoint(out_dir / "best.pt", config.data_root, test_split, **evaluation)
    metrics = add_confidence_intervals(metrics, predictions, seed=config.seed)  # patient bootstrap
    # test-time augmentation (each image averaged with its mirror): the report compares it, paired, with plain
    tta_predictions, _ = evaluate_checkpoint(out_dir / "best.pt", config.data_root, test_split, tta=True, **evaluation)
    atomic_write_text(out_dir / "test_predictions.csv", predictions.to_csv(index=False))
    atomic_write_text(out_dir / "test_predictions_tta.csv", tta_predictions.to_csv(index=False))
    atomic_write_text(out_dir / "test_metrics.json", json.dumps(metrics, indent=2))
    checkpoint = read_checkpoint(out_dir / "best.pt")
    history = result.history
    info = {
        "run_name": out_dir.name,
        "model": config.model,
        "variant": "multitask" if config.multitask else "single_task",
        "parameters": count_parameters(
            build_model(config.model, False, config.multitask, num_body_parts=len(info.body_parts))
        ),
        "train_seconds": float(history["train_seconds"].sum()) if len(history) else 0.0,
        "images_per_second": float(history["images_per_second"].median()) if len(history) else 0.0,
        "best_epoch": int(checkpoint["epoch"]),
        "threshold": float(checkpoint["threshold"]),
        "img_size": int(checkpoint["img_size"]),
        "epochs": config.epochs,
        "pretrained": bool(config.pretrained and config.model != "custom_cnn"),
        "seed": config.seed,
        "data_root": str(dataset_folder(config.data_root, config.dataset)),
        "synthetic": is_synthetic(config.data_root, config.dataset),
        "test_split": test_split,
        "dataset": info.to_dict(),
    }
    atomic_write_text(out_dir / "run.json", json.dumps(info, indent=2))
    return out_dir


def run_folder_name(model: str, variant: str, seed: int) -> str:
    return f"{model}_{variant}_seed{seed}"


def plan_runs(
    models: Sequence[str],
    runs_dir: str | Path,
    variants: Sequence[str] = ("multitask", "single_task"),
    seeds: Sequence[int] = (0,),
    **overrides,
) -> list[TrainConfig]:
    """The TrainConfig of every run (model x variant x seed) with its folder under ``runs_dir``;
    ``overrides`` are TrainConfig fields (epochs, img_size, ...). Invalid settings fail here."""
    unknown = [variant for variant in variants if variant not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    if "seed" in overrides:
        raise ValueError("pass seeds=[...] (a list), not seed=")
    if isinstance(seeds, (int, str)) or not seeds or not all(isinstance(seed, int) for seed in seeds):
        raise ValueError(f"seeds must be a non-empty list of whole numbers, got {seeds!r}")
    return [
        TrainConfig(
            model=model,
            multitask=VARIANTS[variant],
            seed=seed,
            out_dir=str(Path(runs_dir) / run_folder_name(model, variant, seed)),
            **overrides,
        )
        for seed in seeds  # every model and variant of seed 0 first: an early stop still compares them
        for model in models
        for variant in variants
    ]


def run_status(config: TrainConfig) -> tuple[str, dict[str, tuple]]:
    """What to do with ``config``'s run folder: ("train", {}) when it is new (or holds only the
    config.json of a start that failed before saving a checkpoint), ("reuse", {}) when
    it finished with these settings, ("resume", {}) when it was interrupted, ("conflict",
    {setting: (saved, requested)}) when it holds another experiment."""
    folder = Path(config.out_dir)
    if not folder.is_dir() or not any(folder.iterdir()):
        return "train", {}
    saved_path = folder / "config.json"
    if not saved_path.is_file():
        return "conflict", {"config.json": ("missing: not a run folder of mura_utils", "a run folder")}
    if not any((folder / name).is_file() for name in ("last.pt", "best.pt")):
        return "train", {}  # a start that failed before its first epoch: nothing to keep, config.json is replaced
    try:
        saved = TrainConfig.load(saved_path)
    except (ValueError, TypeError) as error:
        return "conflict", {"config.json": (f"unreadable ({error})", "a run config")}
    differences = saved.differences(config)
    if differences:
        return "conflict", differences
    if all((folder / name).is_file() for name in FINISHED_FILES):
        return "reuse", {}
    return "resume", {}


def run_or_reuse(config: TrainConfig, way_out: str = "") -> Path:
    """Train and evaluate ``config`` unless its folder already holds that finished run; an
    interrupted one continues from last.pt; a folder with other settings is refused untouched."""
    status, differences = run_status(config)
    if status == "conflict":
        raise ConfigMismatchError(
            describe_mismatch(
                Path(config.out_dir),
                differences,
                way_out or "move that folder away, or choose another runs_dir, to train these settings",
            )
        )
    if status == "reuse":
        if config.verbose:
            print(f"{Path(config.out_dir).name}: finished earlier with these settings, reused as it is", flush=True)
        return Path(config.out_dir)
    return run_experiment(config, resume=status == "resume")


def run_models(
    models: Sequence[str],
    runs_dir: str | Path,
    variants: Sequence[str] = ("multitask", "single_task"),
    seeds: Sequence[int] = (0,),
    **overrides,
) -> list[Path]:
    """Train and evaluate every model as multi-task and single-task runs, per seed, so the
    multi-task claim is measured, not assumed. ``overrides`` are TrainConfig fields (epochs,
    img_size, ...). Finished runs are reused and interrupted ones resumed (see ``run_or_reuse``);
    every folder is checked before anything trains."""
    configs = plan_runs(models, runs_dir, variants, seeds, **overrides)
    for config in configs:  # refuse before any training, not after the first run
        if run_status(config)[0] == "conflict":
            run_or_reuse(config)
    return [run_or_reuse(config) for config in configs]


def run_variants(
    model: str,
    runs_dir: str | Path,
    variants: Sequence[str] = ("multitask", "single_task"),
    seeds: Sequence[int] | None = None,
    **overrides,
) -> list[Path]:
    """``run_models`` for one model (``seed=k`` is read as ``seeds=[k]``)."""
    if seeds is None:
        seeds = (overrides.pop("seed", 0),)
    return run_models([model], runs_dir, variants, seeds, **overrides)


def seconds_per_step(config: TrainConfig, steps: int = 2) -> float:
    """Wall time of one training step (forward, backward, optimizer) of ``config``'s model at its
    size and batch on its device, on random images after one warm-up step; a dry run multiplies it
    into an estimate (data reads and validation are not included)."""
    import time

    import torch
    import torch.nn.functional as F

    from .models import get_spec
    from .runtime import amp_dtype_for, resolve_device

    device = resolve_device(config.device)
    model = build_model(config.model, pretrained=False, multitask=config.multitask)
    model = model.to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    amp_dtype = amp_dtype_for(device, config.amp)
    size = config.img_size or get_spec(config.model).default_img_size
    images = torch.randn(config.batch_size, 1, size, size, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 2, (config.batch_size,), device=device).float()
    timings = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(images)
        loss = F.binary_cross_entropy_with_logits(outputs["abnormality"].float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings.append(time.perf_counter() - started)
    return min(timings[1:])


def remaining_epochs(config: TrainConfig) -> int:
    """Epochs an interrupted (or new) run still has to train, from its last.pt."""
    last = Path(config.out_dir) / "last.pt"
    return config.epochs - (int(read_checkpoint(last)["epoch"]) if last.is_file() else 0)


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
