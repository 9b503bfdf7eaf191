"""The decode-once cache: exact pixels, never a stale or half-built cache, errors that name files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mura_utils.data import cache as cache_module
from mura_utils.data.cache import (
    StaleCacheWarning,
    cache_files,
    iterate_batches,
    open_cache,
    prefetch,
    prepare_cache,
    prepare_index_cache,
)
from mura_utils.data.imaging import ImageReadError, load_letterboxed


def _write_images(folder: Path, count: int = 20) -> list[str]:
    """Small PNGs (and one JPEG) of varied shapes and modes: L, RGB, RGBA, P, I;16."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        height, width = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        gray = (rng.random((height, width)) * 255).astype(np.uint8)
        mode = ("L", "RGB", "RGBA", "P", "I;16")[i % 5]
        if mode == "I;16":
            image = Image.fromarray(gray.astype(np.uint16) * 200)
        elif mode == "L":
            image = Image.fromarray(gray)
        else:
            image = Image.fromarray(gray).convert(mode)
        path = folder / (f"img{i:02d}.jpg" if i == 7 else f"img{i:02d}.png")
        image.convert("RGB").save(path) if path.suffix == ".jpg" else image.save(path)
        paths.append(str(path))
    return paths


@pytest.fixture()
def images(tmp_path: Path) -> list[str]:
    return _write_images(tmp_path / "images")


def _no_tmp(folder: Path) -> bool:
    return not list(folder.glob("*.tmp"))


def test_pixels_match_load_letterboxed(images, tmp_path):
    cache = prepare_cache(images, 64, tmp_path / "cache", num_workers=2, progress=False)
    assert len(cache) == len(images) and cache.images.shape == (len(images), 64, 64)
    assert cache.images.dtype == np.uint8 and not cache.images.flags.writeable
    for path in reversed(images):
        np.testing.assert_array_equal(cache.images[cache.row_of(path)], load_letterboxed(path, 64))
    assert _no_tmp(tmp_path / "cache")
    with pytest.raises(KeyError, match="not-there.png"):
        cache.row_of("not-there.png")


def test_reopen_is_order_insensitive_and_set_sensitive(images, tmp_path):
    built = prepare_cache(images, 64, tmp_path / "cache", num_workers=1, progress=False)
    reopened = open_cache(list(reversed(images)), 64, tmp_path / "cache")
    assert reopened is not None and reopened.array_path == built.array_path
    assert open_cache(images[:-1], 64, tmp_path / "cache") is None  # another set: another key


def test_other_img_size_is_not_reused(images, tmp_path):
    small = prepare_cache(images, 64, tmp_path / "cache", num_workers=1, progress=False)
    assert open_cache(images, 96, tmp_path / "cache") is None
    large = prepare_cache(images, 96, tmp_path / "cache", num_workers=1, progress=False)
    assert large.array_path != small.array_path and large.images.shape[1:] == (96, 96)
    np.testing.assert_array_equal(large.images[large.row_of(images[3])], load_letterboxed(images[3], 96))
    assert open_cache(images, 64, tmp_path / "cache") is not None  # both sizes coexist


def test_modified_source_invalidates(images, tmp_path):
    prepare_cache(images, 64, tmp_path / "cache", num_workers=1, progress=False)
    Image.fromarray(np.full((30, 50), 200, np.uint8)).save(images[5])
    stat = os.stat(images[5])
    os.utime(images[5], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.warns(StaleCacheWarning, match="img05.png"):
        assert open_cache(images, 64, tmp_path / "cache") is None
    with pytest.warns(StaleCacheWarning):
        rebuilt = prepare_cache(images, 64, tmp_path / "cache", num_workers=1, progress=False)
    np.testing.assert_array_equal(rebuilt.images[rebuilt.row_of(images[5])], load_letterboxed(images[5], 64))


def test_touch_alone_invalidates(images, tmp_path):
    prepare_cache(images, 64, tmp_path / "cache", num_workers=1, progress=False)
    os.utime(images[0], ns=(0, 10**18))
    with pytest.warns(StaleCacheWarning, match="changed"):
        assert open_cache(images, 64, tmp_path / "cache") is None


def test_bad_manifest_or_array_is_rebuilt(images, tmp_path):
    cache = prepare_cache(images, 64, tmp_path / "cache", num_workers=1, progress=False)
    array_path, manifest_path = cache_files(images, 64, tmp_path / "cache")
    with open(array_path, "ab") as handle:
        handle.write(b"x")
    with pytest.warns(StaleCacheWarning, match="bytes"):
        assert open_cache(images, 64, tmp_path / "cache") is None
    manifest_path.write_text("{not json")
    with pytest.warns(StaleCacheWarning, match="unreadable"):
        assert open_cache(images, 64, tmp_path / "cache") is None
    with pytest.warns(StaleCacheWarning):
        assert len(prepare_cache(images, 64, tmp_path / "cache", num_workers=1, progress=False)) == len(cache)


def test_decode_failure_midway_leaves_no_cache(images, tmp_path, monkeypatch):
    calls = []

    def failing(path, size):
        calls.append(path)
        if len(calls) > 5:
            raise RuntimeError("simulated crash")
        return load_letterboxed(path, size)

    monkeypatch.setattr(cache_module, "load_letterboxed", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        prepare_cache(images, 64, tmp_path / "cache", num_workers=1, progress=False)
    monkeypatch.undo()
    assert open_cache(images, 64, tmp_path / "cache") is None
    assert _no_tmp(tmp_path / "cache")
    cache = prepare_cache(images, 64, tmp_path / "cache", num_workers=1, progress=False)
    np.testing.assert_array_equal(cache.images[cache.row_of(images[-1])], load_letterboxed(images[-1], 64))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_killed_prepare_is_rebuilt(images, tmp_path, monkeypatch):
    """A process killed mid-build (no cleanup runs) leaves tmp files and no manifest.

    Forked rather than a fresh interpreter: re-importing the package would take seconds.
    """
    calls = []

    def dying(path, size):
        calls.append(path)
        if len(calls) > 8:
            os._exit(3)  # like SIGKILL: no finally, no atexit
        return load_letterboxed(path, size)

    pid = os.fork()
    if pid == 0:  # child
        try:
            monkeypatch.setattr(cache_module, "load_letterboxed", dying)
            prepare_cache(images, 64, tmp_path / "cache", num_workers=1, progress=False)
        finally:
            os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 3
    assert list((tmp_path / "cache").glob("*.tmp"))  # the killed build's partial array
    with pytest.warns(StaleCacheWarning, match="interrupted"):
        assert open_cache(images, 64, tmp_path / "cache") is None
    with pytest.warns(StaleCacheWarning):
        cache = prepare_cache(images, 64, tmp_path / "cache", num_workers=2, progress=False)
    assert _no_tmp(tmp_path / "cache")
    np.testing.assert_array_equal(cache.images[cache.row_of(images[10])], load_letterboxed(images[10], 64))


def test_killed_before_manifest_is_rebuilt(images, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "_write_manifest", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        prepare_cache(images, 64, tmp_path / "cache", num_workers=1, progress=False)
    monkeypatch.undo()
    assert cache_files(images, 64, tmp_path / "cache")[0].exists()  # array in place, no manifest
    with pytest.warns(StaleCacheWarning, match="interrupted"):
        assert open_cache(images, 64, tmp_path / "cache") is None
    with pytest.warns(StaleCacheWarning):
        prepare_cache(images, 64, tmp_path / "cache", num_workers=1, progress=False)
    assert open_cache(images, 64, tmp_path / "cache") is not None


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_image_names_the_file(images, tmp_path, workers):
    bad = Path(images[12])
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ImageReadError, match="img12.png"):
        prepare_cache(images, 64, tmp_path / "cache", num_workers=workers, progress=False)
    assert open_cache(images, 64, tmp_path / "cache") is None
    assert _no_tmp(tmp_path / "cache")


def test_missing_image_names_the_file(images, tmp_path):
    with pytest.raises(ImageReadError, match="gone.png"):
        prepare_cache(images + [str(tmp_path / "gone.png")], 64, tmp_path / "cache", progress=False)


def test_index_cache_and_dataset(images, tmp_path):
    import pandas as pd
    import torch

    from mura_utils.data.dataset import RadiographDataset

    index = pd.DataFrame(
        {"path": images, "label": [i % 2 for i in range(len(images))], "body_part": ["WRIST"] * len(images)}
    )
    cache = prepare_index_cache(index, 64, tmp_path / "cache", num_workers=1, progress=False)
    dataset = RadiographDataset(index, 64, raw=True, cache=cache)
    assert torch.equal(dataset[4]["image"][0], torch.from_numpy(load_letterboxed(images[4], 64)))

    seen = []
    for batch, positions in iterate_batches(
        cache.images, dataset.cache_rows, 6, shuffle=True, generator=torch.Generator().manual_seed(0)
    ):
        assert batch.dtype == torch.uint8 and batch.shape[1:] == (1, 64, 64)
        for image, position in zip(batch, positions.tolist()):
            assert torch.equal(image[0], dataset[position]["image"][0])
        seen += positions.tolist()
    assert sorted(seen) == list(range(len(images)))
    batches = list(iterate_batches(cache.images, dataset.cache_rows, 6, drop_last=True))
    assert len(batches) == len(images) // 6


def test_cache_pickles_without_copying_pixels(images, tmp_path):
    import pickle

    cache = prepare_cache(images, 64, tmp_path / "cache", num_workers=1, progress=False)
    payload = pickle.dumps(cache)
    assert len(payload) < cache.images.nbytes
    np.testing.assert_array_equal(pickle.loads(payload).images, cache.images)


def test_prefetch_keeps_order_errors_and_early_stop():
    assert list(prefetch(range(50), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("boom")

    items = prefetch(failing())
    assert next(items) == 1
    with pytest.raises(ValueError, match="boom"):
        next(items)
    early = prefetch(iter(range(10**6)), depth=2)
    assert next(early) == 0
    early.close()  # the producer thread notices and exits instead of blocking forever


def test_iterate_batches_follows_a_given_order(images, tmp_path):
    import torch

    cache = prepare_cache(images, 64, tmp_path / "cache", num_workers=1, progress=False)
    rows = np.arange(len(images))[::-1].copy()
    order = [1, 5, 2, 7, 0]  # e.g. one DDP rank's share of an epoch
    batches = list(iterate_batches(cache.images, rows, 2, order=order))
    assert [p.tolist() for _, p in batches] == [[1, 5], [2, 7], [0]]  # rows 18, 14: read 14 first, yielded as given
    for batch, positions in batches:
        for image, position in zip(batch, positions.tolist()):
            assert torch.equal(image[0], torch.from_numpy(np.array(cache.images[rows[position]])))
    assert len(list(iterate_batches(cache.images, rows, 2, order=order, drop_last=True))) == 2
    with pytest.raises(IndexError, match="order"):
        next(iterate_batches(cache.images, rows, 2, order=[len(images)]))


def test_a_live_builds_temp_file_survives_and_abandoned_ones_go(images, tmp_path):
    import subprocess
    import sys
    import time

    array_path, _ = cache_files(images, 64, tmp_path / "cache")
    array_path.parent.mkdir(parents=True)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its PID no longer runs
    live = array_path.with_name(f"{array_path.name}.{os.getpid()}.tmp")  # another build in a live process
    dead = array_path.with_name(f"{array_path.name}.{finished.pid}.tmp")
    old = array_path.with_name(f"{array_path.name}.{os.getpid()}.feedbeef.tmp")
    for leftover in (live, dead, old):
        leftover.write_bytes(b"partial")
    an_hour_ago = time.time() - 2 * 3600
    os.utime(old, (an_hour_ago, an_hour_ago))  # untouched for two hours: abandoned whatever its PID
    with pytest.warns(StaleCacheWarning, match="interrupted"):
        cache = prepare_cache(images, 64, tmp_path / "cache", num_workers=1, progress=False)
    assert live.read_bytes() == b"partial" and not dead.exists() and not old.exists()
    np.testing.assert_array_equal(cache.images[cache.row_of(images[3])], load_letterboxed(images[3], 64))


@pytest.mark.filterwarnings("ignore:.*being built by another process:mura_utils.data.cache.StaleCacheWarning")
def test_two_concurrent_builds_of_one_cache_both_succeed(images, tmp_path, monkeypatch):
    import threading

    both_decoding = threading.Barrier(2, timeout=60)
    started = threading.local()

    def decode_together(path, size):
        if not getattr(started, "done", False):  # each build waits until the other has begun writing
            started.done = True
            both_decoding.wait()
        return load_letterboxed(path, size)

    monkeypatch.setattr(cache_module, "load_letterboxed", decode_together)
    results, errors = [], []

    def build():
        try:
            results.append(prepare_cache(images, 64, tmp_path / "cache", num_workers=1, progress=False))
        except BaseException as error:  # noqa: BLE001 - reported by the assert below
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == 2
    assert _no_tmp(tmp_path / "cache")
    for cache in results:
        np.testing.assert_array_equal(cache.images[cache.row_of(images[5])], load_letterboxed(images[5], 64))
