"""Training: ``fit(config)`` trains one model on a dataset's training split (MURA train, FracAtlas's
fixed 80%, a manifest's train rows), choosing the best epoch on a patient-level validation split inside
it (the held-out test split stays untouched).

Outputs in ``config.out_dir``: best.pt, last.pt (for --resume), history.csv, config.json, and
data_split.csv (which image went to train and which to validation).
Runs unchanged under ``torchrun --nproc_per_node=N`` (DDP); only rank 0 writes files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from mura_utils.config import TrainConfig
from mura_utils.data.augment import AugmentConfig
from mura_utils.data.dataset import RadiographDataset, class_weights, patient_split, write_split_file
from mura_utils.data.registry import dataset_info, load_index
from mura_utils.evaluation.predictions import compute_metrics
from mura_utils.models.checkpoint import save_checkpoint
from mura_utils.models.networks import build_model
from mura_utils.models.registry import get_spec
from mura_utils.training.batches import (
    EpochOrders,
    TrainingBatches,
    image_cache_for,
    model_inputs,
    validation_predictions,
)
from mura_utils.training.objective import (
    LossWeights,
    epoch_summary,
    history_row,
    selection_score,
    training_loss,
    validation_loss,
)
from mura_utils.training.run_folder import claim_run_folder
from mura_utils.training.state import RunCheckpoints, TrainingState, check_resumable, exponential_moving_average
from mura_utils.utils.io import atomic_write_text
from mura_utils.utils.progress import ProgressLog, progress_bar, progress_write
from mura_utils.utils.runtime import amp_dtype_for, init_distributed, resolve_device, seed_everything


@dataclass
class FitResult:
    out_dir: Path
    best_epoch: int
    best_metrics: dict
    threshold: float
    history: pd.DataFrame


def fit(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> FitResult:
    """Train ``config.model``; returns the best epoch's validation metrics and the history. A folder
    holding a trained run is refused unless ``resume`` or ``overwrite`` (see run_folder.claim_run_folder)."""
    # set-up: processes, device, seeds, the run folder (checked before anything is written)
    dist = init_distributed()
    device = resolve_device(config.device, dist.local_rank)
    seed_everything(config.seed)
    spec = get_spec(config.model)
    img_size = config.img_size or spec.default_img_size
    out_dir = Path(config.out_dir)
    info = dataset_info(config.data_root, config.dataset)  # a wrong data root fails before --overwrite removes
    claim_run_folder(out_dir, resume, overwrite, remove=dist.is_main)
    if resume:
        check_resumable(out_dir, config)  # before config.json is overwritten
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        config.save(out_dir / "config.json")

    # data: a patient-level validation split inside the training split; which image went where is recorded
    index = load_index(config.data_root, config.dataset, splits=(info.train_split,))
    train_index, val_index = patient_split(index, config.val_fraction, config.seed)
    if dist.is_main:
        test_index = load_index(config.data_root, config.dataset, splits=(info.test_split,))
        write_split_file(out_dir / "data_split.csv", config.data_root, train_index, val_index, test_index)
    cache = image_cache_for(index, img_size, config, dist)
    train_set = RadiographDataset(train_index, img_size, raw=True, cache=cache, body_parts=info.body_parts)
    val_set = RadiographDataset(val_index, img_size, raw=True, cache=cache, body_parts=info.body_parts)
    weights = class_weights(train_index, info.body_parts)
    loss_weights = LossWeights.from_table(weights, device)
    epoch_orders = EpochOrders(train_set, config.seed, dist)
    augment = AugmentConfig(max_rotation_degrees=config.rotation_degrees) if config.augment else None
    augment_generator = torch.Generator().manual_seed(config.seed + 1 + dist.rank)
    drop_last = len(train_set) // dist.world_size > config.batch_size  # a last batch of 1 would break BatchNorm
    training_batches = TrainingBatches(train_set, config, drop_last, device)
    steps_per_epoch = training_batches.steps(len(epoch_orders))

    # model, optimizer, one-cycle schedule, AMP scaler and EMA: the resumable state, restored from last.pt
    model = build_model(
        config.model, config.pretrained, config.multitask, config.weights_path, num_body_parts=len(info.body_parts)
    ).to(device)
    model = model.to(memory_format=torch.channels_last)  # faster convolutions on GPUs and on CPUs (oneDNN)
    if dist.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device.type == "cuda" else None
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # 20% warm-up; a tiny run (a few steps) still gets >= 2 warm-up steps, or torch divides by zero
    total_steps = max(4, config.epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, pct_start=min(0.5, max(0.2, 2 / total_steps)), total_steps=total_steps
    )
    amp_dtype = amp_dtype_for(device, config.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    ema = exponential_moving_average(getattr(model, "module", model), config.ema_decay)
    generators = {"shuffle": epoch_orders.generator, "augment": augment_generator}
    state = TrainingState(model, optimizer, scheduler, scaler, ema, generators, device)
    if resume and (out_dir / "last.pt").is_file():
        state.load(out_dir / "last.pt", dist)
    checkpoints = RunCheckpoints(config, img_size, info.to_dict(), str(Path(config.data_root).expanduser().resolve()))
    progress_log = ProgressLog(out_dir.name, config.epochs, steps_per_epoch, enabled=dist.is_main)

    for epoch in range(state.epoch + 1, config.epochs + 1):
        if config.patience and state.stale >= config.patience:
            break
        # train one epoch
        model.train()
        started, seen, loss_sum = time.perf_counter(), 0, 0.0
        batches = training_batches.epoch(epoch_orders(epoch))
        bar = progress_bar(batches, total=steps_per_epoch, desc=f"{config.model} epoch {epoch}/{config.epochs}",
                           leave=False, disable=not (config.progress and dist.is_main))  # fmt: skip
        for step, batch in enumerate(bar, start=1):
            images, labels, body_parts = model_inputs(batch, device, augment, augment_generator, spec)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = model(images)
            loss = training_loss(outputs, labels, body_parts, loss_weights, config)
            state.optimizer_step(loss)
            seen += len(labels)
            loss_sum += loss.item() * len(labels)
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{seen / (time.perf_counter() - started):.0f}")
            progress_log.update(epoch, step)
        train_seconds = time.perf_counter() - started

        # validate (the EMA weights when on) and select
        predictions = validation_predictions(state.evaluated, val_set, config, device, amp_dtype, dist)
        progress_log.update(epoch, steps_per_epoch, force=True)
        metrics = compute_metrics(predictions, source=f"{out_dir.name} epoch {epoch} (diverged?) validation")
        val_loss = validation_loss(predictions, weights, config)
        lr = scheduler.get_last_lr()[0]
        row = history_row(epoch, loss_sum / max(seen, 1), lr, train_seconds, seen * dist.world_size, val_loss, metrics)
        improved = state.record(row, selection_score(metrics, val_loss, config.selection_metric), metrics, predictions)

        # save: best.pt when improved, always last.pt (to resume) and history.csv
        resumable = state.state_dict(dist)  # gathers every rank's random streams: all ranks call it
        if dist.is_main:
            if improved:
                best = checkpoints.contents(state.evaluated, state, metrics, selection_metric=config.selection_metric)
                save_checkpoint(out_dir / "best.pt", **best)
                atomic_write_text(out_dir / "val_predictions.csv", predictions.to_csv(index=False))
            save_checkpoint(out_dir / "last.pt", **checkpoints.contents(model, state, metrics, **resumable))
            atomic_write_text(out_dir / "history.csv", pd.DataFrame(state.history).to_csv(index=False))
            if config.verbose:
                progress_write(epoch_summary(config.model, row, metrics, improved))

    dist.barrier()
    if dist.enabled:
        torch.distributed.destroy_process_group()
    return FitResult(out_dir, state.best_epoch, state.best_metrics, state.best_threshold, pd.DataFrame(state.history))
