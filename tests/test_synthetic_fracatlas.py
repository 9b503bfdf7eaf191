"""The synthetic FracAtlas-shaped and CSV-manifest samples: layout, flags, boxes around the planted
breaks (checked against the renderer's own pixels and against the written files), determinism."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_synthetic import auroc, tree_bytes  # the MURA sample tests' helpers

from mura_utils.data.constants import BODY_PARTS
from mura_utils.data.dataset import patient_split
from mura_utils.synthetic import (
    FRACATLAS_BOXES,
    MANIFEST_NAME,
    SYNTHETIC_MARKER,
    make_fracatlas_sample,
    make_manifest_sample,
)
from mura_utils.synthetic.fracatlas import FRACATLAS_COLUMNS, _draw_film, _plan
from mura_utils.synthetic.render import _fracture_gap, render_radiograph

N_IMAGES, SEED = 60, 0
REGIONS = ("hand", "leg", "hip", "shoulder")


@pytest.fixture(scope="module")
def fracatlas(tmp_path_factory) -> Path:
    return make_fracatlas_sample(tmp_path_factory.mktemp("fracatlas") / "FracAtlas", n_images=N_IMAGES, seed=SEED)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return make_manifest_sample(tmp_path_factory.mktemp("manifest") / "collection")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_boxes(root: Path) -> dict:
    return json.loads((root / FRACATLAS_BOXES).read_text(encoding="utf-8"))


def boxes_in_file_pixels(root: Path) -> dict[str, list[np.ndarray]]:
    """Each fractured file's boxes as (x0, y0, x1, y1) in the file's own pixels (scaled from the listed size)."""
    coco = read_boxes(root)
    sizes = {image["id"]: image for image in coco["images"]}
    boxes = defaultdict(list)
    for annotation in coco["annotations"]:
        image = sizes[annotation["image_id"]]
        width, height = Image.open(root / "images" / "Fractured" / image["file_name"]).size
        scale = np.array([width / image["width"], height / image["height"]] * 2)
        x, y, w, h = annotation["bbox"]
        boxes[image["file_name"]].append(np.array([x, y, x + w, y + h]) * scale)
    return boxes


# --------------------------------------------------------------------------------------------
# FracAtlas layout and dataset.csv.
# --------------------------------------------------------------------------------------------


def test_fracatlas_official_layout(fracatlas):
    assert (fracatlas / "dataset.csv").is_file() and (fracatlas / FRACATLAS_BOXES).is_file()
    assert "Synthetic" in (fracatlas / SYNTHETIC_MARKER).read_text()
    header = (fracatlas / "dataset.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.split(",") == list(FRACATLAS_COLUMNS)
    rows = read_csv(fracatlas / "dataset.csv")
    assert len(rows) == N_IMAGES
    names = [row["image_id"] for row in rows]
    assert names == sorted(names) and len(set(names)) == N_IMAGES
    assert all(name.startswith("IMG") and name.endswith(".jpg") and len(name) == 14 for name in names)
    on_disk = {p.relative_to(fracatlas / "images").as_posix() for p in (fracatlas / "images").rglob("*") if p.is_file()}
    listed = {f"{'Fractured' if row['fractured'] == '1' else 'Non_fractured'}/{row['image_id']}" for row in rows}
    assert on_disk == listed
    assert all(value in "01" for row in rows for key, value in row.items() if key not in ("image_id", "fracture_count"))


def test_fracatlas_flags_like_the_release(fracatlas):
    rows = read_csv(fracatlas / "dataset.csv")
    fractured = [row for row in rows if row["fractured"] == "1"]
    assert len(fractured) == round(0.2 * N_IMAGES)
    for row in rows:
        regions = sum(int(row[region]) for region in REGIONS)
        assert regions >= 1
        assert row["mixed"] == str(int(regions > 1))
        views = sum(int(row[view]) for view in ("frontal", "lateral", "oblique"))
        assert views == (2 if row["multiscan"] == "1" else 1)
        assert (int(row["fracture_count"]) >= 1) == (row["fractured"] == "1")
    for region in REGIONS:
        assert any(row[region] == "1" and row["mixed"] == "0" for row in rows), region
    for flag in ("mixed", "multiscan", "hardware"):
        assert any(row[flag] == "1" for row in fractured), flag
        assert any(row[flag] == "1" for row in rows if row["fractured"] == "0"), flag


def test_fracatlas_jpegs_rgb_and_grayscale(fracatlas):
    modes, formats = set(), set()
    for path in (fracatlas / "images").rglob("*.jpg"):
        with Image.open(path) as image:
            modes.add(image.mode)
            formats.add(image.format)
    assert formats == {"JPEG"} and modes == {"L", "RGB"}


def test_mean_intensity_does_not_give_the_label_away(fracatlas):
    rows = read_csv(fracatlas / "dataset.csv")
    labels = np.array([int(row["fractured"]) for row in rows])
    folder = {0: "Non_fractured", 1: "Fractured"}
    means = np.array(
        [
            np.asarray(Image.open(fracatlas / "images" / folder[y] / r["image_id"]).convert("L")).mean()
            for r, y in zip(rows, labels)
        ]
    )
    assert 0.2 <= auroc(labels, means) <= 0.8


# --------------------------------------------------------------------------------------------
# COCO boxes.
# --------------------------------------------------------------------------------------------


def test_coco_json_lists_each_fractured_image_with_its_breaks(fracatlas):
    coco = read_boxes(fracatlas)
    assert set(coco) == {"info", "images", "annotations", "categories"}
    assert coco["categories"] == [{"id": 0, "name": "fractured"}]
    rows = {row["image_id"]: row for row in read_csv(fracatlas / "dataset.csv")}
    names = [image["file_name"] for image in coco["images"]]
    assert names == sorted(name for name, row in rows.items() if row["fractured"] == "1")
    assert [image["id"] for image in coco["images"]] == list(range(1, len(names) + 1))
    assert [a["id"] for a in coco["annotations"]] == list(range(len(coco["annotations"])))
    per_image = defaultdict(int)
    listed = {image["id"]: image for image in coco["images"]}
    for annotation in coco["annotations"]:
        image = listed[annotation["image_id"]]
        per_image[image["file_name"]] += 1
        assert annotation["category_id"] == 0 and annotation["iscrowd"] == 0
        (polygon,) = annotation["segmentation"]
        points = np.array(polygon).reshape(-1, 2)
        assert len(points) >= 3
        x, y, w, h = annotation["bbox"]
        assert np.allclose([x, y, x + w, y + h], [*points.min(axis=0), *points.max(axis=0)], atol=0.01)
        assert 0 <= x and 0 <= y and x + w <= image["width"] and y + h <= image["height"]
        xs, ys = points[:, 0], points[:, 1]
        area = abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2
        assert annotation["area"] == pytest.approx(area, rel=1e-3) and 0 < area < w * h
    assert {name: int(rows[name]["fracture_count"]) for name in names} == dict(per_image)


def test_listed_sizes_are_the_official_ones_and_most_files_are_reduced(fracatlas):
    coco = read_boxes(fracatlas)
    same = scaled = 0
    for image in coco["images"]:
        width, height = Image.open(fracatlas / "images" / "Fractured" / image["file_name"]).size
        if (width, height) == (image["width"], image["height"]):
            same += 1
        else:
            scaled += 1
            assert max(width, height) == 256 and max(image["width"], image["height"]) > 256
            assert width / height == pytest.approx(image["width"] / image["height"], rel=0.02)
    assert same >= 1 and scaled >= 1 and scaled > same


def test_boxes_enclose_the_renderers_own_fracture_gaps(fracatlas):
    """Re-render each planted gap alone through the real renderer (no noise or tissue): every gap pixel
    lies in a box of its film (scaled from the listed size), and every box holds gap pixels."""
    boxes = boxes_in_file_pixels(fracatlas)
    rows = [row for row in _plan(N_IMAGES, SEED, 256) if row.fractured]
    assert sorted(boxes) == sorted(row.name for row in rows)
    for row in rows:
        image, panels, _ = _draw_film(SEED, row)
        with Image.open(fracatlas / row.relative) as written:
            assert written.size == row.size == (image.shape[1], image.shape[0])
            assert np.abs(np.asarray(written.convert("L"), float) - image).mean() < 4  # JPEG of this very image
        film_boxes = boxes[row.name]
        hits = np.zeros(len(film_boxes), dtype=int)
        for panel in panels:
            clean = replace(
                panel.view, noise=0.0, fine_noise=0.0, ramp=0.0, gamma=1.0, contrast=1.0, offset=0.0,
                collimation=None, marker=None, invert=False,
            )  # fmt: skip
            for bone in (bone for bone in panel.anatomy.bones if bone.fracture is not None):
                gap = render_radiograph(([], [(255, _fracture_gap(bone))], []), clean, np.random.default_rng(0))
                ys, xs = np.nonzero(gap > 128)
                assert len(xs) > 0, row.name
                xs = xs + panel.x0
                inside = np.zeros((len(film_boxes), len(xs)), dtype=bool)
                for k, (x0, y0, x1, y1) in enumerate(film_boxes):
                    inside[k] = (xs >= x0 - 1) & (xs <= x1 + 1) & (ys >= y0 - 1) & (ys <= y1 + 1)
                assert inside.any(axis=0).all(), (
                    f"{row.name}: {(~inside.any(axis=0)).sum()} gap pixels outside its boxes"
                )
                hits += inside.any(axis=1)
        assert (hits > 0).all(), f"{row.name}: a box with no planted gap in it"


def test_scaled_boxes_sit_on_bone_detail_in_the_files(fracatlas):
    """From the files alone: edge energy inside each (scaled) box is well above the film's average, and
    the box is a small part of the film."""
    ratios = []
    for name, film_boxes in boxes_in_file_pixels(fracatlas).items():
        pixels = np.asarray(Image.open(fracatlas / "images" / "Fractured" / name).convert("L"), dtype=float)
        gy, gx = np.gradient(pixels)
        energy = np.hypot(gx, gy)
        for x0, y0, x1, y1 in film_boxes:
            inside = energy[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))]
            assert inside.size < 0.25 * energy.size, name
            ratios.append(inside.mean() / energy.mean())
    ratios = np.array(ratios)
    assert np.median(ratios) > 2.0 and (ratios > 1.2).mean() >= 0.9, np.round(ratios, 2)


# --------------------------------------------------------------------------------------------
# Determinism and refusal to overwrite.
# --------------------------------------------------------------------------------------------


def test_fracatlas_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = tree_bytes(make_fracatlas_sample(tmp_path / "a", n_images=12, seed=5))
    assert first == tree_bytes(make_fracatlas_sample(tmp_path / "b", n_images=12, seed=5))
    other = tree_bytes(make_fracatlas_sample(tmp_path / "c", n_images=12, seed=6))
    assert first["dataset.csv"] != other["dataset.csv"]


def test_fracatlas_existing_folder_is_kept_unless_a_generated_sample(tmp_path):
    real = tmp_path / "real"
    (real / "images").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="overwrite"):
        make_fracatlas_sample(real, n_images=4)
    with pytest.raises(FileExistsError, match=SYNTHETIC_MARKER):
        make_fracatlas_sample(real, n_images=4, overwrite=True)
    sample = make_fracatlas_sample(tmp_path / "sample", n_images=4)
    make_fracatlas_sample(sample, n_images=6, overwrite=True)
    assert len(read_csv(sample / "dataset.csv")) == 6
    with pytest.raises(ValueError, match="n_images"):
        make_fracatlas_sample(tmp_path / "tiny", n_images=1)


# --------------------------------------------------------------------------------------------
# CSV manifest sample.
# --------------------------------------------------------------------------------------------


def test_manifest_columns_and_files(manifest):
    assert manifest.name == MANIFEST_NAME and (manifest.parent / SYNTHETIC_MARKER).is_file()
    header = manifest.read_text(encoding="utf-8").splitlines()[0]
    assert header == "path,label,body_part,patient,study,split"
    rows = read_csv(manifest)
    paths = [row["path"] for row in rows]
    assert len(set(paths)) == len(rows) >= 20
    on_disk = {
        p.relative_to(manifest.parent).as_posix() for p in manifest.parent.rglob("*") if p.suffix in (".png", ".jpg")
    }
    assert on_disk == set(paths)
    assert len({Path(path).parts[0] for path in paths}) >= 2  # several folders
    kinds = set()
    for path in paths:
        with Image.open(manifest.parent / path) as image:
            kinds.add((image.format, image.mode))
    assert {("PNG", "L"), ("PNG", "RGB"), ("JPEG", "L")} <= kinds
    assert {row["label"] for row in rows} == {"0", "1"}
    assert {row["body_part"] for row in rows} <= set(BODY_PARTS)
    metadata = json.loads((manifest.parent / "manifest.json").read_text())
    assert set(metadata) <= {"title", "positive_label", "negative_label", "citation", "licence"}


def test_manifest_patients_studies_and_splits(manifest):
    rows = read_csv(manifest)
    assert {row["split"] for row in rows} == {"train", "test"}
    split_of, studies_of, images_of = defaultdict(set), defaultdict(set), defaultdict(list)
    for row in rows:
        split_of[row["patient"]].add(row["split"])
        studies_of[row["patient"]].add(row["study"])
        images_of[row["study"]].append(row)
    assert all(len(splits) == 1 for splits in split_of.values())  # no patient on both sides
    for study_rows in images_of.values():  # a study has one label, body part and patient
        assert len({(r["label"], r["body_part"], r["patient"]) for r in study_rows}) == 1
    assert sum(len(study_rows) > 1 for study_rows in images_of.values()) >= 3
    assert any(len(studies) > 1 for studies in studies_of.values())
    for split in ("train", "test"):
        assert {row["label"] for row in rows if row["split"] == split} == {"0", "1"}


def test_manifest_is_deterministic(tmp_path, manifest):
    again = make_manifest_sample(tmp_path / "again")
    assert tree_bytes(again.parent) == tree_bytes(manifest.parent)
    other = make_manifest_sample(tmp_path / "other", seed=1)
    assert other.read_bytes() != manifest.read_bytes()
    with pytest.raises(ValueError, match="n_patients"):
        make_manifest_sample(tmp_path / "few", n_patients=3)


def test_cli_writes_both_samples(tmp_path, capsys):
    from mura_utils.cli import main

    assert main(["sample-fracatlas", str(tmp_path / "fa"), "--images", "8", "--seed", "3"]) == 0
    assert len(read_csv(tmp_path / "fa" / "dataset.csv")) == 8
    assert main(["sample-manifest", str(tmp_path / "mf"), "--patients", "6"]) == 0
    assert {row["patient"] for row in read_csv(tmp_path / "mf" / MANIFEST_NAME)} == {f"P{p:03d}" for p in range(1, 7)}
    assert "not real radiographs" in capsys.readouterr().out
    assert main(["sample-fracatlas", str(tmp_path / "bad"), "--images", "1"]) == 2


# --------------------------------------------------------------------------------------------
# The package's own loader reads both samples.
# --------------------------------------------------------------------------------------------


def test_load_index_reads_the_fracatlas_sample(fracatlas):
    from mura_utils.data.registry import load_index
    from mura_utils.training.experiment import is_synthetic

    rows = read_csv(fracatlas / "dataset.csv")
    table = load_index(fracatlas)
    assert table.attrs["dataset"].name == "fracatlas" and is_synthetic(fracatlas)
    assert len(table) == N_IMAGES and table["label"].sum() == round(0.2 * N_IMAGES)
    assert set(table["split"]) == {"train", "test"}
    assert table.groupby("split")["label"].nunique().to_dict() == {"test": 2, "train": 2}
    mixed = sum(row["mixed"] == "1" for row in rows)
    assert (table["body_part"] == "MIXED").sum() == mixed > 0
    assert set(table["body_part"]) == {"HAND", "HIP", "LEG", "MIXED", "SHOULDER"}
    assert table["fracture_count"].tolist() == [int(row["fracture_count"]) for row in rows]
    assert all(Path(path).is_file() for path in table["path"])
    train, validation = patient_split(table)  # training's validation split works on the default sample
    assert len(train) + len(validation) == (table["split"] == "train").sum() and len(validation) > 0


def test_load_index_reads_the_manifest_sample(manifest):
    from mura_utils.data.registry import load_index
    from mura_utils.training.experiment import is_synthetic

    rows = read_csv(manifest)
    table = load_index(manifest)
    info = table.attrs["dataset"]
    assert info.name == "manifest" and info.has_patients and is_synthetic(manifest)
    assert (info.positive_label, info.negative_label) == ("abnormal", "normal")
    assert len(table) == len(rows)
    assert table["split"].tolist() == [row["split"] for row in rows]
    assert table["label"].tolist() == [int(row["label"]) for row in rows]
    assert table["study"].nunique() == len({row["study"] for row in rows})
    assert table["patient"].nunique() == len({row["patient"] for row in rows})
    assert set(info.body_parts) == {row["body_part"] for row in rows}
    train, validation = patient_split(table)  # training's validation split works on the default sample
    assert len(train) + len(validation) == (table["split"] == "train").sum() and len(validation) > 0
