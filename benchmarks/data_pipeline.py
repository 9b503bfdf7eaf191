"""Images/s delivered to the training loop: the earlier notebooks' loader vs this project's.

(a) notebooks: a Dataset doing PIL open + convert('L') + torchvision transforms per item
    (Resize, flip, RandomRotation(30), ColorJitter, ToTensor, Normalize), DataLoader workers.
(b) project: prepare_cache once (timed separately), then what mura_utils.training.fit runs on a
    CPU: train.TrainingBatches (one memmap gather per batch, no workers, no per-item
    work) + augment.batch_augment (per-sample flip, lookup-table rotation, exposure and
    normalization in one pass).

Same PNGs, same run, same batch size; the loop body only consumes the batch. Rates are over
the epochs after the first (warm-up). The last line is the ratio (b) / (a).

    PYTHONPATH=. python benchmarks/data_pipeline.py [--images 1500] [--img-size 224] \
        [--batch-size 64] [--workers 2] [--project-workers 0] [--epochs 3] [--threads N] \
        [--out-dir /tmp/mura_pipeline_bench]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, if mura_utils is not installed
from mura_utils.config import TrainConfig
from mura_utils.data.augment import AugmentConfig, batch_augment
from mura_utils.data.cache import cache_files, prepare_cache
from mura_utils.data.constants import BODY_PARTS
from mura_utils.data.dataset import RadiographDataset
from mura_utils.training.fit import TrainingBatches

MEAN, STD = 0.5, 0.25


def synthetic_radiograph(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Dark background, soft tissue, 1-3 bones (bright cortex, darker medulla), a marker and
    film noise: smooth shapes that PNG-compress like radiographs, unlike random pixels."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = (y - height / 2) / (height / 2), (x - width / 2) / (height / 2)
    image = np.full((height, width), rng.uniform(5, 25), np.float32) + 8 * y  # exposure gradient

    def soft_ellipse(cx, cy, rx, ry, angle, sharpness=25.0):
        c, s = math.cos(angle), math.sin(angle)
        u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
        r = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
        return 1.0 / (1.0 + np.exp(np.clip((r - 1.0) * sharpness, -30, 30)))

    angle = rng.normal(0, 0.3)
    image += rng.uniform(50, 80) * soft_ellipse(rng.normal(0, 0.05), 0, rng.uniform(0.3, 0.6), 1.3, angle, 8)
    for _ in range(rng.integers(1, 4)):
        cx, rx = rng.uniform(-0.3, 0.3), rng.uniform(0.05, 0.12)
        bone_angle = angle + rng.normal(0, 0.1)
        cortex = soft_ellipse(cx, rng.normal(0, 0.1), rx, rng.uniform(0.6, 1.1), bone_angle)
        medulla = soft_ellipse(cx, 0, rx * 0.6, 0.9, bone_angle)
        image += rng.uniform(100, 150) * cortex - rng.uniform(30, 60) * medulla
    top, left = int(rng.integers(5, height // 6)), int(rng.integers(5, width // 6))
    image[top : top + 20, left : left + 14] = 250  # the "L"/"R" marker
    image += rng.normal(0, rng.uniform(2, 5), image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def mura_like_shape(rng: np.random.Generator) -> tuple[int, int]:
    """MURA: most images have a 512 px long side, portrait more often, varied aspect."""
    long_side = 512 if rng.random() < 0.85 else int(rng.integers(300, 512))
    short_side = int(long_side * rng.uniform(0.5, 1.0))
    return (long_side, short_side) if rng.random() < 0.75 else (short_side, long_side)


def _write_one(args: tuple[int, str]) -> None:
    index, path = args
    rng = np.random.default_rng(index)
    Image.fromarray(synthetic_radiograph(rng, *mura_like_shape(rng))).save(path)


def synthetic_pngs(folder: Path, count: int, workers: int) -> list[str]:
    """``count`` radiograph-like PNGs in ``folder``, reused between runs (seeded by index)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [str(folder / f"image{index:06d}.png") for index in range(count)]
    todo = [(index, path) for index, path in enumerate(paths) if not os.path.exists(path)]
    if todo:
        print(f"writing {len(todo)} synthetic PNGs to {folder} ...", flush=True)
        with Pool(max(1, workers)) as pool:
            pool.map(_write_one, todo, chunksize=16)
    return paths


class NotebookDataset(Dataset):
    """The earlier notebooks' loader: decode + per-item PIL/torchvision transforms."""

    def __init__(self, paths: list[str], labels: list[int], img_size: int):
        self.paths, self.labels = paths, labels
        self.transform = transforms.Compose(
            [
                transforms.Resize((img_size, img_size)),
                transforms.RandomHorizontalFlip(),
                transforms.RandomRotation(30),
                transforms.ColorJitter(brightness=0.2, contrast=0.2),
                transforms.ToTensor(),
                transforms.Normalize([MEAN], [STD]),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        image = Image.open(self.paths[index]).convert("L")
        return self.transform(image), self.labels[index]


def timed_epochs(name: str, epochs: int, run_epoch) -> float:
    """Run ``epochs`` epochs; return images/s over those after the first."""
    rates = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        count = run_epoch()
        rates.append((count, time.perf_counter() - started))
        print(f"  {name} epoch {epoch}: {count / rates[-1][1]:8.1f} images/s ({rates[-1][1]:.2f} s)", flush=True)
    measured = rates[1:] or rates
    return sum(c for c, _ in measured) / sum(s for _, s in measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="notebook DataLoader workers and cache-build processes")
    parser.add_argument(
        "--project-workers", type=int, default=0, help="TrainConfig.num_workers of (b) (only used without a cache)"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out-dir", default="/tmp/mura_pipeline_bench")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of the training process (default: torch's choice); "
        "1 can win on a 2-core machine that other jobs share",
    )
    parser.add_argument("--skip-notebook", action="store_true", help="only time the project pipelines")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    paths = synthetic_pngs(out / "png", args.images, args.workers)
    rng = np.random.default_rng(0)
    index = pd.DataFrame(
        {"path": paths, "label": rng.integers(0, 2, len(paths)), "body_part": rng.choice(BODY_PARTS, len(paths))}
    )
    mib = sum(os.path.getsize(p) for p in paths) / 2**20
    print(
        f"{len(paths)} PNGs ({mib:.0f} MiB, {mib * 1024 / len(paths):.0f} KiB each), img_size {args.img_size}, "
        f"batch {args.batch_size}, {args.workers} workers, {args.epochs} epochs, "
        f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )

    def loader_kw(workers: int) -> dict:
        return dict(batch_size=args.batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0)

    results = {}

    if not args.skip_notebook:
        notebook = DataLoader(NotebookDataset(paths, index["label"].tolist(), args.img_size), **loader_kw(args.workers))

        def notebook_epoch() -> int:
            seen = 0
            for images, labels in notebook:
                images.sum()
                seen += len(labels)
            return seen

        print("(a) notebooks: PIL + torchvision per item", flush=True)
        results["a"] = timed_epochs("(a)", args.epochs, notebook_epoch)
        del notebook

    cache_dir = out / "cache"
    for stale in cache_files(paths, args.img_size, cache_dir):
        stale.unlink(missing_ok=True)  # always time a fresh build
    started = time.perf_counter()
    cache = prepare_cache(paths, args.img_size, cache_dir, num_workers=args.workers, progress=False)
    build = time.perf_counter() - started
    started = time.perf_counter()
    prepare_cache(paths, args.img_size, cache_dir)
    reopen = time.perf_counter() - started
    print(
        f"prepare_cache: build {build:.2f} s ({len(paths) / build:.0f} images/s, {args.workers} processes), "
        f"reopen + validate {reopen * 1000:.0f} ms",
        flush=True,
    )

    # (b) exactly what mura_utils.training.fit runs on the CPU: the cache read by TrainingBatches
    # in a fresh shuffled order each epoch, then batch_augment with the model's normalization
    config, generator = AugmentConfig(), torch.Generator().manual_seed(0)
    dataset = RadiographDataset(index, args.img_size, raw=True, cache=cache)
    training_batches = TrainingBatches(
        dataset,
        TrainConfig(batch_size=args.batch_size, num_workers=args.project_workers),
        drop_last=False,
        device=torch.device("cpu"),
    )

    def project_epoch() -> int:
        seen = 0
        order = torch.randperm(len(dataset), generator=generator).tolist()
        for batch in training_batches.epoch(order):
            images = batch_augment(batch["image"], config, generator, MEAN, STD)
            images.sum()
            seen += len(batch["label"])
        return seen

    print("(b) project: cache + train.TrainingBatches + augment.batch_augment (CPU)", flush=True)
    results["b"] = timed_epochs("(b)", args.epochs, project_epoch)

    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    names = {"a": "(a) notebooks", "b": "(b) project"}
    for key, rate in results.items():
        print(f"{names[key]:16s} {rate:8.1f} images/s")
    if "a" in results:
        print(f"ratio (project / notebooks): {results['b'] / results['a']:.1f}x")


if __name__ == "__main__":
    main()
