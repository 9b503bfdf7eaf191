"""What one training or validation step reads: the decode-once image cache, each epoch's order of
training images, its batches (a cache gather or a DataLoader), a batch made model-ready on the
device, and the validation predictions (every image once, sharded over DDP ranks)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler, Subset

from mura_utils.config import TrainConfig
from mura_utils.data.augment import AugmentConfig, batch_augment, normalize
from mura_utils.data.cache import iterate_batches, prefetch
from mura_utils.data.dataset import RadiographDataset, open_image_cache
from mura_utils.evaluation.predictions import predict_batches, predictions_table
from mura_utils.models.registry import ModelSpec, get_spec
from mura_utils.utils.runtime import Distributed


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


class EpochOrders:
    """Which training images each epoch visits and in which order: a shuffle drawn from the run's
    own ``generator`` (saved in last.pt, so a resume draws the same orders), or under DDP this rank's
    share of a DistributedSampler (seeded by the run's seed and the epoch)."""

    def __init__(self, dataset: RadiographDataset, seed: int, dist: Distributed = Distributed()):
        self.size = len(dataset)
        self.generator = torch.Generator().manual_seed(seed)
        self.sampler = (
            DistributedSampler(dataset, dist.world_size, dist.rank, shuffle=True, seed=seed, drop_last=True)
            if dist.enabled
            else None
        )

    def __len__(self) -> int:
        """Images this process trains on per epoch."""
        return len(self.sampler) if self.sampler is not None else self.size

    def __call__(self, epoch: int) -> list[int]:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
            return list(self.sampler)
        return torch.randperm(self.size, generator=self.generator).tolist()


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


def model_inputs(
    batch: dict, device: torch.device, augment: AugmentConfig | None, generator: torch.Generator, spec: ModelSpec
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A training batch on ``device``: images augmented (when ``augment``) and normalized with the
    model's statistics in one pass, channels-last, with their labels and body parts."""
    images = batch["image"].to(device, non_blocking=True)
    if augment is not None:
        images = batch_augment(images, augment, generator, spec.mean, spec.std)
    else:
        images = normalize(images, spec.mean, spec.std)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = batch["label"].to(device, non_blocking=True)
    body_parts = batch["body_part"].to(device, non_blocking=True)
    return images, labels, body_parts


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
