"""One experiment = train a model, then evaluate its best checkpoint on the dataset's held-out test
split (MURA valid, FracAtlas's fixed 20%) and leave a self-describing run folder that the reports read.

    runs_dir/<model>_<variant>_seed<k>/  config.json best.pt last.pt history.csv val_predictions.csv
                                         test_predictions.csv test_metrics.json run.json

run.json is written last (and removed first when a folder is trained again): it marks a finished
run. Asked for a run whose folder exists, ``run_variants`` reuses a finished one as it is, resumes
an interrupted one from last.pt, and refuses one trained with other settings or a damaged one (a
finished run without its best.pt, an interrupted one without its last.pt): results are never
overwritten by accident.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import pandas as pd

from mura_utils.config import ConfigMismatchError, TrainConfig, describe_mismatch, format_differences
from mura_utils.evaluation.predictions import add_confidence_intervals, evaluate_checkpoint_views
from mura_utils.models.checkpoint import read_checkpoint
from mura_utils.models.networks import build_model, count_parameters
from mura_utils.training.fit import fit
from mura_utils.training.run_folder import run_records
from mura_utils.utils.io import atomic_write_text

VARIANTS = {"multitask": True, "single_task": False}
# run.json is written last: a finished run has all of these, and reports read them
FINISHED_PURPOSES = {
    "best.pt": "the weights its test predictions came from",
    "test_predictions.csv": "its test-set predictions",
    "test_metrics.json": "its test-set metrics",
    "run.json": "its record",
}
FINISHED_FILES = tuple(FINISHED_PURPOSES)
MISSING = "missing"  # run_status's "saved" value for a file a damaged run lacks


def is_synthetic(data_root: str | Path, dataset: str = "auto") -> bool:
    """True for an embedded synthetic sample (``mura sample`` and its siblings leave a marker file in it)."""
    from mura_utils.data.registry import dataset_folder
    from mura_utils.synthetic import SYNTHETIC_MARKER

    return (dataset_folder(data_root, dataset) / SYNTHETIC_MARKER).is_file()


def run_experiment(config: TrainConfig, resume: bool = False, test_split: str | None = None) -> Path:
    """Train ``config`` then evaluate best.pt on ``test_split`` (default: the dataset's held-out split,
    MURA valid or FracAtlas/manifest test); returns the run folder."""
    from mura_utils.data.registry import dataset_folder, dataset_info, load_index
    from mura_utils.training.run_folder import claim_run_folder

    info = dataset_info(config.data_root, config.dataset)
    test_split = test_split or info.test_split
    if load_index(config.data_root, config.dataset, splits=(test_split,)).empty:  # not after hours of training
        raise ValueError(f"{config.data_root}: no images in the held-out split {test_split!r} to test on")
    out_dir = Path(config.out_dir)
    claim_run_folder(out_dir, resume, remove=False)  # refuse a trained run's folder before touching run.json
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
    # plain and test-time augmentation (each image averaged with its mirror) in one pass: the report compares them
    views = evaluate_checkpoint_views(out_dir / "best.pt", config.data_root, test_split, **evaluation)
    (predictions, metrics), (tta_predictions, _) = views["plain"], views["tta"]
    metrics = add_confidence_intervals(metrics, predictions, seed=config.seed)  # patient bootstrap
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
    model_settings: dict[str, dict] | None = None,
    **overrides,
) -> list[TrainConfig]:
    """The TrainConfig of every run (model x variant x seed) with its folder under ``runs_dir``;
    ``overrides`` are TrainConfig fields (epochs, img_size, ...) for every model, ``model_settings``
    ({model: {field: value}}) those of one model on top (a notebook that trains two backbones can
    give each what it needs). Invalid settings fail here."""
    unknown = [variant for variant in variants if variant not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    if "seed" in overrides:
        raise ValueError("pass seeds=[...] (a list), not seed=")
    if isinstance(seeds, (int, str)) or not seeds or not all(isinstance(seed, int) for seed in seeds):
        raise ValueError(f"seeds must be a non-empty list of whole numbers, got {seeds!r}")
    model_settings = dict(model_settings or {})
    strangers = sorted(set(model_settings) - set(models))
    if strangers:
        raise ValueError(f"model_settings name model(s) {strangers} that are not trained here ({list(models)})")
    known = {field.name for field in fields(TrainConfig)} - {"model", "multitask", "seed", "out_dir"}
    for model, settings in model_settings.items():
        wrong = sorted(set(settings) - known) if isinstance(settings, dict) else [repr(settings)]
        if wrong:
            raise ValueError(f"model_settings[{model!r}]: {wrong} are not per-model training settings")
    return [
        TrainConfig(
            model=model,
            multitask=VARIANTS[variant],
            seed=seed,
            out_dir=str(Path(runs_dir) / run_folder_name(model, variant, seed)),
            **{**overrides, **model_settings.get(model, {})},
        )
        for seed in seeds  # every model and variant of seed 0 first: an early stop still compares them
        for model in models
        for variant in variants
    ]


def missing_run_files(folder: str | Path) -> dict[str, str]:
    """{file: what it is} for what a run folder with records lacks to be reused (a finished run:
    run.json) or continued (an interrupted one); {} when nothing is missing."""
    folder = Path(folder)
    if (folder / "run.json").is_file():
        needed = {name: FINISHED_PURPOSES[name] for name in FINISHED_FILES}
    else:
        needed = {"last.pt": "the checkpoint an interrupted run continues from"}
    return {name: purpose for name, purpose in needed.items() if not (folder / name).is_file()}


def run_status(config: TrainConfig) -> tuple[str, dict[str, tuple]]:
    """What to do with ``config``'s run folder, settings compared before anything else:
    ("train", {}) when it is new (or holds only the config.json of a start that failed before
    saving a checkpoint); ("reuse", {}) when it finished with these settings; ("resume", {}) when
    it was interrupted (last.pt); ("conflict", {setting: (saved, requested)}) when it holds another
    experiment; ("conflict", {file: (MISSING, what it is)}) when it holds this one damaged (a
    finished run without its best.pt, say), which neither training nor reuse may touch."""
    folder = Path(config.out_dir)
    if not folder.is_dir() or not any(folder.iterdir()):
        return "train", {}
    saved_path = folder / "config.json"
    if not saved_path.is_file():
        return "conflict", {"config.json": ("missing: not a run folder of mura_utils", "a run folder")}
    if not run_records(folder):
        return "train", {}  # a start that failed before its first epoch: nothing to keep, config.json is replaced
    try:
        saved = TrainConfig.load(saved_path)
    except (ValueError, TypeError) as error:
        return "conflict", {"config.json": (f"unreadable ({error})", "a run config")}
    differences = saved.differences(config)
    if differences:
        return "conflict", differences
    missing = missing_run_files(folder)
    if missing:
        return "conflict", {name: (MISSING, purpose) for name, purpose in missing.items()}
    return ("reuse" if (folder / "run.json").is_file() else "resume"), {}


def damaged_files(differences: dict[str, tuple]) -> list[str]:
    """The files a conflict of ``run_status`` names as missing ([] for other conflicts)."""
    return [name for name, (saved, _) in differences.items() if saved == MISSING and name != "config.json"]


def describe_conflict(differences: dict[str, tuple]) -> str:
    """Why ``run_status`` calls a folder a conflict, in a line."""
    if "config.json" in differences:
        return f"config.json {differences['config.json'][0]}"
    missing = damaged_files(differences)
    if missing:
        listed = ", ".join(f"{name} ({differences[name][1]})" for name in missing)
        return f"a damaged run of these settings, missing {listed}"
    return f"trained with other settings ({format_differences(differences)})"


def run_or_reuse(config: TrainConfig, way_out: str = "") -> Path:
    """Train and evaluate ``config`` unless its folder already holds that finished run; an
    interrupted one continues from last.pt; a folder with other settings, or a damaged run, is
    refused untouched."""
    status, differences = run_status(config)
    if status == "conflict":
        folder = Path(config.out_dir)
        if damaged_files(differences):
            raise ConfigMismatchError(
                f"{folder}: {describe_conflict(differences)}. Nothing was changed; "
                + (way_out or "restore those files, or move the folder away to train it again")
            )
        raise ConfigMismatchError(
            describe_mismatch(
                folder,
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
    model_settings: dict[str, dict] | None = None,
    **overrides,
) -> list[Path]:
    """Train and evaluate every model as multi-task and single-task runs, per seed, so the
    multi-task claim is measured, not assumed. ``overrides`` are TrainConfig fields (epochs,
    img_size, ...), ``model_settings`` per-model ones on top (see ``plan_runs``). Finished runs are
    reused and interrupted ones resumed (see ``run_or_reuse``); every folder is checked before
    anything trains."""
    configs = plan_runs(models, runs_dir, variants, seeds, model_settings, **overrides)
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


def step_seconds(config: TrainConfig, steps: int = 2) -> tuple[float, float]:
    """Wall time of one training step of ``config``'s model at its size and batch on its device, on
    random images after one warm-up step, as (forward + backward, optimizer step) seconds (the
    fastest of ``steps``); data reads and validation are not included."""
    import time

    import torch
    import torch.nn.functional as F

    from mura_utils.models.registry import get_spec
    from mura_utils.utils.runtime import amp_dtype_for, resolve_device

    device = resolve_device(config.device)
    model = build_model(config.model, pretrained=False, multitask=config.multitask)
    model = model.to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    amp_dtype = amp_dtype_for(device, config.amp)
    size = config.img_size or get_spec(config.model).default_img_size
    images = torch.randn(config.batch_size, 1, size, size, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 2, (config.batch_size,), device=device).float()

    def synchronize() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    timings = []
    for _ in range(steps + 1):
        started = synchronize()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(images)
        loss = F.binary_cross_entropy_with_logits(outputs["abnormality"].float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        computed = synchronize()
        optimizer.step()
        timings.append((computed - started, synchronize() - computed))
    return min(timings[1:], key=sum)


def seconds_per_step(config: TrainConfig, steps: int = 2) -> float:
    """Wall time of one training step (forward, backward, optimizer) of ``config``'s model at its
    size and batch on its device (see ``step_seconds``)."""
    return sum(step_seconds(config, steps))


# the reduced step a dry run times on a CPU: 1/178 of the pixels of a 320 px batch of 64
ESTIMATE_IMG_SIZE, ESTIMATE_BATCH_SIZE = 96, 4


def estimate_seconds_per_step(
    config: TrainConfig, img_size: int = ESTIMATE_IMG_SIZE, batch_size: int = ESTIMATE_BATCH_SIZE
) -> float:
    """Seconds of one training step of ``config``, cheaply. On a CPU one step is timed at ``img_size``
    px and ``batch_size`` images on one thread (other processes on a shared machine then slow it
    down far less than they slow threads waiting for each other); its forward and backward are scaled
    by the pixels of a batch, and the whole by the threads training uses. A GPU, fast at full size
    and badly used by a small batch, times the real step. Rough: per-layer fixed costs are scaled
    too (too high), perfect use of every thread is assumed (too low)."""
    from dataclasses import replace

    import torch

    from mura_utils.models.registry import get_spec
    from mura_utils.utils.runtime import resolve_device

    if resolve_device(config.device).type == "cuda":
        return seconds_per_step(config, steps=1)
    full_size = config.img_size or get_spec(config.model).default_img_size
    small = replace(config, img_size=min(img_size, full_size), batch_size=min(batch_size, config.batch_size))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        compute, optimizer = step_seconds(small, steps=1)
    finally:
        torch.set_num_threads(threads)
    pixels = (config.batch_size * full_size**2) / (small.batch_size * small.img_size**2)
    return (compute * pixels + optimizer) / threads


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
