"""Tests for the external (Kaggle fracture) set index, duplicate audit and deduplication."""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageFile, ImageFilter

from mura_utils.data.external import (
    DuplicateReport,
    deduplicate,
    find_duplicates,
    group_hashes,
    hamming_pairs,
    load_external_index,
)
from mura_utils.data.external.hashing import _popcount64_lut, transformed_pairs
from mura_utils.data.external.layout import class_label, split_name
from mura_utils.data.imaging import read_grayscale
from mura_utils.synthetic.external import external_radiograph


def picture(seed: int, size: tuple[int, int] = (160, 192)) -> Image.Image:
    """A smooth radiograph-like image: a gradient plus blurred bright shapes, unique per seed."""
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width] / max(size)
    angle = rng.uniform(0, 2 * np.pi)
    base = 60 + 60 * np.cos(angle) * xx + 60 * np.sin(angle) * yy
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = rng.integers(0, width - 40), rng.integers(0, height - 40)
        w, h = rng.integers(20, 70), rng.integers(20, 90)
        draw.ellipse((x, y, x + w, y + h), fill=int(rng.integers(150, 255)))
    return image.filter(ImageFilter.GaussianBlur(3))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict:
    """A Kaggle-like tree nested one level deeper, with planted duplicates and junk files."""
    root = tmp_path_factory.mktemp("kaggle")
    base = root / "Bone_Fracture_Binary_Classification" / "Bone_Fracture_Binary_Classification"
    folders = {
        ("train", 1): base / "Train" / "Fractured",
        ("train", 0): base / "Train" / "Not Fractured",
        ("val", 1): base / "Valid" / "fractured",
        ("val", 0): base / "Valid" / "not_fractured",
        ("test", 1): base / "test" / "FRACTURED",
        ("test", 0): base / "test" / "not-fractured",
    }
    for folder in folders.values():
        folder.mkdir(parents=True)
    expected: dict[str, tuple[str, int]] = {}

    def save(image: Image.Image, split: str, label: int, name: str, **kwargs) -> Path:
        path = folders[split, label] / name
        image.save(path, **kwargs)
        expected[str(path)] = (split, label)
        return path

    def copy(source: Path, split: str, label: int, name: str) -> Path:
        path = folders[split, label] / name
        shutil.copyfile(source, path)
        expected[str(path)] = (split, label)
        return path

    a = save(picture(1).convert("RGB"), "train", 1, "a.jpg", quality=95)  # RGB JPEG
    b = save(picture(2), "train", 1, "b.png")
    c = save(picture(3), "train", 0, "c.jpg", quality=95)  # L JPEG
    d = save(picture(4), "train", 0, "d.png")
    save(picture(5), "val", 1, "e.jpg", quality=90)
    save(picture(6), "val", 0, "f.png")
    save(picture(7).convert("RGB"), "test", 1, "g.png")
    save(picture(8), "test", 0, "h.jpg", quality=90)
    a_copy = copy(a, "test", 1, "a_copy.jpg")  # exact, cross-split
    b_copy = copy(b, "train", 0, "b_copy.png")  # exact, cross-label
    c_q70 = save(Image.open(c), "val", 0, "c_q70.jpg", quality=70)  # near, re-encoded
    small = picture(4).resize((144, 173), Image.BILINEAR)
    d_small = save(small, "train", 0, "d_small.png")  # near, resized 90%
    broken = save(picture(9), "test", 0, "broken.jpg", quality=95)
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # truncated

    junk = [
        root / "README.txt",
        folders["train", 1] / ".DS_Store",
        folders["train", 1] / "._a.png",
        base / "Train" / "augmented_tmp" / "x.png",
    ]
    junk[-1].parent.mkdir()
    for path in junk:
        path.write_bytes(b"\x00\x05\x16\x07 not an image")
    index = load_external_index(root, num_workers=0, progress=False)
    return {
        "root": root,
        "index": index,
        "expected": expected,
        "junk": junk,
        "pairs": {
            "exact_split": (a, a_copy),
            "exact_label": (b, b_copy),
            "near_jpeg": (c, c_q70),
            "near_resized": (d, d_small),
        },
        "broken": broken,
    }


def files_of(index: pd.DataFrame, paths) -> pd.DataFrame:
    return index[index["path"].isin({str(p) for p in paths})]


def test_every_image_found_with_split_and_label(tree):
    index = tree["index"]
    assert len(index) == len(tree["expected"]) == 13
    found = {row.path: (row.split, row.label) for row in index.itertuples()}
    assert found == tree["expected"]
    assert all(Path(p).is_absolute() for p in index["path"])
    assert index["label"].dtype == np.int64
    assert set(index["split"]) == {"train", "val", "test"}
    readable = index[index["readable"]]
    assert (readable["phash"].str.len() == 16).all() and (readable["sha1"].str.len() == 40).all()
    assert (readable["error"] == "").all()
    assert (readable["width"] > 0).all() and (readable["height"] > 0).all()


def test_ignored_files_are_listed(tree):
    ignored = tree["index"].attrs["ignored"]
    assert sorted(ignored) == sorted(str(p) for p in tree["junk"])
    report = find_duplicates(tree["index"])
    assert report.summary()["ignored_files"] == 4
    assert "Ignored files (not images in a split/class folder): 4" in report.to_markdown()


def test_truncated_file_is_an_unreadable_row(tree):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    row = files_of(tree["index"], {tree["broken"]}).iloc[0]
    assert not row["readable"] and row["phash"] is None and pd.isna(row["width"])
    assert "broken.jpg" in row["error"]
    assert row["sha1"] is not None  # its bytes are still hashed, so byte copies are still grouped
    report = find_duplicates(tree["index"])
    assert report.unreadable["relpath"].str.endswith("broken.jpg").tolist() == [True]
    assert "broken.jpg" in report.to_markdown().split("### Unreadable files")[1]


def test_planted_pairs_are_grouped_and_distinct_images_are_not(tree):
    index = tree["index"]
    for name, pair in tree["pairs"].items():
        assert files_of(index, pair)["near_group"].nunique() == 1, name
    planted = set().union(*tree["pairs"].values())
    others = index[~index["path"].isin({str(p) for p in planted})]
    assert others["near_group"].is_unique
    assert index["near_group"].nunique() == len(index) - 4


def test_report_names_pairs_and_conflicts(tree):
    report = find_duplicates(tree["index"])
    assert isinstance(report, DuplicateReport)
    as_sets = lambda table: [set(files) for files in table["files"]]  # noqa: E731
    rel = lambda pair: {p.relative_to(tree["root"]).as_posix() for p in pair}  # noqa: E731
    pairs = {name: rel(pair) for name, pair in tree["pairs"].items()}
    assert sorted(map(sorted, as_sets(report.exact))) == sorted(
        [sorted(pairs["exact_split"]), sorted(pairs["exact_label"])]
    )
    assert sorted(map(sorted, as_sets(report.near_groups))) == sorted(
        [sorted(pairs["near_jpeg"]), sorted(pairs["near_resized"])]
    )
    assert as_sets(report.cross_label) == [pairs["exact_label"]]
    assert sorted(map(sorted, as_sets(report.cross_split))) == sorted(
        [sorted(pairs["exact_split"]), sorted(pairs["near_jpeg"])]
    )
    summary = report.summary()
    json.dumps(summary)
    assert summary | {"per_split": None} == {
        "images": 13,
        "readable": 12,
        "unreadable": 1,
        "ignored_files": 4,
        "exact_groups": 2,
        "exact_redundant_files": 2,
        "near_groups": 2,
        "transformed_groups": 0,
        "duplicate_groups": 4,
        "files_in_duplicate_groups": 8,
        "redundant_copies": 4,
        "exact_copies": 2,
        "near_copies": 2,
        "transformed_copies": 0,
        "cross_split_groups": 2,
        "cross_label_groups": 1,
        "images_after_dedup": 7,
        "per_split": None,
    }
    assert all(type(value) is int for key, value in summary.items() if key != "per_split")
    assert summary["per_split"]["train"] == {"fractured": 2, "not_fractured": 4}
    text = report.to_markdown()
    for pair in pairs.values():
        assert any(all(f"`{p}`" in line for p in pair) for line in text.splitlines())
    assert "abnormal" in text and "| cross label groups | 1 |" in text
    assert "... and 1 more" in report.to_markdown(max_examples=1)


def test_deduplicate_keeps_one_per_group_and_drops_label_conflicts(tree):
    index = tree["index"]
    kept = deduplicate(index)
    assert kept["near_group"].is_unique and kept["readable"].all()
    kept_paths = set(kept["path"])
    a, a_copy = tree["pairs"]["exact_split"]
    assert str(a_copy) in kept_paths and str(a) not in kept_paths  # the test copy wins
    assert not kept_paths & {str(p) for p in tree["pairs"]["exact_label"]}
    c, c_q70 = tree["pairs"]["near_jpeg"]
    assert str(c_q70) in kept_paths and str(c) not in kept_paths  # val beats train
    assert len(kept) == 7
    loose = deduplicate(index, drop_label_conflicts=False)
    assert len(loose) == 8
    assert len(set(loose["path"]) & {str(p) for p in tree["pairs"]["exact_label"]}) == 1


def test_workers_give_the_same_index(tree):
    parallel = load_external_index(tree["root"], num_workers=2, progress=False)
    pd.testing.assert_frame_equal(parallel, tree["index"])


def test_wrong_root_raises_with_its_name(tmp_path):
    (tmp_path / "photos" / "cats").mkdir(parents=True)
    (tmp_path / "photos" / "cats" / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="photos"):
        load_external_index(tmp_path / "photos", progress=False)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_external_index(tmp_path / "nowhere", progress=False)


@pytest.mark.parametrize(
    "name, split", [("Train", "train"), ("valid", "val"), ("Validation", "val"), ("TEST", "test"), ("tests", None)]
)
def test_split_names(name, split):
    assert split_name(name) == split


@pytest.mark.parametrize(
    "name, label", [("Fractured", 1), ("not fractured", 0), ("other", None), ("Not_Fractured", 0), ("not-fractured", 0)]
)
def test_class_names(name, label):
    assert class_label(name) == label


def test_popcount_lookup_table_matches_numpy():
    values = np.random.default_rng(0).integers(0, 2**63, size=1000, dtype=np.uint64) * np.uint64(2)
    expected = [bin(int(v)).count("1") for v in values]
    assert _popcount64_lut(values).tolist() == expected


def test_grouping_10000_random_hashes_is_vectorized():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, np.iinfo(np.uint64).max, size=10_000, dtype=np.uint64, endpoint=True)
    hashes[1] = hashes[0] ^ np.uint64(0b111)  # 3 bits away: joined
    hashes[2] = hashes[1] ^ np.uint64(0b1111 << 20)  # 4 from [1], 7 from [0]: transitive
    hashes[3] = hashes[0] ^ np.uint64(0b1111111 << 40)  # 7 bits away: separate
    start = time.perf_counter()
    groups = group_hashes(hashes)
    elapsed = time.perf_counter() - start
    print(f"grouped 10,000 hashes in {elapsed:.3f} s")
    assert groups[0] == groups[1] == groups[2] and groups[3] != groups[0]
    assert len(np.unique(groups)) == len(hashes) - 2
    left, right = hamming_pairs(hashes[:4])
    assert list(zip(left.tolist(), right.tolist())) == [(0, 1), (1, 2)]


# ---------------------------------------------------------------- augmented copies


def _jpeg(image: np.ndarray, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _rotated(image: np.ndarray, degrees: float, how: str) -> np.ndarray:
    """A small rotation the ways augmentation tools do it: black corners on the same canvas, an
    expanded canvas, or cropped to the largest black-free rectangle and zoomed back to size."""
    picture_ = Image.fromarray(image)
    if how == "black":
        return np.asarray(picture_.rotate(degrees, Image.BILINEAR, fillcolor=0))
    if how == "expanded":
        return np.asarray(picture_.rotate(degrees, Image.BILINEAR, expand=True, fillcolor=0))
    width, height = picture_.size
    radians = np.radians(abs(degrees))
    zoom = max(
        (width * np.cos(radians) + height * np.sin(radians)) / width,
        (width * np.sin(radians) + height * np.cos(radians)) / height,
    )
    box = (
        width * (1 - 1 / zoom) / 2,
        height * (1 - 1 / zoom) / 2,
        width * (1 + 1 / zoom) / 2,
        height * (1 + 1 / zoom) / 2,
    )
    return np.asarray(picture_.rotate(degrees, Image.BILINEAR).resize((width, height), Image.BILINEAR, box=box))


# kind -> (expected duplicate_kind, how the copy is made from the source array, how it is saved)
AUGMENTATIONS = {
    "rotated_90": ("transformed", lambda a: np.rot90(a, 1), "jpg"),
    "rotated_180": ("transformed", lambda a: np.rot90(a, 2), "png"),
    "rotated_270": ("transformed", lambda a: np.rot90(a, 3), "jpg"),
    "mirrored_left_right": ("transformed", lambda a: a[:, ::-1], "jpg"),
    "mirrored_top_bottom": ("transformed", lambda a: a[::-1], "png"),
    "rotated_7_black_corners": ("transformed", lambda a: _rotated(a, 7, "black"), "jpg"),
    "rotated_minus_7_expanded": ("transformed", lambda a: _rotated(a, -7, "expanded"), "png"),
    "rotated_7_cropped": ("transformed", lambda a: _rotated(a, 7, "cropped"), "jpg"),
    "rotated_10_black_corners": ("transformed", lambda a: _rotated(a, -10, "black"), "jpg"),
    "resized_half": (
        "near",
        lambda a: np.asarray(Image.fromarray(a).resize((a.shape[1] // 2, a.shape[0] // 2))),
        "png",
    ),
    "jpeg_quality_40": ("near", lambda a: np.asarray(_jpeg(a, 40)), "png"),
    "png_to_jpeg": ("near", lambda a: a, "jpg"),
    "renamed": ("exact", None, "png"),
}
SPLIT_FOLDERS = {"train": "train", "val": "valid", "test": "test"}


@pytest.fixture(scope="module")
def augmented_tree(tmp_path_factory) -> dict:
    """Kaggle layout; one WRIST source per augmentation kind, its copy named like the Kaggle set's
    (``<stem>-rotated1``) in another split, plus distinct WRIST radiographs that must stay apart."""
    root = tmp_path_factory.mktemp("augmented")
    splits = list(SPLIT_FOLDERS)
    copies, distinct = {}, []
    for number, (kind, (_, make, suffix)) in enumerate(AUGMENTATIONS.items()):
        source_split, copy_split = splits[number % 3], splits[(number + 1) % 3]
        label = "fractured" if number % 2 else "not fractured"
        image = external_radiograph(number, "WRIST")
        source = root / SPLIT_FOLDERS[source_split] / label / f"{number}.png"
        source.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(source)
        copy = root / SPLIT_FOLDERS[copy_split] / label / f"{number}-rotated1.{suffix}"
        copy.parent.mkdir(parents=True, exist_ok=True)
        if make is None:
            shutil.copyfile(source, copy)
        else:
            Image.fromarray(np.ascontiguousarray(make(image))).save(
                copy, **({"quality": 92} if suffix == "jpg" else {})
            )
        copies[kind] = (source, copy)
    for number in range(100, 112):  # distinct radiographs of the same body part
        path = root / SPLIT_FOLDERS[splits[number % 3]] / "fractured" / f"image{number}.jpg"
        Image.fromarray(external_radiograph(number, "WRIST")).save(path, quality=92)
        distinct.append(path)
    index = load_external_index(root, num_workers=0, progress=False)
    return {"root": root, "index": index, "copies": copies, "distinct": distinct}


@pytest.mark.parametrize("kind", list(AUGMENTATIONS))
def test_each_augmented_copy_joins_its_source(augmented_tree, kind):
    source, copy = augmented_tree["copies"][kind]
    rows = files_of(augmented_tree["index"], [source, copy])
    assert len(rows) == 2 and rows["near_group"].nunique() == 1, kind
    assert set(rows["duplicate_kind"]) == {AUGMENTATIONS[kind][0]}, rows["duplicate_detail"].tolist()
    group = augmented_tree["index"]["near_group"] == rows["near_group"].iloc[0]
    assert group.sum() == 2  # nothing else was pulled in


def test_distinct_radiographs_of_one_body_part_stay_apart(augmented_tree):
    index = augmented_tree["index"]
    sources = [source for source, _ in augmented_tree["copies"].values()]
    rows = files_of(index, [*augmented_tree["distinct"], *sources])
    assert len(rows) == len(AUGMENTATIONS) + 12 and rows["near_group"].is_unique
    assert (files_of(index, augmented_tree["distinct"])["duplicate_kind"] == "").all()


def test_the_report_counts_groups_and_copies_by_kind(augmented_tree):
    report = find_duplicates(augmented_tree["index"])
    expected = pd.Series([kind for kind, _, _ in AUGMENTATIONS.values()]).value_counts()
    summary = report.summary()
    assert summary["duplicate_groups"] == len(AUGMENTATIONS)
    assert summary["redundant_copies"] == len(AUGMENTATIONS)
    for kind in ("exact", "near", "transformed"):
        assert summary[f"{kind}_copies"] == expected[kind], kind
    assert summary["transformed_groups"] == expected["transformed"]
    assert summary["near_groups"] == expected["near"] and summary["exact_groups"] == expected["exact"]
    assert summary["images_after_dedup"] == len(AUGMENTATIONS) + 12
    assert len(deduplicate(augmented_tree["index"])) == len(AUGMENTATIONS) + 12
    text = report.to_markdown()
    assert "| transformed copies | 9 |" in text and "Transformed-copy groups" in text
    for detail in ("quarter turn (", "half turn (180 degrees)", "mirror image (", "small rotation (", "re-encoded"):
        assert detail in text, detail


def test_phash_column_is_imagehash_phash(augmented_tree):
    for row in augmented_tree["index"].head(6).itertuples():
        assert row.phash == str(imagehash.phash(Image.fromarray(read_grayscale(row.path))))


def test_one_rotated_pair_found_in_many_random_hashes():
    """The pair search sees a plain hash within the cutoff of any variant of another image."""
    rng = np.random.default_rng(1)
    variants = rng.integers(0, np.iinfo(np.uint64).max, size=(500, 45), dtype=np.uint64, endpoint=True)
    variants[400, 17] = variants[3, 0] ^ np.uint64(0b101)  # image 400 turned by variant 17 ~ image 3
    left, right, which = transformed_pairs(variants, 6)
    assert list(zip(left.tolist(), right.tolist(), which.tolist())) == [(3, 400, 17)]
