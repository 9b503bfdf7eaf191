"""Where the external set's images are: split and class folders under a download root."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mura_utils.data.imaging import IMAGE_SUFFIXES

SPLITS: tuple[str, ...] = ("train", "val", "test")
LABEL_NAMES: dict[int, str] = {1: "fractured", 0: "not fractured"}
MAX_NESTING = 3  # split folders may sit under up to this many wrapper folders (zips nest them)

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
_CLASS_ALIASES = {"fractured": 1, "notfractured": 0, "nonfractured": 0, "unfractured": 0}


def _normalize(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


def split_name(name: str) -> str | None:
    """'Train', 'valid', 'Validation', 'TEST' -> canonical split name, else None."""
    return _SPLIT_ALIASES.get(_normalize(name))


def class_label(name: str) -> int | None:
    """'Fractured' -> 1; 'not fractured', 'Not_Fractured', 'not-fractured' -> 0; else None."""
    return _CLASS_ALIASES.get(_normalize(name))


def _is_image(path: Path) -> bool:
    # AppleDouble "._x.png" and other dot files carry an image suffix but are not images.
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _find_split_dirs(root: Path) -> list[tuple[Path, str]]:
    """Split folders (those holding at least one class folder), at most MAX_NESTING levels down.

    A found split folder is not searched further, so a nested copy inside it is not a second split.
    """
    found, frontier = [], [root]
    for _ in range(MAX_NESTING + 1):
        deeper = []
        for folder in frontier:
            children = sorted(
                p
                for p in folder.iterdir()
                if p.is_dir() and not p.is_symlink() and not p.name.startswith((".", "__MACOSX"))
            )
            for child in children:
                split = split_name(child.name)
                if split and any(class_label(c.name) is not None for c in child.iterdir() if c.is_dir()):
                    found.append((child, split))
                else:
                    deeper.append(child)
        frontier = deeper
    return found


def list_files(root: Path) -> tuple[list[tuple[str, str, int]], list[str]]:
    """(path, split, label) for every image in a class folder, and every other file as ignored."""
    images: list[tuple[str, str, int]] = []
    for split_dir, split in _find_split_dirs(root):
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            label = class_label(class_dir.name)
            if label is None:
                continue
            images += [
                (os.path.abspath(p), split, label) for p in sorted(class_dir.iterdir()) if p.is_file() and _is_image(p)
            ]
    indexed = {path for path, _, _ in images}
    ignored = sorted(
        os.path.abspath(os.path.join(folder, name))
        for folder, _, names in os.walk(root)
        for name in names
        if os.path.abspath(os.path.join(folder, name)) not in indexed
    )
    return images, ignored
