"""A tiny set in the layout of the public Kaggle "Bone Fracture Binary Classification" download."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from mura_utils.synthetic.anatomy import _LAYOUTS
from mura_utils.synthetic.findings import _add_break
from mura_utils.synthetic.mura import EXTERNAL_DIRNAME, EXTERNAL_MANIFEST, _prepare
from mura_utils.synthetic.render import _jpeg_bytes, _png_bytes, _sample_view, render_radiograph

# --------------------------------------------------------------------------------------------
# External (Kaggle "Bone Fracture Binary Classification") sample.
# --------------------------------------------------------------------------------------------

_EXTERNAL_REGIONS = (
    ("TIBIA_FIBULA", 0.22),
    ("ANKLE", 0.18),
    ("KNEE", 0.18),
    ("FOREARM", 0.12),
    ("WRIST", 0.1),
    ("HAND", 0.1),
    ("ELBOW", 0.1),
)
_EXTERNAL_SPLITS = (("train", 46), ("val", 40), ("test", 40))  # images before planted copies
_LABELS = ("fractured", "not fractured")


def _external_name(rng: np.random.Generator, used: set[str], suffix: str) -> str:
    """A file name in the style of the Kaggle set (``12-rotated1-rotated2.jpg``, ``image7.png``)."""
    while True:
        k = int(rng.integers(1, 400))
        style = int(rng.integers(4))
        if suffix == ".png" or style == 0:
            stem = f"image{k}"
        elif style == 1:
            stem = f"{k}-rotated{int(rng.integers(1, 4))}"
        elif style == 2:
            stem = f"{k}-rotated{int(rng.integers(1, 4))}-rotated{int(rng.integers(1, 4))}"
        else:
            stem = f"IMG{int(rng.integers(10**6, 10**7)):07d}"
        name = stem + suffix
        if name not in used:
            used.add(name)
            return name


def _external_image(rng: np.random.Generator, fractured: bool, region: str | None = None) -> np.ndarray:
    """One external-style radiograph: lower or upper limb, flat noisy contrast, maybe a break."""
    if region is None:
        names, weights = zip(*_EXTERNAL_REGIONS)
        region = str(rng.choice(names, p=np.array(weights) / sum(weights)))
    anatomy = _LAYOUTS[region](rng)
    if fractured:
        anatomy = _add_break(rng, anatomy)
    return render_radiograph(anatomy, _sample_view(rng, (200, 360), external=True), rng)


def external_radiograph(seed: int, body_part: str = "WRIST", fractured: bool = False) -> np.ndarray:
    """One external-style radiograph (HxW uint8) of ``body_part`` (a MURA part name), for tests that
    need distinct images of one body part."""
    if body_part not in _LAYOUTS:
        raise ValueError(f"body_part {body_part!r} is not one of {sorted(_LAYOUTS)}")
    return _external_image(np.random.default_rng([seed, 13]), fractured, body_part)


def _resized(image: np.ndarray, factor: float) -> np.ndarray:
    height, width = image.shape
    size = (round(width * factor), round(height * factor))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def _rotate(image: np.ndarray, degrees: float, expand: bool = False) -> np.ndarray:
    """A small rotation as augmentation tools do it: corners filled black."""
    return np.asarray(Image.fromarray(image).rotate(degrees, Image.BILINEAR, expand=expand, fillcolor=0))


def make_external_sample(out_dir: str | Path, seed: int = 0, *, overwrite: bool = False) -> Path:
    """Write a Kaggle-style fracture sample; return ``out_dir/Bone_Fracture_Binary_Classification``.

    Images lie in ``<root>/Bone_Fracture_Binary_Classification/{train,val,test}/{fractured,not
    fractured}/`` (nested one level, like the download). Planted quirks, listed in
    ``out_dir/external_sample_manifest.json`` by paths relative to the returned root: three
    exact duplicate groups across splits (one also across labels), three near duplicates
    (JPEG re-encode, 90% resize, +5% brightness), seven augmented copies of other sources named
    like the Kaggle set's (``<stem>-rotated1.jpg``; ``augmented_copies``: a quarter turn, a mirror
    image, a 7 degree rotation with black corners, a -7 degree rotation on an expanded canvas, a
    60% resize saved as PNG, a PNG re-encoded as JPEG, a renamed byte copy), one JPEG truncated to
    half its bytes, and stray non-image files (README.txt, .DS_Store, an AppleDouble ``._image1.png``).
    """
    out_dir = Path(out_dir)
    root = out_dir / EXTERNAL_DIRNAME
    _prepare(root, overwrite, out_dir / EXTERNAL_MANIFEST)
    inner = root / EXTERNAL_DIRNAME
    rng = np.random.default_rng([seed, 11])
    used: dict[tuple[str, str], set[str]] = {(s, lab): set() for s, _ in _EXTERNAL_SPLITS for lab in _LABELS}
    originals: dict[tuple[str, str], list[tuple[str, np.ndarray, bytes]]] = {}

    def write(split: str, label: str, name: str, data: bytes) -> str:
        target = inner / split / label / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        used[(split, label)].add(name)
        return target.relative_to(root).as_posix()

    def encode(image: np.ndarray, suffix: str) -> bytes:
        if suffix == ".png":
            return _png_bytes(image, "L")
        return _jpeg_bytes(image, int(rng.integers(80, 96)), rgb=bool(rng.random() < 0.6))

    for split, count in _EXTERNAL_SPLITS:
        for k in range(count):
            label = _LABELS[k % 2]
            image = _external_image(rng, label == "fractured")
            suffix = ".png" if rng.random() < 0.3 else ".jpg"
            if split == "train" and label == "not fractured" and k == 1:
                name = "image1.png"  # the AppleDouble file below shadows this one
                used[(split, label)].add(name)
                suffix = ".png"
            else:
                name = _external_name(rng, used[(split, label)], suffix)
            data = encode(image, suffix)
            write(split, label, name, data)
            originals.setdefault((split, label), []).append((name, image, data))

    def source(split: str, label: str, suffix: str, nth: int = 0):
        matches = [o for o in originals[(split, label)] if o[0].endswith(suffix)]
        return matches[nth]

    def rel(split: str, label: str, name: str) -> str:
        return f"{EXTERNAL_DIRNAME}/{split}/{label}/{name}"

    exact = []
    name, _, data = source("train", "fractured", ".jpg", 0)  # same bytes, new name
    exact.append(
        [
            rel("train", "fractured", name),
            write("test", "fractured", _external_name(rng, used[("test", "fractured")], ".jpg"), data),
        ]
    )
    name, _, data = source("train", "not fractured", ".png", 0)  # same bytes, same name
    copy_name = name
    if copy_name in used[("val", "not fractured")]:
        copy_name = _external_name(rng, used[("val", "not fractured")], ".png")
    exact.append([rel("train", "not fractured", name), write("val", "not fractured", copy_name, data)])
    name, _, data = source("val", "fractured", ".jpg", 0)  # across splits and labels
    cross = [
        rel("val", "fractured", name),
        write("test", "not fractured", _external_name(rng, used[("test", "not fractured")], ".jpg"), data),
    ]
    exact.append(cross)

    near = []
    name, image, _ = source("train", "fractured", ".jpg", 1)
    near.append(
        {
            "kind": "jpeg_requality",
            "paths": [
                rel("train", "fractured", name),
                write(
                    "val",
                    "fractured",
                    _external_name(rng, used[("val", "fractured")], ".jpg"),
                    _jpeg_bytes(image, 60, rgb=True),
                ),
            ],
        }
    )
    name, image, _ = source("train", "not fractured", ".jpg", 0)
    h, w = image.shape
    small = np.asarray(Image.fromarray(image).resize((round(w * 0.9), round(h * 0.9)), Image.BILINEAR))
    near.append(
        {
            "kind": "resized_90_percent",
            "paths": [
                rel("train", "not fractured", name),
                write(
                    "test",
                    "not fractured",
                    _external_name(rng, used[("test", "not fractured")], ".jpg"),
                    _jpeg_bytes(small, 90, rgb=False),
                ),
            ],
        }
    )
    name, image, _ = source("val", "not fractured", ".jpg", 0)
    brighter = np.clip(np.rint(image.astype(np.float32) * 1.05), 0, 255).astype(np.uint8)
    near.append(
        {
            "kind": "brightness_plus_5_percent",
            "paths": [
                rel("val", "not fractured", name),
                write(
                    "test",
                    "not fractured",
                    _external_name(rng, used[("test", "not fractured")], ".jpg"),
                    _jpeg_bytes(brighter, 90, rgb=True),
                ),
            ],
        }
    )

    whole = _jpeg_bytes(_external_image(rng, True), 90, rgb=True)
    truncated = write(
        "train", "fractured", _external_name(rng, used[("train", "fractured")], ".jpg"), whole[: len(whole) // 2]
    )

    augmented = []

    def plant(kind: str, source_at: tuple[str, str, str, int], target: tuple[str, str], data_of, suffix: str) -> None:
        """A copy of the nth ``suffix`` file of a source folder, named like the Kaggle set's copies
        (``<source stem>-rotatedN``) or freshly, in ``target``; recorded with its kind."""
        split, label, source_suffix, nth = source_at
        name, image, data = source(split, label, source_suffix, nth)
        stem = Path(name).stem
        tags = [f"{stem}-rotated{k}{suffix}" for k in (1, 2, 3)]
        copy_name = next((tag for tag in tags if tag not in used[target]), None)
        copy_name = copy_name or _external_name(rng, used[target], suffix)
        copy = write(*target, copy_name, data_of(image, data))
        linked_as = (
            "exact" if kind == "renamed" else "near" if kind in ("resized_60_percent", "png_to_jpeg") else "transformed"
        )
        augmented.append({"kind": kind, "duplicate_kind": linked_as, "source": rel(split, label, name), "copy": copy})

    plant(
        "quarter_turn",
        ("train", "fractured", ".jpg", 2),
        ("val", "fractured"),
        lambda image, _: _jpeg_bytes(np.rot90(image), 90, rgb=False),
        ".jpg",
    )
    plant(
        "mirror",
        ("train", "not fractured", ".jpg", 1),
        ("test", "not fractured"),
        lambda image, _: _jpeg_bytes(np.fliplr(image), 90, rgb=True),
        ".jpg",
    )
    plant(
        "rotated_7_degrees",
        ("test", "fractured", ".jpg", 0),
        ("train", "fractured"),
        lambda image, _: _jpeg_bytes(_rotate(image, 7), 90, rgb=False),
        ".jpg",
    )
    plant(
        "rotated_minus_7_degrees_expanded",
        ("val", "not fractured", ".jpg", 1),
        ("val", "not fractured"),
        lambda image, _: _png_bytes(_rotate(image, -7, expand=True), "L"),
        ".png",
    )
    plant(
        "resized_60_percent",
        ("test", "not fractured", ".jpg", 0),
        ("train", "not fractured"),
        lambda image, _: _png_bytes(_resized(image, 0.6), "L"),
        ".png",
    )
    plant(
        "png_to_jpeg",
        ("val", "fractured", ".png", 0),
        ("test", "fractured"),
        lambda image, _: _jpeg_bytes(image, 85, rgb=False),
        ".jpg",
    )
    plant("renamed", ("test", "fractured", ".jpg", 1), ("test", "fractured"), lambda _, data: data, ".jpg")

    (root / "README.txt").write_text(
        "Bone fracture binary classification (synthetic sample).\n"
        "Folders: train, val, test; classes: fractured, not fractured.\n",
        encoding="utf-8",
    )
    (inner / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(56))
    apple_double = (
        b"\x00\x05\x16\x07\x00\x02\x00\x00"
        + b"Mac OS X        "
        + b"\x00\x02\x00\x00\x00\x09\x00\x00\x00\x32\x00\x00\x00\x20"
        + bytes(48)
    )
    (inner / "train" / "not fractured" / "._image1.png").write_bytes(apple_double)
    stray = ["README.txt", f"{EXTERNAL_DIRNAME}/.DS_Store", f"{EXTERNAL_DIRNAME}/train/not fractured/._image1.png"]

    counts = {
        split: {
            label: sum(
                1
                for p in (inner / split / label).iterdir()
                if p.suffix in (".jpg", ".png") and not p.name.startswith("._")
            )
            for label in _LABELS
        }
        for split, _ in _EXTERNAL_SPLITS
    }
    manifest = {
        "root": EXTERNAL_DIRNAME,
        "exact_duplicate_groups": exact,
        "cross_label_duplicate_group": cross,
        "near_duplicate_groups": near,
        "augmented_copies": augmented,
        "truncated": [truncated],
        "stray_files": stray,
        "image_counts": counts,
    }
    (out_dir / EXTERNAL_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return root
