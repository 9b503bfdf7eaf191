"""Time and check the external set's duplicate grouping on a few thousand synthetic radiographs.

Writes DISTINCT synthetic external-style radiographs in the Kaggle layout and, for COPIED of them,
augmented copies named like the Kaggle set's (``<stem>-rotatedN``): quarter turns, mirror images,
7 and -10 degree rotations (black corners, expanded canvas, cropped and zoomed back), a half-size
resize and a JPEG re-encode. Reports hashing (decode + descriptors) and grouping time, how many
copies landed in their source's group, and how many distinct radiographs were merged (false merges).
Numbers are on SYNTHETIC images.

    python benchmarks/external_duplicates.py [--distinct 2000] [--copied 100] [--workers 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, if mura_utils is not installed
from mura_utils.data.external import index as index_module
from mura_utils.data.external.layout import list_files
from mura_utils.synthetic.external import _EXTERNAL_REGIONS, external_radiograph


def rotated(image: np.ndarray, degrees: float, how: str) -> np.ndarray:
    picture = Image.fromarray(image)
    if how != "cropped":
        return np.asarray(picture.rotate(degrees, Image.BILINEAR, expand=how == "expanded", fillcolor=0))
    width, height = picture.size
    radians = np.radians(abs(degrees))
    zoom = max(np.cos(radians) + height / width * np.sin(radians), np.cos(radians) + width / height * np.sin(radians))
    box = (
        width * (1 - 1 / zoom) / 2,
        height * (1 - 1 / zoom) / 2,
        width * (1 + 1 / zoom) / 2,
        height * (1 + 1 / zoom) / 2,
    )
    return np.asarray(picture.rotate(degrees, Image.BILINEAR).resize((width, height), Image.BILINEAR, box=box))


COPIES = {
    "quarter_turn": lambda a: np.rot90(a),
    "mirror": lambda a: a[:, ::-1],
    "rotated_7_black": lambda a: rotated(a, 7, "black"),
    "rotated_-7_expanded": lambda a: rotated(a, -7, "expanded"),
    "rotated_7_cropped": lambda a: rotated(a, 7, "cropped"),
    "rotated_-10_black": lambda a: rotated(a, -10, "black"),
    "resized_half": lambda a: np.asarray(Image.fromarray(a).resize((a.shape[1] // 2, a.shape[0] // 2))),
    "jpeg_quality_50": lambda a: a,
}


def write_tree(root: Path, distinct: int, copied: int) -> dict[str, str]:
    """Image files in train|val|test/fractured|not fractured; returns copy path -> source path."""
    regions = [region for region, _ in _EXTERNAL_REGIONS]
    source_of = {}
    for number in range(distinct):
        split = ("train", "val", "test")[number % 3]
        label = ("fractured", "not fractured")[number // 3 % 2]
        folder = root / split / label
        folder.mkdir(parents=True, exist_ok=True)
        image = external_radiograph(number, regions[number % len(regions)], fractured=label == "fractured")
        source = folder / f"{number}.jpg"
        Image.fromarray(image).save(source, quality=90)
        if number < copied:
            for tag, (kind, make) in enumerate(COPIES.items(), start=1):
                copy = folder / f"{number}-rotated{tag}.jpg"
                Image.fromarray(np.ascontiguousarray(make(image))).save(copy, quality=50 if "jpeg" in kind else 90)
                source_of[str(copy)] = str(source)
    return source_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distinct", type=int, default=2000)
    parser.add_argument("--copied", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--dir", default="/tmp/external_duplicates_bench")
    args = parser.parse_args()
    root = Path(args.dir) / f"d{args.distinct}_c{args.copied}"
    if not root.exists():
        source_of = write_tree(root, args.distinct, args.copied)
    else:
        source_of = {
            str(p): str(p.with_name(p.name.split("-rotated")[0] + ".jpg")) for p in root.rglob("*-rotated*.jpg")
        }
    images, _ = list_files(root)
    paths = sorted(path for path, _, _ in images)
    started = time.perf_counter()
    hashed = index_module._hash_all(paths, args.workers, progress=False)
    hashing = time.perf_counter() - started
    sha1 = [row["sha1"] for row in hashed]
    descriptors = [row["hashes"] for row in hashed]
    started = time.perf_counter()
    grouped = index_module.group_duplicates(sha1, descriptors)
    grouping = time.perf_counter() - started
    group_of = dict(zip(paths, grouped["near_group"]))
    missed = sum(group_of[copy] != group_of[source] for copy, source in source_of.items())
    sources = [path for path in paths if "-rotated" not in Path(path).name]
    merged = len(sources) - len({group_of[path] for path in sources})
    print(f"SYNTHETIC: {len(paths)} images ({len(sources)} distinct, {len(source_of)} augmented copies)")
    print(
        f"hashing (decode + descriptors, {args.workers} worker(s)): {hashing:.1f} s, {hashing / len(paths) * 1000:.1f} ms/image"
    )
    print(f"grouping (pair search + verification): {grouping:.1f} s")
    print(f"copies outside their source's group: {missed} of {len(source_of)}")
    print(f"distinct radiographs merged with another (false merges): {merged} of {len(sources)}")


if __name__ == "__main__":
    main()
