"""Training: ``fit(config)`` trains one model on a dataset's training split (MURA train, FracAtlas's
fixed 80%, a manifest's train rows), choosing the best epoch on a patient-level validation split inside
it (the held-out test split stays untouched).

Outputs in ``config.out_dir``: best.pt, last.pt (for --resume), history.csv, config.json, and
data_split.csv (which image went to train and which to validation).
Runs unchanged under ``torchrun --nproc_per_node=N`` (DDP); only rank 0 writes files.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, Sampler, Subset

from mura_utils.config import SELECTION_METRICS, ConfigMismatchError, TrainConfig, describe_mismatch
from mura_utils.data.augment import AugmentConfig, batch_augment, normalize
from mura_utils.data.cache import iterate_batches, prefetch
from mura_utils.data.dataset import RadiographDataset, class_weights, open_image_cache, patient_split, write_split_file
from mura_utils.data.registry import dataset_info, load_index
from mura_utils.evaluation.predictions import choose_threshold, compute_metrics, predict_batches, predictions_table
from mura_utils.models.checkpoint import read_checkpoint, save_checkpoint
from mura_utils.models.networks import build_model
from mura_utils.models.registry import get_spec
from mura_utils.training.run_folder import claim_run_folder
from mura_utils.utils.formatting import rounded
from mura_utils.utils.io import atomic_write_text
from mura_utils.utils.progress import ProgressLog, progress_bar, progress_write
from mura_utils.utils.runtime import Distributed, amp_dtype_for, init_distributed, resolve_device, seed_everything


@dataclass
class FitResult:
    out_dir: Path
    best_epoch: int
    best_metrics: dict
    threshold: float
    history: pd.DataFrame


def image_cache_for(index: pd.DataFrame, img_size: int, config: TrainConfig, dist: Distributed = Distributed()):
    """Build (rank 0, others wait) or open the decode-once cache of every image in ``index``."""
    if not config.use_cache:
        return None
    cache = (
        open_image_cache(index, img_size, config.data_root, config.cache_dir, config.progress, config.dataset)
        if dist.is_main
        else None
    )
    dist.barrier()
    if cache is not None:
        return cache
    return open_image_cache(index, img_size, config.data_root, config.cache_dir, False, config.dataset)


def loader_generator(seed: int) -> torch.Generator:
    """A DataLoader's own generator: each iterator it starts (every epoch, or once per process with
    persistent workers) draws its worker seed from here, never from the global torch stream that
    dropout uses, so num_workers, use_cache and a resume leave the results alone."""
    return torch.Generator().manual_seed(seed)


class _EpochOrder(Sampler):
    """A DataLoader sampler that yields the positions set for the current epoch."""

    def __init__(self) -> None:
        self.order: list[int] = []

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class TrainingBatches:
    """Each epoch's training batches, in an order the caller draws (a shuffle, or a
    DistributedSampler's share). With the decode-once cache: one memmap gather per batch, no
    per-item work, read ahead in a thread while a GPU computes. Without it: one DataLoader whose
    (persistent) workers decode PNGs."""

    def __init__(self, dataset: RadiographDataset, config: TrainConfig, drop_last: bool, device: torch.device):
        self.dataset, self.batch_size, self.drop_last = dataset, config.batch_size, drop_last
        self.pin_memory = device.type == "cuda"
        self.sampler, self.loader = _EpochOrder(), None
        if dataset.cache_rows is None:
            self.loader = DataLoader(
                dataset,
                batch_size=config.batch_size,
                sampler=self.sampler,
                num_workers=config.num_workers,
                drop_last=drop_last,
                pin_memory=self.pin_memory,
                persistent_workers=config.num_workers > 0,
                generator=loader_generator(config.seed),
            )

    def steps(self, epoch_size: int) -> int:
        """Batches (optimizer steps) in an epoch of ``epoch_size`` images."""
        return epoch_size // self.batch_size if self.drop_last else math.ceil(epoch_size / self.batch_size)

    def epoch(self, order: Sequence[int]) -> Iterable[dict]:
        if self.loader is not None:
            self.sampler.order = list(order)
            return self.loader
        dataset = self.dataset
        batches = (
            {
                "image": images,
                "label": dataset.labels[positions],
                "body_part": dataset.body_parts[positions],
                "position": positions,
            }
            for images, positions in iterate_batches(
                dataset.cache.images,
                dataset.cache_rows,
                self.batch_size,
                order=order,
                drop_last=self.drop_last,
                pin_memory=self.pin_memory,
            )
        )
        return prefetch(batches) if self.pin_memory else batches


def validation_predictions(
    model, dataset: RadiographDataset, config: TrainConfig, device, amp_dtype, dist: Distributed = Distributed()
) -> pd.DataFrame:
    """Predict every validation image exactly once, sharded over ranks and gathered on all."""
    spec = get_spec(config.model)
    shard = Subset(dataset, list(range(dist.rank, len(dataset), dist.world_size)))
    loader = DataLoader(
        shard,
        batch_size=config.batch_size * 2,
        shuffle=False,
        num_workers=config.num_workers,
        generator=loader_generator(config.seed),
    )
    outputs = predict_batches(getattr(model, "module", model), loader, device, spec.mean, spec.std, amp_dtype)
    gathered = dist.all_gather(outputs)
    merged = {key: np.concatenate([part[key] for part in gathered]) for key in outputs}
    return predictions_table(dataset.index, merged, dataset.body_part_names)


def _loss(outputs: dict, labels, body_parts, abnormal_weights, normal_weights, config: TrainConfig):
    """MURA's weighted BCE (per-body-part weights) + weight x cross-entropy on the body part."""
    logits = outputs["abnormality"].float()
    weights = torch.where(labels > 0.5, abnormal_weights[body_parts], normal_weights[body_parts])
    if not config.class_weighting:
        weights = torch.ones_like(weights)
    loss = (F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * weights).mean()
    if "body_part" in outputs and config.body_part_loss_weight > 0:
        loss = loss + config.body_part_loss_weight * F.cross_entropy(outputs["body_part"].float(), body_parts)
    return loss


def validation_loss(predictions: pd.DataFrame, weights: pd.DataFrame, config: TrainConfig) -> float:
    """The training loss's abnormality term (MURA's per-body-part weighted BCE) on the validation
    *images*; the body-part term is left out so multi-task and single-task runs select alike."""
    labels = predictions["label"].to_numpy(dtype=np.float64)
    probabilities = np.clip(predictions["probability"].to_numpy(dtype=np.float64), 1e-7, 1 - 1e-7)
    if config.class_weighting:
        part_weights = weights.loc[predictions["body_part"]]
        image_weights = np.where(labels > 0.5, part_weights["w_abnormal"], part_weights["w_normal"])
    else:
        image_weights = np.ones_like(labels)
    losses = -(labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities))
    return float(np.mean(image_weights * losses))


def selection_score(metrics: dict, val_loss: float, selection_metric: str) -> float:
    """The number best.pt is chosen by, higher is better (val_loss is negated); -inf when undefined."""
    value = val_loss if selection_metric == "val_loss" else metrics["study"][selection_metric.removeprefix("study_")]
    if value is None or not math.isfinite(value):
        return -math.inf
    return value if SELECTION_METRICS[selection_metric] else -value


def _rng_states(generators: dict[str, torch.Generator], device: torch.device) -> dict:
    """This process's random state as tensors and plain types (loads with weights_only=True)."""
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        **{name: generator.get_state() for name, generator in generators.items()},
    }


def _restore_rng_states(states: dict, generators: dict[str, torch.Generator], device: torch.device) -> None:
    random.setstate(tuple(tuple(part) if isinstance(part, list) else part for part in states["python"]))
    kind, keys, position, has_gauss, cached_gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gauss))
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and states.get("cuda") is not None:
        torch.cuda.set_rng_state(states["cuda"], device)
    for name, generator in generators.items():
        generator.set_state(states[name])


def exponential_moving_average(model: torch.nn.Module, decay: float):
    """An EMA copy of ``model`` (torch's AveragedModel) updated after every optimizer step, BatchNorm
    running statistics averaged too (``use_buffers``); None when ``decay`` is 0 (off)."""
    if not decay:
        return None
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must be 0 (off) or between 0 and 1, got {decay}")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _rank_rng_states(saved: dict, dist: Distributed) -> dict | None:
    """This rank's states from last.pt's ``rng`` ({"ranks": [...]}, one entry per rank; older
    checkpoints hold rank 0's only); None when the world size changed since."""
    ranks = saved["ranks"] if "ranks" in saved else [saved]
    if len(ranks) != dist.world_size:
        return None
    return ranks[dist.rank]


def check_resumable(out_dir: str | Path, config: TrainConfig) -> None:
    """Refuse to continue ``out_dir`` with settings other than the ones it was trained with
    (ConfigMismatchError names every differing setting); nothing on disk changes. Without last.pt
    there is nothing to continue (a start that failed early), so any config.json there is stale."""
    saved_path = Path(out_dir) / "config.json"
    if not saved_path.is_file() or not (Path(out_dir) / "last.pt").is_file():
        return
    try:
        saved = TrainConfig.load(saved_path)
    except (ValueError, TypeError) as error:
        raise ConfigMismatchError(f"{saved_path}: not a readable run config ({error})") from error
    differences = saved.differences(config)
    if differences:
        raise ConfigMismatchError(describe_mismatch(Path(out_dir), differences))


def fit(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> FitResult:
    """Train ``config.model``; returns the best epoch's validation metrics and the history. A folder
    holding a trained run is refused unless ``resume`` or ``overwrite`` (see runfolder.claim_run_folder)."""
    dist = init_distributed()
    device = resolve_device(config.device, dist.local_rank)
    seed_everything(config.seed)
    spec = get_spec(config.model)
    img_size = config.img_size or spec.default_img_size
    out_dir = Path(config.out_dir)
    info = dataset_info(config.data_root, config.dataset)  # a wrong data root fails before --overwrite removes
    claim_run_folder(out_dir, resume, overwrite, remove=dist.is_main)  # before anything is written
    if resume:
        check_resumable(out_dir, config)  # before config.json is overwritten
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        config.save(out_dir / "config.json")

    data_root = str(Path(config.data_root).expanduser().resolve())  # recorded: cross-dataset tests find it
    index = load_index(config.data_root, config.dataset, splits=(info.train_split,))
    train_index, val_index = patient_split(index, config.val_fraction, config.seed)
    if dist.is_main:  # which image trained, selected and (held out) will score this model
        test_index = load_index(config.data_root, config.dataset, splits=(info.test_split,))
        write_split_file(out_dir / "data_split.csv", config.data_root, train_index, val_index, test_index)
    cache = image_cache_for(index, img_size, config, dist)
    train_set = RadiographDataset(train_index, img_size, raw=True, cache=cache, body_parts=info.body_parts)
    val_set = RadiographDataset(val_index, img_size, raw=True, cache=cache, body_parts=info.body_parts)
    weights = class_weights(train_index, info.body_parts)
    abnormal_weights = torch.tensor(weights["w_abnormal"].to_numpy(), dtype=torch.float32, device=device)
    normal_weights = torch.tensor(weights["w_normal"].to_numpy(), dtype=torch.float32, device=device)

    shuffle_generator = torch.Generator().manual_seed(config.seed)
    augment_generator = torch.Generator().manual_seed(config.seed + 1 + dist.rank)
    images_per_rank = len(train_set) // dist.world_size
    drop_last = images_per_rank > config.batch_size  # a last batch of 1 would break BatchNorm
    sampler = (
        DistributedSampler(train_set, dist.world_size, dist.rank, shuffle=True, seed=config.seed, drop_last=True)
        if dist.enabled
        else None
    )
    training_batches = TrainingBatches(train_set, config, drop_last, device)
    steps_per_epoch = training_batches.steps(len(sampler) if sampler is not None else len(train_set))

    model = build_model(
        config.model, config.pretrained, config.multitask, config.weights_path, num_body_parts=len(info.body_parts)
    ).to(device)
    model = model.to(memory_format=torch.channels_last)  # faster convolutions on GPUs and on CPUs (oneDNN)
    if dist.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device.type == "cuda" else None
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # one-cycle: 20% warm-up; a tiny run (a few steps) still gets >= 2 warm-up steps, or torch divides by zero
    total_steps = max(4, config.epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, pct_start=min(0.5, max(0.2, 2 / total_steps)), total_steps=total_steps
    )
    amp_dtype = amp_dtype_for(device, config.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    augment_config = AugmentConfig(max_rotation_degrees=config.rotation_degrees) if config.augment else None
    generators = {"shuffle": shuffle_generator, "augment": augment_generator}
    ema = exponential_moving_average(getattr(model, "module", model), config.ema_decay)
    evaluated = ema.module if ema is not None else model  # with EMA, the average is validated and saved

    progress_log = ProgressLog(out_dir.name, config.epochs, steps_per_epoch, enabled=dist.is_main)
    start_epoch, best_score, best_epoch, best_metrics, threshold, stale, history = 1, -math.inf, 0, {}, 0.5, 0, []
    if resume and (out_dir / "last.pt").is_file():
        state = read_checkpoint(out_dir / "last.pt")
        getattr(model, "module", model).load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        rank_states = _rank_rng_states(state["rng"], dist)
        if rank_states is not None:
            _restore_rng_states(rank_states, generators, device)
        else:
            warnings.warn(
                f"{out_dir / 'last.pt'} was saved by another number of processes: random states start afresh, "
                "so this resumed run is not bit-for-bit the uninterrupted one",
                stacklevel=2,
            )
        if ema is not None:
            if "ema_state_dict" not in state:
                raise ValueError(f"{out_dir / 'last.pt'}: no EMA state to resume (that run had ema_decay=0)")
            ema.load_state_dict(state["ema_state_dict"])
        start_epoch, best_score, best_epoch = state["epoch"] + 1, state["best_score"], state["best_epoch"]
        best_metrics, threshold, stale, history = (
            state["best_metrics"],
            state["best_threshold"],
            state["stale"],
            state["history"],
        )

    for epoch in range(start_epoch, config.epochs + 1):
        if config.patience and stale >= config.patience:
            break
        if sampler is not None:
            sampler.set_epoch(epoch)
            order = list(sampler)
        else:
            order = torch.randperm(len(train_set), generator=shuffle_generator).tolist()
        model.train()
        started, seen, loss_sum = time.perf_counter(), 0, 0.0
        bar = progress_bar(
            training_batches.epoch(order),
            total=steps_per_epoch,
            desc=f"{config.model} epoch {epoch}/{config.epochs}",
            leave=False,
            disable=not (config.progress and dist.is_main),
        )
        for step, batch in enumerate(bar, start=1):
            images = batch["image"].to(device, non_blocking=True)
            if augment_config is not None:  # augmentation and normalization in one pass
                images = batch_augment(images, augment_config, augment_generator, spec.mean, spec.std)
            else:
                images = normalize(images, spec.mean, spec.std)
            images = images.contiguous(memory_format=torch.channels_last)
            labels = batch["label"].to(device, non_blocking=True)
            body_parts = batch["body_part"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = model(images)
            loss = _loss(outputs, labels, body_parts, abnormal_weights, normal_weights, config)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(getattr(model, "module", model))
            seen += len(labels)
            loss_sum += loss.item() * len(labels)
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{seen / (time.perf_counter() - started):.0f}")
            progress_log.update(epoch, step)
        train_seconds = time.perf_counter() - started

        predictions = validation_predictions(evaluated, val_set, config, device, amp_dtype, dist)
        progress_log.update(epoch, steps_per_epoch, force=True)
        metrics = compute_metrics(predictions, source=f"{out_dir.name} epoch {epoch} (diverged?) validation")
        val_loss = validation_loss(predictions, weights, config)
        score = selection_score(metrics, val_loss, config.selection_metric)
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / max(seen, 1),
            "lr": scheduler.get_last_lr()[0],
            "train_seconds": train_seconds,
            "images_per_second": seen * dist.world_size / train_seconds,
            "val_loss": val_loss,
            **{f"val_image_{k}": v for k, v in metrics["image"].items()},
            **{f"val_study_{k}": v for k, v in metrics["study"].items()},
            "val_body_part_accuracy": metrics["body_part_accuracy"],
        }
        history.append(row)
        improved = score > best_score
        if improved:
            best_score, best_epoch, stale = score, epoch, 0
            threshold = choose_threshold(predictions)
            best_metrics = metrics
        else:
            stale += 1
        rng_states = dist.all_gather(_rng_states(generators, device))  # every rank's augmentation stream
        if dist.is_main:
            if improved:
                save_checkpoint(
                    out_dir / "best.pt",
                    evaluated,
                    config,
                    epoch,
                    metrics,
                    threshold=threshold,
                    img_size=img_size,
                    selection_metric=config.selection_metric,
                    dataset=info.to_dict(),
                    data_root=data_root,
                )
                atomic_write_text(out_dir / "val_predictions.csv", predictions.to_csv(index=False))
            save_checkpoint(
                out_dir / "last.pt",
                model,
                config,
                epoch,
                metrics,
                threshold=threshold,
                img_size=img_size,
                dataset=info.to_dict(),
                data_root=data_root,
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                scaler=scaler.state_dict(),
                rng={"ranks": rng_states},
                best_score=best_score,
                best_epoch=best_epoch,
                best_metrics=best_metrics,
                best_threshold=threshold,
                stale=stale,
                history=history,
                **({"ema_state_dict": ema.state_dict()} if ema is not None else {}),
            )
            atomic_write_text(out_dir / "history.csv", pd.DataFrame(history).to_csv(index=False))
            if config.verbose:
                progress_write(
                    f"{config.model} epoch {epoch}: loss {row['train_loss']:.4f}, val loss {val_loss:.4f}, val study AUROC "
                    f"{rounded(metrics['study']['auroc'])}, kappa {rounded(metrics['study']['kappa'])}"
                    f"{' (best)' if improved else ''}, {row['images_per_second']:.0f} img/s"
                )
    dist.barrier()
    if dist.enabled:
        torch.distributed.destroy_process_group()
    return FitResult(out_dir, best_epoch, best_metrics, threshold, pd.DataFrame(history))
