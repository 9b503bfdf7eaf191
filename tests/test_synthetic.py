"""The synthetic MURA-v1.1 and external samples: layout, CSV format, planted quirks, determinism."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mura_utils.data.constants import BODY_PARTS
from mura_utils.data.external import find_duplicates, load_external_index
from mura_utils.data.imaging import read_grayscale
from mura_utils.synthetic import (
    EXTERNAL_DIRNAME,
    EXTERNAL_MANIFEST,
    SYNTHETIC_MARKER,
    make_external_sample,
    make_sample,
)

PARTS = "|".join(BODY_PARTS)
IMAGE_ROW = re.compile(
    rf"^MURA-v1\.1/(train|valid)/XR_({PARTS})/patient(\d{{5}})/"
    r"study(\d+)_(positive|negative)/image(\d+)\.png$"
)
STUDY_ROW = re.compile(
    rf"^MURA-v1\.1/(train|valid)/XR_({PARTS})/patient(\d{{5}})/"
    r"study(\d+)_(positive|negative)/,([01])$"
)
SPLITS = ("train", "valid")


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """The default-size sample, generated once for the module (a few seconds)."""
    return make_sample(tmp_path_factory.mktemp("mura"))


@pytest.fixture(scope="module")
def external(tmp_path_factory) -> Path:
    return make_external_sample(tmp_path_factory.mktemp("external"))


def read_rows(root: Path, name: str) -> list[str]:
    text = (root / name).read_text(encoding="utf-8")
    assert text.endswith("\n") and "\r" not in text
    return text.splitlines()


def matched_rows(root: Path, name: str, pattern: re.Pattern, split: str) -> list[re.Match]:
    rows = read_rows(root, name)
    matches = [pattern.match(row) for row in rows]
    assert all(matches), [row for row, m in zip(rows, matches) if not m][:3]
    assert all(m.group(1) == split for m in matches)
    return matches


def image_rows(root: Path, split: str) -> list[re.Match]:
    return matched_rows(root, f"{split}_image_paths.csv", IMAGE_ROW, split)


def study_rows(root: Path, split: str) -> list[re.Match]:
    return matched_rows(root, f"{split}_labeled_studies.csv", STUDY_ROW, split)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUROC with ties counted half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


# ---------------------------------------------------------------- MURA-v1.1 sample


def test_returns_release_root_with_the_four_csvs_and_marker(sample):
    assert sample.name == "MURA-v1.1"
    names = {p.name for p in sample.iterdir()}
    assert names == {
        "train",
        "valid",
        "train_image_paths.csv",
        "valid_image_paths.csv",
        "train_labeled_studies.csv",
        "valid_labeled_studies.csv",
        SYNTHETIC_MARKER,
    }
    assert {p.name for p in (sample / "train").iterdir()} == {f"XR_{p}" for p in BODY_PARTS}


def test_csv_rows_are_headerless_and_exact(sample):
    for split in SPLITS:
        first = read_rows(sample, f"{split}_image_paths.csv")[0]
        assert first.startswith(f"MURA-v1.1/{split}/XR_")  # no header line
        image_rows(sample, split)
        studies = study_rows(sample, split)
        for m in studies:  # label agrees with the folder
            assert m.group(6) == ("1" if m.group(5) == "positive" else "0")


def test_every_listed_image_exists_and_every_image_is_listed(sample):
    listed = set()
    for split in SPLITS:
        listed |= set(read_rows(sample, f"{split}_image_paths.csv"))
    on_disk = {p.relative_to(sample.parent).as_posix() for p in sample.rglob("*.png")}
    assert listed == on_disk
    assert not [
        p for p in sample.rglob("*") if p.is_file() and p.suffix not in (".png", ".csv") and p.name != SYNTHETIC_MARKER
    ]


def test_images_and_studies_match_one_to_many(sample):
    for split in SPLITS:
        per_study = defaultdict(list)
        for m in image_rows(sample, split):
            per_study[m.group(0).rsplit("/", 1)[0] + "/"].append(int(m.group(6)))
        studies = [m.group(0).rsplit(",", 1)[0] for m in study_rows(sample, split)]
        assert len(studies) == len(set(studies)) == len(per_study)
        assert set(studies) == set(per_study)
        for numbers in per_study.values():  # image1..imageN, N in 1..4
            assert numbers == list(range(1, len(numbers) + 1)) and 1 <= len(numbers) <= 4


def test_rows_grouped_by_part_then_patient_then_study(sample):
    for split in SPLITS:
        keys = [(m.group(2), int(m.group(3)), int(m.group(4))) for m in study_rows(sample, split)]
        parts = [k[0] for k in keys]
        blocks = [p for i, p in enumerate(parts) if i == 0 or parts[i - 1] != p]
        assert sorted(blocks) == sorted(BODY_PARTS)  # each part one contiguous block
        for part in BODY_PARTS:
            within = [k[1:] for k in keys if k[0] == part]
            assert within == sorted(within)


def test_patients_like_the_release(sample):
    patients = {split: defaultdict(set) for split in SPLITS}  # id -> body parts
    studies = {split: defaultdict(set) for split in SPLITS}  # (id, part) -> study numbers
    for split in SPLITS:
        for m in study_rows(sample, split):
            patients[split][int(m.group(3))].add(m.group(2))
            studies[split][(int(m.group(3)), m.group(2))].add(int(m.group(4)))
    assert not set(patients["train"]) & set(patients["valid"])
    assert min(patients["train"]) == 1
    assert min(patients["valid"]) == 11185 > max(patients["train"])
    assert any(len(parts) >= 2 for parts in patients["train"].values())
    assert any(len(numbers) >= 2 for numbers in studies["train"].values())
    for split in SPLITS:  # study1..studyK, no gaps
        assert all(numbers == set(range(1, len(numbers) + 1)) for numbers in studies[split].values())


def test_default_counts_and_abnormal_fraction(sample):
    n_train = len(read_rows(sample, "train_image_paths.csv"))
    n_valid = len(read_rows(sample, "valid_image_paths.csv"))
    assert 400 <= n_train <= 520
    assert 140 <= n_valid <= 220
    labels = [int(m.group(6)) for split in SPLITS for m in study_rows(sample, split)]
    assert 0.3 <= np.mean(labels) <= 0.5
    for split in SPLITS:  # both classes in every part
        seen = defaultdict(set)
        for m in study_rows(sample, split):
            seen[m.group(2)].add(m.group(6))
        assert all(seen[part] == {"0", "1"} for part in BODY_PARTS)


def test_image_modes_and_sizes_vary(sample):
    modes, shapes = set(), set()
    for path in sample.rglob("*.png"):
        with Image.open(path) as image:
            modes.add(image.mode)
            width, height = image.size
        assert 240 <= max(width, height) <= 520
        assert 0.55 <= width / height <= 1.45
        shapes.add("portrait" if height > width else "landscape")
    assert "L" in modes and len(modes) >= 2
    assert modes <= {"L", "RGB", "LA", "I;16"}
    assert shapes == {"portrait", "landscape"}


def test_mean_intensity_does_not_give_the_label_away(sample):
    labels, means = [], []
    for split in SPLITS:
        for m in image_rows(sample, split):
            labels.append(m.group(5) == "positive")
            means.append(read_grayscale(sample.parent / m.group(0)).mean())
    assert 0.35 <= auroc(np.array(labels, int), np.array(means)) <= 0.65


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = tree_bytes(make_sample(tmp_path / "a", patients_per_part=1, seed=3))
    again = tree_bytes(make_sample(tmp_path / "b", patients_per_part=1, seed=3))
    other = tree_bytes(make_sample(tmp_path / "c", patients_per_part=1, seed=4))
    assert first == again
    assert first != other


def test_small_sizes_and_valid_patients_argument(tmp_path):
    root = make_sample(tmp_path, patients_per_part=1, seed=0, valid_patients_per_part=2)
    train = {m.group(2) for m in study_rows(root, "train")}
    valid = defaultdict(set)
    for m in study_rows(root, "valid"):
        valid[m.group(2)].add(m.group(3))
    assert train == set(BODY_PARTS)
    assert all(len(valid[part]) == 2 for part in BODY_PARTS)


def test_existing_tree_is_kept_unless_overwrite(tmp_path):
    make_sample(tmp_path, patients_per_part=1)
    with pytest.raises(FileExistsError):
        make_sample(tmp_path, patients_per_part=1)
    assert make_sample(tmp_path, patients_per_part=1, seed=1, overwrite=True).is_dir()
    real = tmp_path / "real"
    (real / "MURA-v1.1").mkdir(parents=True)
    (real / "MURA-v1.1" / "train_image_paths.csv").write_text("x\n")
    with pytest.raises(FileExistsError):  # no marker: never deleted
        make_sample(real, overwrite=True)
    assert (real / "MURA-v1.1" / "train_image_paths.csv").read_text() == "x\n"


# ---------------------------------------------------------------- external sample


def external_images(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix in (".jpg", ".png") and not p.name.startswith(".")
    )


def test_external_layout(external):
    assert external.name == EXTERNAL_DIRNAME
    inner = external / EXTERNAL_DIRNAME
    for split in ("train", "val", "test"):
        assert {p.name for p in (inner / split).iterdir()} == {"fractured", "not fractured"}
        count = sum(1 for p in external_images(inner / split))
        assert 40 <= count <= 60, (split, count)
    images = external_images(external)
    assert {p.suffix for p in images} == {".jpg", ".png"}
    jpeg_modes = set()
    for path in images:
        if path.suffix == ".jpg" and path.stat().st_size > 2000:
            try:
                with Image.open(path) as image:
                    jpeg_modes.add(image.mode)
            except OSError:
                pass
    assert jpeg_modes == {"RGB", "L"}


def test_external_manifest_and_planted_quirks(external):
    manifest = json.loads((external.parent / EXTERNAL_MANIFEST).read_text())
    exact = manifest["exact_duplicate_groups"]
    assert len(exact) == 3
    for group in exact:
        data = {(external / p).read_bytes() for p in group}
        assert len(group) >= 2 and len(data) == 1
        assert len({p.split("/")[1] for p in group}) >= 2  # across splits
    cross = manifest["cross_label_duplicate_group"]
    assert cross in exact and len({p.split("/")[2] for p in cross}) == 2

    near = manifest["near_duplicate_groups"]
    assert len(near) == 3
    for group in near:
        first, second = (external / p for p in group["paths"])
        assert first.read_bytes() != second.read_bytes()
        assert first.parent.parent.name != second.parent.parent.name  # across splits
        a, b = read_grayscale(first), read_grayscale(second)
        if a.shape != b.shape:
            b = np.asarray(Image.fromarray(b).resize(a.shape[::-1], Image.BILINEAR))
        assert np.abs(a.astype(float) - b).mean() < 20

    (truncated,) = manifest["truncated"]
    with pytest.raises(OSError):
        with Image.open(external / truncated) as image:
            image.load()
    for path in external_images(external):  # everything else decodes
        if path.relative_to(external).as_posix() != truncated:
            read_grayscale(path)


def test_external_stray_files(external):
    manifest = json.loads((external.parent / EXTERNAL_MANIFEST).read_text())
    stray = {Path(p).name for p in manifest["stray_files"]}
    assert stray == {"README.txt", ".DS_Store", "._image1.png"}
    assert (external / "README.txt").is_file()
    for relative in manifest["stray_files"]:
        assert (external / relative).is_file()
    apple = next(external.rglob("._image1.png"))
    assert (apple.parent / "image1.png").is_file()
    with pytest.raises(OSError):
        Image.open(apple)


def test_external_is_deterministic(tmp_path, external):
    again = make_external_sample(tmp_path)
    assert tree_bytes(again) == tree_bytes(external)
    manifest = (tmp_path / EXTERNAL_MANIFEST).read_bytes()
    assert manifest == (external.parent / EXTERNAL_MANIFEST).read_bytes()
    other = make_external_sample(tmp_path / "other", seed=1)
    assert tree_bytes(other) != tree_bytes(external)


def test_external_augmented_copies_land_in_their_source_group(external):
    """Each planted copy (quarter turn, mirror, 7 degree rotations, resize, PNG->JPEG, renamed) is
    grouped with its source by the external audit, with the kind the manifest records, and the
    report counts every planted group and copy."""
    manifest = json.loads((external.parent / EXTERNAL_MANIFEST).read_text())
    copies = manifest["augmented_copies"]
    assert {copy["kind"] for copy in copies} == {
        "quarter_turn",
        "mirror",
        "rotated_7_degrees",
        "rotated_minus_7_degrees_expanded",
        "resized_60_percent",
        "png_to_jpeg",
        "renamed",
    }
    for copy in copies:
        assert "-rotated" in Path(copy["copy"]).stem and (external / copy["copy"]).is_file()
        assert (external / copy["source"]).read_bytes() != (external / copy["copy"]).read_bytes() or (
            copy["kind"] == "renamed"
        )
    index = load_external_index(external, num_workers=0, progress=False).set_index("relpath")
    for copy in copies:
        source, duplicate = index.loc[copy["source"]], index.loc[copy["copy"]]
        assert source["near_group"] == duplicate["near_group"], copy
        assert duplicate["duplicate_kind"] == copy["duplicate_kind"], (copy, duplicate["duplicate_detail"])
        assert (index["near_group"] == source["near_group"]).sum() == 2, copy
    summary = find_duplicates(index.reset_index()).summary()
    planted = {"exact": len(manifest["exact_duplicate_groups"]), "near": len(manifest["near_duplicate_groups"])}
    planted["transformed"] = 0
    for copy in copies:
        planted[copy["duplicate_kind"]] += 1
    assert summary["duplicate_groups"] == sum(planted.values())  # planted groups, and no false merge
    assert summary["exact_groups"] == planted["exact"] and summary["transformed_groups"] == planted["transformed"]
    for kind, count in planted.items():
        assert summary[f"{kind}_copies"] == count, kind
