"""The MURA index: exact rows from the official CSVs, real-release quirks, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mura_utils.data.dataset import RadiographDataset, class_weights, patient_split
from mura_utils.data.mura import MuraIndexError, load_mura_index
from mura_utils.models.registry import get_spec

# (split, part, patient, study, label, number of images)
STUDIES = [
    ("train", "WRIST", "patient00001", "study1", 1, 2),
    ("train", "HAND", "patient00001", "study1", 0, 1),  # same patient, other body part, own study1
    ("train", "HAND", "patient00002", "study1", 0, 3),
    ("train", "HAND", "patient00002", "study2", 1, 1),  # second study of one patient
    ("train", "SHOULDER", "patient00003", "study1", 1, 2),
    ("valid", "ELBOW", "patient11185", "study1", 1, 2),
    ("valid", "FINGER", "patient11186", "study1", 0, 1),
]


def write_tree(base: Path, studies=STUDIES, modes=("L", "RGB", "LA", "I;16")) -> Path:
    """A tiny MURA-v1.1 tree in the release's exact CSV format, with its quirks."""
    root = base / "MURA-v1.1"
    image_rows = {"train": [], "valid": []}
    study_rows = {"train": [], "valid": []}
    count = 0
    for split, part, patient, study, label, n_images in studies:
        folder = f"{split}/XR_{part}/{patient}/{study}_{'positive' if label else 'negative'}"
        (root / folder).mkdir(parents=True, exist_ok=True)
        study_rows[split].append(f"MURA-v1.1/{folder}/,{label}")
        for number in range(1, n_images + 1):
            mode = modes[count % len(modes)]
            count += 1
            array = (np.arange(40 * 30).reshape(40, 30) % 251).astype(np.uint16 if mode == "I;16" else np.uint8)
            image = Image.fromarray(array * 200 if mode == "I;16" else array)
            image = image if mode in ("L", "I;16") else image.convert(mode)
            image.save(root / folder / f"image{number}.png")
            image_rows[split].append(f"MURA-v1.1/{folder}/image{number}.png")
        (root / folder / "._image1.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # macOS zip debris
    (root / "train" / ".DS_Store").write_bytes(b"junk")
    for split in ("train", "valid"):
        (root / f"{split}_image_paths.csv").write_text("\n".join(image_rows[split]) + "\n")
        (root / f"{split}_labeled_studies.csv").write_text("\n".join(study_rows[split]) + "\n")
    return root


@pytest.fixture
def tree(tmp_path) -> Path:
    return write_tree(tmp_path)


def test_index_rows_are_exact(tree):
    index = load_mura_index(tree.parent)
    assert list(index.columns) == ["path", "split", "body_part", "patient", "study", "label"]
    assert len(index) == sum(study[-1] for study in STUDIES)
    assert not index["path"].str.contains("/\\._").any()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in index["path"])
    studies = index.groupby("study").agg(label=("label", "first"), n=("path", "size"), part=("body_part", "first"))
    for split, part, patient, study, label, n_images in STUDIES:
        key = f"{split}/XR_{part}/{patient}/{study}"
        assert studies.loc[key, "label"] == label and studies.loc[key, "n"] == n_images
        assert studies.loc[key, "part"] == part
    assert index["study"].nunique() == len(STUDIES)  # patient00001's two study1 stay apart
    assert set(index["split"]) == {"train", "valid"}
    assert index["label"].dtype.kind == "i"


def test_root_may_be_mura_folder_or_parent(tree):
    assert load_mura_index(tree).equals(load_mura_index(tree.parent))


def test_wrong_root_names_the_folder(tmp_path):
    with pytest.raises(MuraIndexError, match=str(tmp_path)):
        load_mura_index(tmp_path)


def test_missing_csv_names_it(tree):
    (tree / "valid_labeled_studies.csv").unlink()
    with pytest.raises(MuraIndexError, match="valid_labeled_studies.csv"):
        load_mura_index(tree)


def test_flipped_label_names_csv_and_study(tree):
    csv = tree / "train_labeled_studies.csv"
    csv.write_text(csv.read_text().replace("patient00003/study1_positive/,1", "patient00003/study1_positive/,0"))
    with pytest.raises(MuraIndexError, match="train_labeled_studies.csv.*patient00003/study1_positive"):
        load_mura_index(tree)


def test_absent_image_is_named(tree):
    (tree / "train/XR_HAND/patient00002/study1_negative/image3.png").unlink()
    with pytest.raises(MuraIndexError, match="patient00002/study1_negative/image3.png"):
        load_mura_index(tree)


def test_image_without_labeled_study_is_named(tree):
    csv = tree / "train_labeled_studies.csv"
    csv.write_text("\n".join(line for line in csv.read_text().splitlines() if "patient00003" not in line) + "\n")
    with pytest.raises(MuraIndexError, match="patient00003/study1_positive/image1.png.*no study"):
        load_mura_index(tree)


def test_os_debris_listed_in_the_csv_is_skipped_and_reported(tree):
    """macOS zips leave ``._image1.png`` next to each image, and a CSV rebuilt from a directory listing
    names them: they are skipped (not rows, not errors) and listed in attrs["ignored_csv_rows"]."""
    study = "train/XR_WRIST/patient00001/study1_positive"
    (tree / study / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tree / "valid/XR_ELBOW/patient11185/study1_positive/Thumbs.db").write_bytes(b"junk")
    debris = {
        "train": [f"MURA-v1.1/{study}/._image1.png", f"MURA-v1.1/{study}/.DS_Store"],
        "valid": [
            "MURA-v1.1\\valid\\XR_ELBOW\\patient11185\\study1_positive\\._image1.png",  # Windows separators
            "MURA-v1.1/valid/XR_ELBOW/patient11185/study1_positive/Thumbs.db",
        ],
    }
    for split, rows in debris.items():
        csv = tree / f"{split}_image_paths.csv"
        lines = csv.read_text().splitlines()
        csv.write_text("\n".join([lines[0], *rows, *lines[1:]]) + "\n")  # listed among the real rows
        for row in rows:
            assert (tree.parent / row.replace("\\", "/")).is_file()  # on disk, so only the name filter stops it
    index = load_mura_index(tree)
    assert len(index) == sum(study[-1] for study in STUDIES)
    names = index["path"].map(lambda path: Path(path).name)
    assert not names.str.startswith(".").any() and not (names == "Thumbs.db").any()
    assert index.attrs["ignored_csv_rows"] == [
        *(f"train_image_paths.csv: {row}" for row in debris["train"]),
        *(f"valid_image_paths.csv: {row}" for row in debris["valid"]),
    ]
    assert load_mura_index(tree, splits=("valid",)).attrs["ignored_csv_rows"] == [
        f"valid_image_paths.csv: {row}" for row in debris["valid"]
    ]


def test_clean_csvs_ignore_nothing(tree):
    assert load_mura_index(tree).attrs["ignored_csv_rows"] == []


def test_windows_line_endings_and_blank_lines_are_fine(tree):
    for csv in tree.glob("*.csv"):
        csv.write_bytes(csv.read_bytes().replace(b"\n", b"\r\n") + b"\r\n")
    assert len(load_mura_index(tree)) == sum(study[-1] for study in STUDIES)


def test_indexing_40k_rows_never_opens_images(tmp_path):
    """40k empty files index fine: nothing is decoded (timing: benchmarks/index_speed.py)."""
    root = tmp_path / "MURA-v1.1"
    image_rows, study_rows = [], []
    for patient in range(10000):
        folder = f"train/XR_WRIST/patient{patient:05d}/study1_negative"
        (root / folder).mkdir(parents=True)
        study_rows.append(f"MURA-v1.1/{folder}/,0")
        for number in range(1, 5):
            (root / folder / f"image{number}.png").touch()
            image_rows.append(f"MURA-v1.1/{folder}/image{number}.png")
    (root / "train_image_paths.csv").write_text("\n".join(image_rows))
    (root / "train_labeled_studies.csv").write_text("\n".join(study_rows))
    index = load_mura_index(root, splits=("train",))
    assert len(index) == 40000
    assert index["patient"].nunique() == 10000


def test_patient_split_never_shares_a_patient():
    rows = []
    for patient in range(60):
        for part in ("WRIST", "HAND") if patient % 3 == 0 else ("ELBOW",):
            for image in range(2):
                rows.append(
                    {
                        "path": f"/x/{patient}/{part}/{image}.png",
                        "split": "train",
                        "body_part": part,
                        "patient": f"patient{patient:05d}",
                        "study": f"train/XR_{part}/p{patient}/study1",
                        "label": patient % 2,
                    }
                )
    index = pd.DataFrame(rows)
    train, val = patient_split(index, val_fraction=0.2, seed=3)
    assert set(train["patient"]).isdisjoint(val["patient"])
    assert len(train) + len(val) == len(index)
    assert 0.1 < len(val) / len(index) < 0.3
    assert val["label"].nunique() == 2
    again_train, again_val = patient_split(index, val_fraction=0.2, seed=3)
    assert val.equals(again_val)


def test_class_weights_follow_the_mura_paper():
    index = pd.DataFrame({"body_part": ["WRIST"] * 4 + ["HAND"] * 2, "label": [1, 0, 0, 0, 1, 0]})
    weights = class_weights(index)
    assert weights.loc["WRIST", "w_abnormal"] == pytest.approx(3 / 4)  # N/(A+N)
    assert weights.loc["WRIST", "w_normal"] == pytest.approx(1 / 4)  # A/(A+N)
    assert weights.loc["HAND", "w_abnormal"] == pytest.approx(0.5)


def test_dataset_reads_every_mode_as_grayscale(tree):
    index = load_mura_index(tree)
    dataset = RadiographDataset(index, img_size=32, train=True, model="custom_cnn")
    item = dataset[0]
    assert item["image"].shape == (1, 32, 32) and item["image"].dtype == torch.float32
    with pytest.raises(ValueError, match="model="):  # no silent default normalization
        RadiographDataset(index, img_size=32)
    assert RadiographDataset(index, img_size=32, model="resnet50").mean == get_spec("resnet50").mean
    raw = RadiographDataset(index, img_size=32, raw=True)
    for position in range(len(raw)):
        assert raw[position]["image"].dtype == torch.uint8
        assert raw[position]["image"].max() > 0
    assert int(raw[0]["label"]) == index["label"].iloc[0]


def test_corrupt_image_error_names_path(tree):
    index = load_mura_index(tree)
    Path(index["path"].iloc[0]).write_bytes(b"not a png")
    with pytest.raises(ValueError, match=Path(index["path"].iloc[0]).name):
        RadiographDataset(index, img_size=32, raw=True)[0]
