"""Training throughput (forward + backward + AdamW step, images/s) and peak memory of the four
models, each optimized setting beside its fp32 baseline in one table.

Settings: ``fp32`` (baseline: fp32 weights and inputs, contiguous NCHW, PyTorch's default TF32
policy), ``channels_last``, ``bf16+channels_last``
(torch.autocast bf16) and, with --compile, ``bf16+channels_last+compile``. Inputs are random:
this measures the model and optimizer, not the data pipeline (see data_pipeline.py).
Peak memory: torch.cuda.max_memory_allocated on CUDA; on CPU the growth of the process's
resident set while the setting runs (sampled with psutil, approximate).

    PYTHONPATH=. python benchmarks/train_throughput.py                      # CPU, short
    PYTHONPATH=. python benchmarks/train_throughput.py --device cuda --img-size 320 \
        --batch-size 64 --steps 20 --compile
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import resource
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, if mura_utils is not installed
from mura_utils.models.networks import build_model

MODELS = ("custom_cnn", "resnet50", "densenet169", "efficientnet_b0")


class PeakRss:
    """Peak resident-set growth (bytes) while the ``with`` block runs, sampled every 2 ms."""

    def __init__(self):
        try:
            import psutil

            self._rss = psutil.Process().memory_info
        except ImportError:
            self._rss = None

    def _current(self) -> int:
        if self._rss is not None:
            return self._rss().rss
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak ever: an upper bound

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._current())

    def __enter__(self) -> PeakRss:
        gc.collect()
        try:  # hand freed heap back to the OS so an earlier model's memory is not counted as reuse
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        self.start = self.peak = self._current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._current())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def default_settings(device: torch.device, compile_: bool) -> list[str]:
    # bf16 on a CPU without native bf16 (no AVX512-BF16/AMX) is several times slower: opt in
    settings = ["fp32", "channels_last"] if device.type == "cpu" else ["fp32", "channels_last", "bf16+channels_last"]
    return settings + (["bf16+channels_last+compile"] if compile_ else [])


def measure(
    name: str, setting: str, device: torch.device, img_size: int, batch_size: int, steps: int, warmup: int
) -> tuple[float, int]:
    """(images/s, peak bytes) of ``steps`` timed training steps after ``warmup`` untimed ones."""
    channels_last, bf16, compiled = "channels_last" in setting, "bf16" in setting, "compile" in setting
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 1, img_size, img_size, generator=generator).to(device, memory_format=memory_format)
    labels = torch.randint(0, 2, (batch_size,), generator=generator).float().to(device)
    parts = torch.randint(0, 7, (batch_size,), generator=generator).to(device)

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRss() as rss:
        model = build_model(name, pretrained=False, multitask=True).to(device, memory_format=memory_format).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        forward = torch.compile(model) if compiled else model

        def step() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                outputs = forward(images)  # noqa: F821 (deleted after the timing loop)
                loss = F.binary_cross_entropy_with_logits(
                    outputs["abnormality"].float(), labels
                ) + 0.3 * F.cross_entropy(outputs["body_part"].float(), parts)
            optimizer.zero_grad(set_to_none=True)  # noqa: F821
            loss.backward()
            optimizer.step()  # noqa: F821

        for _ in range(warmup):
            step()
        if cuda:
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        del model, optimizer, forward
    peak = torch.cuda.max_memory_allocated(device) if cuda else rss.growth
    return steps * batch_size / seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model and setting")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (cuDNN autotune, compile)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--settings",
        default=None,
        help="comma list of fp32, channels_last, bf16+channels_last, bf16+channels_last+compile "
        "(default: fp32,channels_last on CPU; plus bf16+channels_last on CUDA)",
    )
    parser.add_argument("--compile", action="store_true", help="add bf16+channels_last+compile")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # TF32 left at PyTorch's defaults, as a plain script gets
        where = torch.cuda.get_device_name(device)
    else:
        where = f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    settings = args.settings.split(",") if args.settings else default_settings(device, args.compile)
    if settings[0] != "fp32":
        settings.insert(0, "fp32")
    print(
        f"{where}; img_size {args.img_size}, batch {args.batch_size}, {args.steps} timed steps "
        f"after {args.warmup} warm-up; torch {torch.__version__}",
        flush=True,
    )
    memory = "peak CUDA MiB" if device.type == "cuda" else "RSS growth MiB"
    print(f"{'model':16s} {'setting':28s} {'images/s':>9s} {'vs fp32':>8s} {memory:>15s}", flush=True)
    for name in args.models.split(","):
        baseline = None
        for setting in settings:
            try:
                rate, peak = measure(name, setting, device, args.img_size, args.batch_size, args.steps, args.warmup)
            except Exception as error:  # e.g. compile without a C compiler: report, go on
                print(f"{name:16s} {setting:28s} failed: {type(error).__name__}: {str(error)[:120]}", flush=True)
                continue
            baseline = baseline or (rate if setting == "fp32" else None)
            ratio = f"{rate / baseline:7.2f}x" if baseline else "      -"
            print(f"{name:16s} {setting:28s} {rate:9.1f} {ratio:>8s} {peak / 2**20:15.0f}", flush=True)


if __name__ == "__main__":
    main()
