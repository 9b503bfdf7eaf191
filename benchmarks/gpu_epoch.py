"""Seconds per MURA-sized training epoch (36,808 images) of EfficientNet-B0 at 320 px on one GPU,
without and with this project's optimizations.

baseline:  per-item DataLoader (uint8 pixels from the memmap, torchvision flip/rotation/jitter
           per item in CPU workers), fp32 (PyTorch's default TF32 policy), NCHW, batch 64,
           pageable memory, blocking copies.
optimized: cache memmap read by iterate_batches in a prefetch thread (pinned memory,
           non_blocking copies),
           batch_augment (table-lookup rotation, fused normalization) on the GPU, bf16 autocast, channels_last, batch 256,
           torch.compile with --compile.

The images are synthetic, written straight into a cache-format memmap (no PNGs: the decode
cost is paid once by ``mura prepare`` and is not part of an epoch); content does not change the
speed. Both runs first take --warmup untimed steps (cuDNN autotuning, compilation). Without
CUDA it refuses; --dry-run runs every part on the CPU with tiny sizes to check the script.

    PYTHONPATH=. python benchmarks/gpu_epoch.py [--compile] [--workers 8] [--max-steps N]
    PYTHONPATH=. python benchmarks/gpu_epoch.py --dry-run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, if mura_utils is not installed
from mura_utils.data.augment import AugmentConfig, batch_augment
from mura_utils.data.cache import iterate_batches, prefetch
from mura_utils.data.imaging import letterbox
from mura_utils.models.networks import build_model
from mura_utils.models.registry import get_spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_pipeline import mura_like_shape, synthetic_radiograph  # noqa: E402 - sibling script


def synthetic_cache(path: Path, count: int, img_size: int, distinct: int = 64) -> np.memmap:
    """An (count, S, S) uint8 memmap of letterboxed synthetic radiographs, reused between runs;
    ``distinct`` images are drawn and repeated, which is fast and enough for timing."""
    shape = (count, img_size, img_size)
    if not (path.is_file() and path.stat().st_size == count * img_size * img_size):
        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        bases = np.stack(
            [letterbox(synthetic_radiograph(rng, *mura_like_shape(rng)), img_size) for _ in range(distinct)]
        )
        temporary = path.with_name(path.name + ".tmp")
        images = np.memmap(temporary, dtype=np.uint8, mode="w+", shape=shape)
        for start in range(0, count, 1024):
            stop = min(count, start + 1024)
            images[start:stop] = bases[np.arange(start, stop) % distinct]
        images.flush()
        del images
        os.replace(temporary, path)
        print(
            f"wrote {path} ({count * img_size * img_size / 1e9:.2f} GB) in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
    return np.memmap(path, dtype=np.uint8, mode="r", shape=shape)


class PerItemDataset(Dataset):
    """The baseline loader: one image at a time, augmented by torchvision in a CPU worker."""

    def __init__(self, images: np.ndarray, labels: torch.Tensor, parts: torch.Tensor, mean: float, std: float):
        self.images, self.labels, self.parts = images, labels, parts
        self.transform = transforms.Compose(
            [
                transforms.RandomHorizontalFlip(),
                transforms.RandomRotation(30),
                transforms.ColorJitter(brightness=0.2, contrast=0.2),
                transforms.ConvertImageDtype(torch.float32),
                transforms.Normalize([mean], [std]),
            ]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = torch.from_numpy(np.array(self.images[index])).unsqueeze(0)
        return self.transform(image), self.labels[index], self.parts[index]


def train_epoch(name: str, batches, total_steps: int, step, warmup: int, device: torch.device) -> dict:
    """Run ``warmup`` untimed steps, then time the remaining ones (one epoch's worth)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    started = warmup_seconds = None
    seen = steps = 0
    warm_started = time.perf_counter()
    for images, labels, parts in batches:
        step(images, labels, parts)
        steps += 1
        if steps == warmup:
            sync()
            warmup_seconds = time.perf_counter() - warm_started
            started = time.perf_counter()
        elif steps > warmup:
            seen += len(labels)
        if steps >= total_steps:
            break
    sync()
    seconds = time.perf_counter() - started
    rate = seen / seconds
    memory = f", peak CUDA memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else ""
    print(
        f"  {name}: {seen} images in {seconds:.1f} s = {rate:.0f} images/s "
        f"(warm-up {warmup} steps: {warmup_seconds:.1f} s{memory})",
        flush=True,
    )
    return {"rate": rate, "seconds": seconds, "warmup": warmup_seconds}


def make_step(
    model: torch.nn.Module,
    device: torch.device,
    bf16: bool,
    channels_last: bool,
    gpu_augment: bool,
    mean: float,
    std: float,
    generator: torch.Generator,
):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    config = AugmentConfig()

    def step(images: torch.Tensor, labels: torch.Tensor, parts: torch.Tensor) -> None:
        images = images.to(device, non_blocking=True)
        labels, parts = labels.to(device, non_blocking=True), parts.to(device, non_blocking=True)
        if gpu_augment:
            images = batch_augment(images, config, generator, mean, std)  # normalized in the same pass
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            outputs = model(images)
            loss = F.binary_cross_entropy_with_logits(outputs["abnormality"].float(), labels) + 0.3 * F.cross_entropy(
                outputs["body_part"].float(), parts
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=36808, help="MURA-v1.1 train has 36,808 images")
    parser.add_argument("--img-size", type=int, default=320)
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--baseline-batch-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256, help="optimized run")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="baseline DataLoader workers")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before each timed epoch (>= 1)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap timed steps per run (quick checks)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the optimized model")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--work-dir", default="/tmp/mura_gpu_epoch")
    parser.add_argument(
        "--dry-run", action="store_true", help="tiny sizes on the CPU: checks the script, times nothing useful"
    )
    args = parser.parse_args()
    args.warmup = max(1, args.warmup)

    if args.dry_run:
        device = torch.device("cpu")
        args.images, args.img_size, args.baseline_batch_size, args.batch_size = 48, 32, 8, 16
        args.workers, args.warmup, args.max_steps, args.compile = min(args.workers, 2), 1, 2, False
    elif not torch.cuda.is_available():
        sys.exit("gpu_epoch.py needs a CUDA GPU (none visible to torch); run with --dry-run to check it on the CPU")
    else:
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    print(f"{where}; {args.model} at {args.img_size}px, {args.images} images; torch {torch.__version__}", flush=True)

    images = synthetic_cache(
        Path(args.work_dir) / f"synthetic_{args.images}x{args.img_size}.u8", args.images, args.img_size
    )
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (args.images,), generator=generator).float()
    parts = torch.randint(0, 7, (args.images,), generator=generator)
    spec = get_spec(args.model)
    results = {}

    def capped(batch_size: int) -> int:
        steps = args.images // batch_size  # drop_last: every step has the same shape
        if steps <= args.warmup:
            sys.exit(f"{args.images} images make {steps} batches of {batch_size}: not more than --warmup {args.warmup}")
        return args.warmup + min(steps - args.warmup, args.max_steps or steps)

    if not args.skip_baseline:
        print(
            f"baseline: per-item loader ({args.workers} workers), fp32, NCHW, batch {args.baseline_batch_size}",
            flush=True,
        )
        loader = DataLoader(
            PerItemDataset(images, labels, parts, spec.mean, spec.std),
            batch_size=args.baseline_batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=args.workers,
        )
        model = build_model(args.model, pretrained=False).to(device).train()
        step = make_step(model, device, False, False, False, spec.mean, spec.std, generator)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        results["baseline"] = train_epoch(
            "baseline", loader, capped(args.baseline_batch_size), step, args.warmup, device
        )
        del loader, model, step

    name = "optimized" + (" + compile" if args.compile else "")
    print(
        f"{name}: prefetched memmap batches (pinned, non_blocking), GPU batch_augment, bf16, channels_last, "
        f"batch {args.batch_size}",
        flush=True,
    )
    model = build_model(args.model, pretrained=False).to(device, memory_format=torch.channels_last).train()
    forward = torch.compile(model) if args.compile else model
    step = make_step(forward, device, True, True, True, spec.mean, spec.std, generator)
    rows = np.arange(args.images)
    pin = (lambda tensor: tensor.pin_memory()) if device.type == "cuda" else (lambda tensor: tensor)
    batches = prefetch(
        (batch, pin(labels[positions]), pin(parts[positions]))
        for batch, positions in iterate_batches(
            images,
            rows,
            args.batch_size,
            shuffle=True,
            drop_last=True,
            generator=torch.Generator().manual_seed(1),  # its own: another thread
            pin_memory=device.type == "cuda",
        )
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    results["optimized"] = train_epoch(name, batches, capped(args.batch_size), step, args.warmup, device)

    print(f"{'run':10s} {'s/epoch':>8s} {'images/s':>9s}   (s/epoch = {args.images} images / measured rate)")
    for key, result in results.items():
        print(f"{key:10s} {args.images / result['rate']:8.1f} {result['rate']:9.0f}")
    if "baseline" in results:
        note = " (dry run on the CPU: not a measurement)" if args.dry_run else ""
        print(f"ratio (optimized / baseline): {results['optimized']['rate'] / results['baseline']['rate']:.1f}x{note}")


if __name__ == "__main__":
    main()
