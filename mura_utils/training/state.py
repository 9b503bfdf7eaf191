"""A run's resumable state as one object: model, optimizer, one-cycle schedule, AMP scaler, EMA
weights, every random stream (torch, numpy, random, CUDA, the epoch-order shuffle and the
augmentation), the epoch counter, the best epoch so far and the history. It is written into last.pt
and read back in one place each, so a resumed run continues bit for bit as the uninterrupted one.
Also here: what every checkpoint of a run records beside its weights, and the check that a run
folder may be continued with the requested settings."""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mura_utils.config import ConfigMismatchError, TrainConfig, describe_mismatch
from mura_utils.evaluation.predictions import choose_threshold
from mura_utils.models.checkpoint import read_checkpoint
from mura_utils.utils.runtime import Distributed


def exponential_moving_average(model: torch.nn.Module, decay: float):
    """An EMA copy of ``model`` (torch's AveragedModel) updated after every optimizer step, BatchNorm
    running statistics averaged too (``use_buffers``); None when ``decay`` is 0 (off)."""
    if not decay:
        return None
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must be 0 (off) or between 0 and 1, got {decay}")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def rng_states(generators: dict[str, torch.Generator], device: torch.device) -> dict:
    """This process's random state as tensors and plain types (loads with weights_only=True)."""
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        **{name: generator.get_state() for name, generator in generators.items()},
    }


def restore_rng_states(states: dict, generators: dict[str, torch.Generator], device: torch.device) -> None:
    """Set every random stream back to ``states`` (one process's entry of last.pt's ``rng``)."""
    random.setstate(tuple(tuple(part) if isinstance(part, list) else part for part in states["python"]))
    kind, keys, position, has_gauss, cached_gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gauss))
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and states.get("cuda") is not None:
        torch.cuda.set_rng_state(states["cuda"], device)
    for name, generator in generators.items():
        generator.set_state(states[name])


def rank_rng_states(saved: dict, dist: Distributed) -> dict | None:
    """This rank's states from last.pt's ``rng`` ({"ranks": [...]}, one entry per rank; older
    checkpoints hold rank 0's only); None when the world size changed since."""
    ranks = saved["ranks"] if "ranks" in saved else [saved]
    if len(ranks) != dist.world_size:
        return None
    return ranks[dist.rank]


@dataclass
class TrainingState:
    """Everything that changes while a run trains and that a resume must restore."""

    model: torch.nn.Module  # as trained: wrapped in DistributedDataParallel under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: torch.nn.Module | None  # exponential_moving_average's AveragedModel, None when off
    generators: dict[str, torch.Generator]  # this run's own streams: "shuffle" (epoch order), "augment"
    device: torch.device
    epoch: int = 0  # the last finished epoch
    best_score: float = -math.inf
    best_epoch: int = 0
    best_metrics: dict = field(default_factory=dict)
    best_threshold: float = 0.5
    stale: int = 0  # epochs since the last improvement (early stopping)
    history: list[dict] = field(default_factory=list)

    @property
    def evaluated(self) -> torch.nn.Module:
        """The weights validated and saved in best.pt: the EMA when on, else the trained model."""
        return self.ema.module if self.ema is not None else self.model

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` (scaled for float16), step the optimizer, the schedule and the EMA."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(getattr(self.model, "module", self.model))

    def record(self, row: dict, score: float, metrics: dict, predictions: pd.DataFrame) -> bool:
        """Close the epoch of ``row`` (history.csv's line): when ``score`` beats the best so far it
        becomes the best, its threshold chosen on these validation ``predictions``. Returns whether."""
        self.epoch = row["epoch"]
        self.history.append(row)
        if not score > self.best_score:
            self.stale += 1
            return False
        self.best_score, self.best_epoch, self.stale = score, self.epoch, 0
        self.best_threshold = choose_threshold(predictions)
        self.best_metrics = metrics
        return True

    def state_dict(self, dist: Distributed = Distributed()) -> dict:
        """last.pt's resume entries (beside save_checkpoint's own state_dict and epoch). Every rank's
        random streams are gathered (each augments differently), so every rank must call this."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {"ranks": dist.all_gather(rng_states(self.generators, self.device))},
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_metrics": self.best_metrics,
            "best_threshold": self.best_threshold,
            "stale": self.stale,
            "history": self.history,
            **({"ema_state_dict": self.ema.state_dict()} if self.ema is not None else {}),
        }

    def load_state_dict(self, saved: dict, dist: Distributed = Distributed(), source: str | Path = "last.pt") -> None:
        """Continue from ``saved`` (a last.pt's contents, this version's layout or the older one with
        rank 0's random states only); ``source`` names the file in messages."""
        getattr(self.model, "module", self.model).load_state_dict(saved["state_dict"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        states = rank_rng_states(saved["rng"], dist)
        if states is not None:
            restore_rng_states(states, self.generators, self.device)
        else:
            warnings.warn(
                f"{source} was saved by another number of processes: random states start afresh, "
                "so this resumed run is not bit-for-bit the uninterrupted one",
                stacklevel=3,
            )
        if self.ema is not None:
            if "ema_state_dict" not in saved:
                raise ValueError(f"{source}: no EMA state to resume (that run had ema_decay=0)")
            self.ema.load_state_dict(saved["ema_state_dict"])
        self.epoch, self.best_score, self.best_epoch = saved["epoch"], saved["best_score"], saved["best_epoch"]
        self.best_metrics, self.best_threshold = saved["best_metrics"], saved["best_threshold"]
        self.stale, self.history = saved["stale"], saved["history"]

    def load(self, path: str | Path, dist: Distributed = Distributed()) -> None:
        """Continue from the last.pt at ``path`` (read with weights_only=True: a payload is refused unrun)."""
        self.load_state_dict(read_checkpoint(path), dist, source=path)


@dataclass(frozen=True)
class RunCheckpoints:
    """What every checkpoint of a run records beside its weights (best.pt and last.pt alike)."""

    config: TrainConfig
    img_size: int
    dataset: dict  # DatasetInfo.to_dict(): body-part vocabulary and label meaning
    data_root: str  # resolved: cross-dataset evaluation finds the training data by it

    def contents(self, weights: torch.nn.Module, state: TrainingState, metrics: dict, **extra) -> dict:
        """save_checkpoint's arguments for ``weights`` after ``state``'s last epoch (whose validation
        ``metrics`` they carry) with the best threshold so far; ``extra``: more entries."""
        return {
            "model": weights,
            "config": self.config,
            "epoch": state.epoch,
            "metrics": metrics,
            "threshold": state.best_threshold,
            "img_size": self.img_size,
            "dataset": self.dataset,
            "data_root": self.data_root,
            **extra,
        }


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
