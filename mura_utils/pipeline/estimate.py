"""How long a planned training would take, answered in seconds by a dry run: one reduced training step
per model timed on this machine and scaled by pixels and threads."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

from mura_utils.config import TrainConfig


def step_seconds(config: TrainConfig, steps: int = 2) -> tuple[float, float]:
    """Wall time of one training step of ``config``'s model at its size and batch on its device, on
    random images after one warm-up step, as (forward + backward, optimizer step) seconds (the
    fastest of ``steps``); data reads and validation are not included."""
    import torch
    import torch.nn.functional as F

    from mura_utils.models.networks import build_model
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
    from mura_utils.models.checkpoint import read_checkpoint

    last = Path(config.out_dir) / "last.pt"
    return config.epochs - (int(read_checkpoint(last)["epoch"]) if last.is_file() else 0)


ESTIMATE_NOTE = (
    "on a CPU one small step per model, timed on one thread and scaled by pixels and threads: take it within "
    "a factor of 2 to 3 either way; data loading is left out"
)


def estimate_training_seconds(plan: dict[str, list[tuple]], data_root: str | Path) -> dict[str, float]:
    """{run folder: rough training seconds left} for the runs to train or resume: epochs left x
    steps per epoch x one step's estimate on this machine's device (``estimate_seconds_per_step``:
    a reduced step scaled up on a CPU, so a dry run answers in seconds) + 10% for validation."""
    from mura_utils.data.registry import dataset_info, load_index

    train_images = len(load_index(data_root, splits=(dataset_info(data_root).train_split,)))
    timed: dict[tuple, float] = {}  # one step's seconds per (model, size, batch, device, amp)
    estimates = {}
    for runs in plan.values():
        for config, status, _ in runs:
            if status not in ("train", "resume"):
                continue
            key = (config.model, config.img_size, config.batch_size, config.device, config.amp)
            if key not in timed:
                print(f"[mura reproduce] timing one {config.model} step ...", flush=True)
                timed[key] = estimate_seconds_per_step(config)
            steps = math.ceil(train_images * (1 - config.val_fraction) / config.batch_size)
            estimates[Path(config.out_dir).name] = remaining_epochs(config) * steps * timed[key] * 1.1
    return estimates
