"""Decode once, read a memory map every epoch.

Decoding a PNG and letterboxing it costs ~2 ms per image per core; reading the resized uint8 image back
from a memory map costs microseconds. So every image is decoded once (``imaging.load_letterboxed``, the one
decode step all pipelines share) into ``cache_dir/mura_{S}px_{key}.u8`` (raw uint8, shape (N,S,S), rows in
manifest order) beside ``mura_{S}px_{key}.json``; ``key`` hashes the sorted path list, so caches of
different splits and sizes coexist. Size on disk is N*S*S bytes (full MURA-v1.1 at 320 px: 4.1 GB). The
array is mapped read-only: the OS pages it in on demand, so RAM need not hold it all.

The manifest is the "complete" marker, written last and atomically after the array is flushed and renamed
into place. A killed build leaves no manifest (only ``*.<pid>.*.tmp`` files, removed by the next build once
that PID is gone or the file is an hour old), so it is never mistaken for a valid cache. A cache is used
only if its manifest matches the format version, img_size, the exact set of paths, and every source file's
size and mtime_ns; otherwise a :class:`StaleCacheWarning` says why it is rebuilt. Two processes building
the same cache at once both finish (each writes its own temp file).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from multiprocessing import Pool
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from mura_utils.data.imaging import ImageReadError, load_letterboxed
from mura_utils.utils.io import fsync_directory, replace_durably
from mura_utils.utils.progress import progress_bar

if TYPE_CHECKING:  # torch is only needed by iterate_batches; keep `import cache` light
    import pandas as pd
    import torch

FORMAT_VERSION = 1
T = TypeVar("T")


class StaleCacheWarning(UserWarning):
    """A cache exists for these paths and size but cannot be used; the message says why."""


class ImageCache:
    """A read-only (N,S,S) uint8 memmap of letterboxed images plus the path of each row."""

    def __init__(self, array_path: str | Path, paths: Sequence[str], img_size: int):
        self.array_path = Path(array_path)
        self.paths = list(paths)
        self.img_size = int(img_size)
        self._rows = {path: row for row, path in enumerate(self.paths)}
        self.images = np.memmap(
            self.array_path, dtype=np.uint8, mode="r", shape=(len(self.paths), self.img_size, self.img_size)
        )

    def row_of(self, path: str | os.PathLike) -> int:
        """Row of ``images`` holding this source file (paths compare as given, via os.fspath)."""
        try:
            return self._rows[os.fspath(path)]
        except KeyError:
            raise KeyError(f"{path}: not in image cache {self.array_path}") from None

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"ImageCache({str(self.array_path)!r}, {len(self)} images, {self.img_size}px)"

    # Pickling a memmap copies its whole contents; a DataLoader worker started with spawn
    # (Windows, macOS) should reopen the file instead.
    def __getstate__(self) -> dict:
        return {"array_path": str(self.array_path), "paths": self.paths, "img_size": self.img_size}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["array_path"], state["paths"], state["img_size"])


def _unique(paths: Iterable[str | os.PathLike]) -> list[str]:
    return list(dict.fromkeys(os.fspath(path) for path in paths))


def cache_files(paths: Iterable[str | os.PathLike], img_size: int, cache_dir: str | Path) -> tuple[Path, Path]:
    """(array path, manifest path) of the cache for this set of paths at this size."""
    key = hashlib.sha1("\n".join(sorted(_unique(paths))).encode()).hexdigest()[:12]
    stem = Path(cache_dir) / f"mura_{int(img_size)}px_{key}"
    return stem.with_suffix(".u8"), stem.with_suffix(".json")


def _leftovers(array_path: Path, manifest_path: Path) -> list[Path]:
    folder = array_path.parent
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"{array_path.name}.*.tmp")) + sorted(folder.glob(f"{manifest_path.name}.*.tmp"))


ABANDONED_AFTER_S = 3600  # a temp file untouched this long is a leftover whatever its PID says


def _temporary_name(final: Path) -> Path:
    """``<final>.<pid>.<random>.tmp``: the PID says whether its writer still runs, the random part
    keeps two threads of one process apart."""
    return final.with_name(f"{final.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


def _writer_gone(leftover: Path, final: Path) -> bool:
    """Whether ``leftover`` (a temp file of ``final``) is abandoned: its writer's PID no longer runs
    here, or it has not been touched for an hour (e.g. written from another machine)."""
    try:
        if time.time() - leftover.stat().st_mtime > ABANDONED_AFTER_S:
            return True
    except FileNotFoundError:
        return False  # its writer just renamed or removed it
    pid_text = leftover.name[len(final.name) + 1 :].split(".", 1)[0]
    if not pid_text.isdigit():
        return False  # not named by us: only the age rule applies
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False  # alive (another user's), or unknowable: leave it
    return False


def _remove_abandoned_leftovers(array_path: Path, manifest_path: Path) -> None:
    """Remove temp files of killed builds, never one that a live build is still writing."""
    for leftover in _leftovers(array_path, manifest_path):
        final = array_path if leftover.name.startswith(f"{array_path.name}.") else manifest_path
        if _writer_gone(leftover, final):
            leftover.unlink(missing_ok=True)


def _complete(paths: list[str], img_size: int, array_path: Path, manifest_path: Path) -> bool:
    """Whether a valid cache is in place (e.g. another process finished building it meanwhile)."""
    return manifest_path.is_file() and _stale_reason(paths, img_size, array_path, manifest_path)[0] is not None


def _stale_reason(
    paths: list[str], img_size: int, array_path: Path, manifest_path: Path
) -> tuple[dict | None, str | None]:
    """(manifest, None) when the cache is valid, else (None, why); why is None when no trace of
    a cache exists at all (nothing to warn about)."""
    if not manifest_path.is_file():
        leftovers = _leftovers(array_path, manifest_path)
        if array_path.exists() or any(_writer_gone(leftover, array_path) for leftover in leftovers):
            return None, "incomplete (no manifest: an earlier build was interrupted)"
        if leftovers:
            return None, "being built by another process right now (built here too; the first to finish is used)"
        return None, None
    try:
        manifest = json.loads(manifest_path.read_text())
        version = manifest["format_version"]
        cached_paths, sizes, mtimes = manifest["paths"], manifest["sizes"], manifest["mtimes_ns"]
        cached_size, count = int(manifest["img_size"]), int(manifest["count"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        return None, f"manifest {manifest_path} unreadable ({type(error).__name__}: {error})"
    if version != FORMAT_VERSION:
        return None, f"format version {version} != {FORMAT_VERSION}"
    if cached_size != img_size:
        return None, f"img_size {cached_size} != {img_size}"
    if not (count == len(cached_paths) == len(sizes) == len(mtimes)):
        return None, "manifest lists are inconsistent"
    if len(cached_paths) != len(paths) or set(cached_paths) != set(paths):
        return None, "the set of source paths differs"
    for path, size, mtime in zip(cached_paths, sizes, mtimes):
        try:
            stat = os.stat(path)
        except OSError:
            return None, f"source {path} is missing"
        if stat.st_size != size or stat.st_mtime_ns != mtime:
            return None, f"source {path} changed (size/mtime differ from the cached copy)"
    expected = count * img_size * img_size
    if not array_path.is_file():
        return None, f"array file {array_path} is missing"
    if array_path.stat().st_size != expected:
        return None, f"array file {array_path} has {array_path.stat().st_size} bytes, expected {expected}"
    return manifest, None


def open_cache(paths: Iterable[str | os.PathLike], img_size: int, cache_dir: str | Path) -> ImageCache | None:
    """The valid cache for exactly this set of paths at this img_size, else None.

    A cache that exists but is stale (changed source, bad manifest, interrupted build) is
    reported with a StaleCacheWarning, never used.
    """
    paths = _unique(paths)
    array_path, manifest_path = cache_files(paths, img_size, cache_dir)
    manifest, reason = _stale_reason(paths, int(img_size), array_path, manifest_path)
    if manifest is None:
        if reason is not None:
            warnings.warn(
                f"image cache {array_path} is not used ({reason}); prepare_cache rebuilds it",
                StaleCacheWarning,
                stacklevel=2,
            )
        return None
    return ImageCache(array_path, manifest["paths"], manifest["img_size"])


def _decoded(paths: list[str], img_size: int, num_workers: int) -> Iterator[np.ndarray]:
    """Letterboxed images in path order, decoded in a process pool when num_workers > 1."""
    decode = partial(load_letterboxed, size=img_size)
    if num_workers <= 1 or len(paths) < 2:
        yield from map(decode, paths)
        return
    chunksize = max(1, min(32, len(paths) // (num_workers * 8)))
    with Pool(min(num_workers, len(paths))) as pool:
        yield from pool.imap(decode, paths, chunksize=chunksize)


def _write_manifest(manifest_path: Path, manifest: dict) -> None:
    temporary = _temporary_name(manifest_path)
    with open(temporary, "w") as handle:
        json.dump(manifest, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, manifest_path)
    fsync_directory(manifest_path.parent)  # the manifest marks the cache complete: it must survive a power cut


def _build(
    paths: list[str], img_size: int, array_path: Path, manifest_path: Path, num_workers: int, progress: bool
) -> None:
    array_path.parent.mkdir(parents=True, exist_ok=True)
    if _complete(paths, img_size, array_path, manifest_path):
        return  # another process built it meanwhile
    manifest_path.unlink(missing_ok=True)  # a stale manifest: from here on the cache is not "complete"
    _remove_abandoned_leftovers(array_path, manifest_path)  # a concurrent build's temp file stays
    stats = []  # taken before decoding: a file edited meanwhile fails the next check
    for path in paths:
        try:
            stats.append(os.stat(path))
        except FileNotFoundError:
            raise ImageReadError(f"{path}: image file not found") from None
    temporary = _temporary_name(array_path)
    try:
        images = np.memmap(temporary, dtype=np.uint8, mode="w+", shape=(len(paths), img_size, img_size))
        bar = progress_bar(total=len(paths), desc=f"caching images at {img_size}px", unit="img", disable=not progress)
        with bar:
            for row, image in enumerate(_decoded(paths, img_size, num_workers)):
                images[row] = image
                bar.update()
        images.flush()
        del images  # unmap before the rename
        if _complete(paths, img_size, array_path, manifest_path):
            temporary.unlink()  # another process finished the same cache first: use that one
            return
        replace_durably(temporary, array_path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _write_manifest(
        manifest_path,
        {
            "format_version": FORMAT_VERSION,
            "img_size": img_size,
            "count": len(paths),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "paths": paths,
            "sizes": [stat.st_size for stat in stats],
            "mtimes_ns": [stat.st_mtime_ns for stat in stats],
        },
    )


def prepare_cache(
    paths: Iterable[str | os.PathLike],
    img_size: int,
    cache_dir: str | Path,
    num_workers: int | None = None,
    progress: bool = True,
) -> ImageCache:
    """The valid cache for these paths at this size, building it first if needed.

    Decodes with ``num_workers`` processes (None: os.cpu_count(); 0 or 1: in this process).
    A file that cannot be decoded raises ImageReadError naming it and leaves no cache behind.
    """
    paths = _unique(paths)
    if not paths:
        raise ValueError("prepare_cache: no image paths given")
    img_size = int(img_size)
    cache = open_cache(paths, img_size, cache_dir)
    if cache is not None:
        return cache
    array_path, manifest_path = cache_files(paths, img_size, cache_dir)
    workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    _build(paths, img_size, array_path, manifest_path, workers, progress)
    cache = open_cache(paths, img_size, cache_dir)
    if cache is None:
        raise RuntimeError(
            f"image cache {array_path} is invalid right after building it "
            "(were source files modified during the build?)"
        )
    return cache


def prepare_index_cache(index_df: pd.DataFrame, img_size: int, cache_dir: str | Path, **kwargs) -> ImageCache:
    """One cache covering every row of a MURA index table (column ``path``); keyword arguments
    go to prepare_cache. This is what training and ``mura prepare`` call."""
    return prepare_cache(index_df["path"].tolist(), img_size, cache_dir, **kwargs)


def iterate_batches(
    images: np.ndarray,
    rows: Sequence[int] | np.ndarray,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    pin_memory: bool = False,
    order: Sequence[int] | np.ndarray | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 (B,1,S,S) images, int64 (B,) positions) batches straight from a cache.

    One gather per batch instead of B __getitem__ calls and a dict collation: ``positions``
    index ``rows`` (e.g. RadiographDataset.cache_rows, so labels are ``dataset.labels[positions]``).
    Batches take ``order`` (positions, e.g. a DistributedSampler's) in chunks, else a shuffle
    with ``generator`` or 0..N-1. Each batch is read in increasing row order (sequential memmap
    access) and yielded in the order given, so a position gets the same place in its batch (and
    the same per-place augmentation) as through a DataLoader.
    """
    import torch

    rows = np.asarray(rows, dtype=np.int64)
    if order is None:
        order = torch.randperm(len(rows), generator=generator).numpy() if shuffle else np.arange(len(rows))
    order = np.asarray(order, dtype=np.int64)
    count = len(order) // batch_size if drop_last else math.ceil(len(order) / batch_size)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(images)):
        raise IndexError(f"iterate_batches: rows must lie in 0..{len(images) - 1}")
    if len(order) and (order.min() < 0 or order.max() >= len(rows)):
        raise IndexError(f"iterate_batches: order must lie in 0..{len(rows) - 1}")
    size = images.shape[1:]
    for start in range(0, count * batch_size, batch_size):
        positions = order[start : start + batch_size]
        by_row = np.argsort(rows[positions], kind="stable")
        batch = torch.empty((len(positions), 1, *size), dtype=torch.uint8, pin_memory=pin_memory)
        # read in row order, put each image back in its place (rows checked above; "clip" skips a re-check)
        batch.numpy()[by_row, 0] = np.take(images, rows[positions[by_row]], axis=0, mode="clip")
        yield batch, torch.from_numpy(positions.copy())


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Produce ``items`` in a background thread, up to ``depth`` ahead, so reading and pinning
    the next batch overlaps the current GPU step. Errors are re-raised here, in order."""
    ready: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop, end = threading.Event(), object()

    def offer(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False  # the consumer has gone

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((end, None))
        except BaseException as error:  # handed to the consumer
            offer((end, error))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:  # also when the consumer stops early
        stop.set()


__all__ = [
    "FORMAT_VERSION",
    "ImageCache",
    "StaleCacheWarning",
    "cache_files",
    "open_cache",
    "prepare_cache",
    "prepare_index_cache",
    "iterate_batches",
    "prefetch",
]
