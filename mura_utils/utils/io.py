"""Atomic file writes: a crash mid-write never leaves a half-written checkpoint or report, and a
finished write survives a power cut or a preempted VM (file and folder are fsynced)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_file(path: str | Path) -> None:
    """Flush one file's data to disk (the rename that publishes it must not outrun its bytes)."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def fsync_directory(path: str | Path) -> None:
    """Flush a folder's entries to disk, so a rename inside it survives a power cut (no-op where
    folders cannot be opened, e.g. Windows)."""
    try:
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:  # some file systems (e.g. network mounts) refuse fsync on folders
        pass
    finally:
        os.close(handle)


def replace_durably(source: str | Path, target: str | Path) -> None:
    """``os.replace`` with fsync of the file before and of its folder after the rename."""
    fsync_file(source)
    os.replace(source, target)
    fsync_directory(Path(target).parent)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success it replaces ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; published files get the usual mode
    try:
        yield Path(temporary)
        replace_durably(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def atomic_torch_save(obj, path: str | Path) -> None:
    import torch

    with atomic_path(path) as temporary:
        torch.save(obj, temporary)
