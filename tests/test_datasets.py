"""Datasets beyond MURA: FracAtlas's official layout and CSV manifests become the same index table,
with a recorded DatasetInfo that checkpoints, evaluation, predict and ONNX export carry along."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mura_utils.data.base import DatasetLayoutError, held_out_split
from mura_utils.data.registry import dataset_info, detect_dataset, load_index

REGION_COLUMNS = ["hand", "leg", "hip", "shoulder", "mixed"]


def write_fracatlas(root, n: int = 40, seed: int = 0):
    """A tiny FracAtlas-layout tree: dataset.csv, images/Fractured|Non_fractured, RGB and gray JPEGs."""
    rng = np.random.default_rng(seed)
    rows = []
    for number in range(n):
        name = f"IMG{number:07d}.jpg"
        fractured = int(number % 4 == 0)
        region = ["hand", "leg", "hip", "shoulder"][number % 4 if number % 5 else 1]
        flags = dict.fromkeys(REGION_COLUMNS, 0) | {region: 1}
        if number % 7 == 0:  # two regions: MIXED
            flags |= {"hand": 1, "leg": 1, "mixed": 1}
        folder = root / "images" / ("Fractured" if fractured else "Non_fractured")
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 255, (6, 5), dtype=np.uint8))
        image = coarse.resize((60, 80), Image.BICUBIC)  # smooth, distinct images (like radiographs, unlike noise)
        (image.convert("RGB") if number % 2 else image).save(folder / name, quality=90)
        rows.append({"image_id": name, **flags, "hardware": 0, "multiscan": 0, "fractured": fractured,
                     "fracture_count": fractured, "frontal": 1, "lateral": 0, "oblique": 0})  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "dataset.csv", index=False)
    return root


def write_manifest(root, split: bool = True):
    """A manifest of 3 patients x 2 studies x 2 images (PNG), paths relative to the CSV."""
    rows = []
    for patient in range(6):
        for study in range(2):
            for image in range(2):
                relative = f"p{patient}/s{study}/{image}.png"
                (root / relative).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((24, 20), 40 * patient, dtype=np.uint8)).save(root / relative)
                rows.append(
                    {
                        "path": relative,
                        "label": (patient + study) % 2,
                        "body_part": "wrist" if patient % 2 else "ANKLE",
                        "patient": f"p{patient}",
                        "study": f"p{patient}_s{study}",
                        **({"split": "test" if patient >= 4 else "train"} if split else {}),
                    }
                )
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def test_fracatlas_layout_becomes_the_index_table(tmp_path):
    root = write_fracatlas(tmp_path / "FracAtlas")
    index = load_index(root)
    info = index.attrs["dataset"]
    assert detect_dataset(root) == "fracatlas" and info.name == "fracatlas"
    assert info.positive_label == "fractured" and info.test_split == "test" and not info.has_patients
    assert len(index) == 40 and list(index.columns[:6]) == ["path", "split", "body_part", "patient", "study", "label"]
    assert (index["patient"] == index["study"]).all() and index["patient"].is_unique  # each image its own
    assert set(index["body_part"]) <= set(info.body_parts)
    raw = pd.read_csv(root / "dataset.csv")
    several = raw[REGION_COLUMNS[:4]].sum(axis=1).gt(1) | raw["mixed"].eq(1)
    assert (index.loc[several.to_numpy(), "body_part"] == "MIXED").all()
    assert (index.loc[~several.to_numpy(), "body_part"] != "MIXED").all()
    assert index["label"].tolist() == raw["fractured"].tolist()
    assert set(index["split"]) == {"train", "test"}


def test_the_test_split_is_fixed_stratified_and_independent_of_row_order(tmp_path):
    table = pd.DataFrame(
        {
            "patient": [f"img{i}" for i in range(1000)],
            "body_part": np.where(np.arange(1000) % 5 == 0, "HIP", "LEG"),
            "label": (np.arange(1000) % 3 == 0).astype(int),
        }
    )
    split = held_out_split(table, 0.2, "salt")
    assert (split == "test").mean() == pytest.approx(0.2, abs=0.005)
    for _, stratum in table.assign(split=split).groupby(["body_part", "label"]):
        assert (stratum["split"] == "test").mean() == pytest.approx(0.2, abs=0.01)
    shuffled = table.sample(frac=1, random_state=3)
    again = held_out_split(shuffled, 0.2, "salt")
    assert again.loc[table.index].tolist() == split.tolist()
    assert held_out_split(table, 0.2, "other salt").tolist() != split.tolist()


def test_a_patient_is_never_on_both_sides_of_a_drawn_split():
    table = pd.DataFrame(
        {"patient": np.repeat([f"p{i}" for i in range(50)], 3), "body_part": "HAND", "label": np.tile([0, 1, 0], 50)}
    )
    split = held_out_split(table, 0.2)
    assert table.assign(split=split).groupby("patient")["split"].nunique().max() == 1


def test_fracatlas_errors_name_the_file(tmp_path):
    root = write_fracatlas(tmp_path / "FracAtlas", n=8)
    (root / "images" / "Fractured" / "IMG0000000.jpg").unlink()
    with pytest.raises(DatasetLayoutError, match=r"IMG0000000\.jpg"):
        load_index(root)


def test_a_folder_that_is_no_dataset_says_what_was_looked_for(tmp_path):
    with pytest.raises(DatasetLayoutError) as error:
        load_index(tmp_path)
    message = str(error.value)
    assert "MURA-v1.1" in message and "dataset.csv" in message and "manifest" in message and str(tmp_path) in message


def test_manifest_reads_relative_paths_and_records_its_vocabulary(tmp_path):
    csv = write_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"title": "My wrists", "positive_label": "fractured"}))
    index = load_index(csv)
    info = index.attrs["dataset"]
    assert detect_dataset(csv) == "manifest" and info.title == "My wrists" and info.positive_label == "fractured"
    assert info.body_parts == ("ANKLE", "WRIST") and info.has_patients
    assert len(index) == 24 and index["path"].map(lambda path: path.startswith(str(tmp_path))).all()
    assert set(index.loc[index["split"] == "test", "patient"]) == {"p4", "p5"}


def test_manifest_without_split_holds_out_whole_patients(tmp_path):
    index = load_index(write_manifest(tmp_path, split=False))
    assert set(index["split"]) == {"train", "test"}
    assert index.groupby("patient")["split"].nunique().max() == 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda table: table.assign(label=table["label"].astype(str).replace("1", "yes")), r"row 4: label 'yes'"),
        (lambda table: table.assign(split=table["split"].replace("test", "valid")), r"split 'valid'"),
        (lambda table: table.assign(split=np.where(table.index == 0, "test", table["split"])), r"patient 'p0'.*both"),
        (lambda table: table.drop(columns=["label"]), r"missing column\(s\) \['label'\]"),
        (
            lambda table: table.assign(path=table["path"].replace("p0/s0/0.png", "p0/s0/gone.png")),
            r"row 2: .*gone\.png",
        ),
    ],
)
def test_manifest_problems_name_the_csv_and_row(tmp_path, edit, message):
    csv = write_manifest(tmp_path)
    edit(pd.read_csv(csv)).to_csv(csv, index=False)
    with pytest.raises(DatasetLayoutError, match=message) as error:
        load_index(csv)
    assert str(csv) in str(error.value)


def test_a_missing_manifest_is_named(tmp_path):
    with pytest.raises(DatasetLayoutError, match=r"missing\.csv: manifest file not found"):
        dataset_info(tmp_path / "missing.csv")


def test_mura_keeps_its_index_and_meaning(tiny_mura):
    index = load_index(tiny_mura)
    info = index.attrs["dataset"]
    assert info.name == "mura" and info.positive_label == "abnormal" and info.test_split == "valid"
    assert set(index["split"]) == {"train", "valid"} and len(info.body_parts) == 7


@pytest.fixture(scope="module")
def fracatlas_run(tmp_path_factory):
    """A 1-epoch custom CNN trained on the tiny FracAtlas tree through the real training loop."""
    from mura_utils.config import TrainConfig
    from mura_utils.training.fit import fit

    root = write_fracatlas(tmp_path_factory.mktemp("fa") / "FracAtlas", n=60)
    out = tmp_path_factory.mktemp("fa_run")
    config = TrainConfig(
        model="custom_cnn", data_root=str(root), img_size=32, epochs=1, batch_size=8, out_dir=str(out), progress=False
    )
    fit(config)
    return root, out


def test_training_records_the_dataset_and_its_split_file(fracatlas_run):
    from mura_utils.models.checkpoint import checkpoint_dataset, read_checkpoint

    root, out = fracatlas_run
    checkpoint = read_checkpoint(out / "best.pt")
    info = checkpoint_dataset(checkpoint)
    assert info.name == "fracatlas" and checkpoint["state_dict"]["body_part_head.weight"].shape[0] == 5
    split = pd.read_csv(out / "data_split.csv")
    index = load_index(root)
    assert sorted(split["split"].unique()) == ["test", "train", "validation"]
    assert len(split) == len(index) and split["path"].is_unique
    test_names = set(index.loc[index["split"] == "test", "path"].map(lambda path: path.split("/")[-1]))
    assert set(split.loc[split["split"] == "test", "path"].map(lambda path: path.split("/")[-1])) == test_names


def test_evaluate_defaults_to_the_test_split_and_names_the_classes(fracatlas_run):
    from mura_utils.evaluation.predictions import evaluate_checkpoint

    root, out = fracatlas_run
    predictions, metrics = evaluate_checkpoint(out / "best.pt", root, use_cache=False, progress=False)
    assert metrics["split"] == "test" and metrics["positive_label"] == "fractured"
    assert metrics["n_images"] == (load_index(root)["split"] == "test").sum()
    assert set(predictions["predicted_body_part"]) <= {"HAND", "HIP", "LEG", "MIXED", "SHOULDER"}
    assert set(metrics["per_body_part"]) == set(predictions["body_part"])


def test_a_mura_model_on_fracatlas_scores_shared_body_parts_by_name(
    fracatlas_run, tmp_path, untrained_checkpoint, monkeypatch
):
    from mura_utils.evaluation.cross_dataset_eval import evaluate_cross_dataset

    monkeypatch.chdir(tmp_path)  # the untrained checkpoint's data_root (data/sample) is not there: overlap unchecked
    root, _ = fracatlas_run
    mura_model = untrained_checkpoint(tmp_path / "mura.pt")  # MURA vocabulary (no dataset recorded: MURA)
    summary = evaluate_cross_dataset(mura_model, root, tmp_path / "cross", n_resamples=20, device="cpu", name="m")
    test = load_index(root, splits=("test",))
    assert summary["body_parts_kept"] == ["HAND", "SHOULDER"]
    assert summary["images_scored"] == test["body_part"].isin(["HAND", "SHOULDER"]).sum()
    assert not summary["training_overlap_checked"]
    assert "NOT checked" in (tmp_path / "cross" / "cross_m.md").read_text()


def test_copies_of_training_images_are_left_out_of_a_cross_dataset_test(fracatlas_run, tmp_path):
    from mura_utils.evaluation.cross_dataset_eval import evaluate_cross_dataset

    root, out = fracatlas_run
    copied = write_fracatlas(tmp_path / "Other", n=20, seed=5)
    index = load_index(root)
    other = load_index(copied, splits=("test",))
    source = Image.open(index.loc[index["split"] == "train", "path"].iloc[0])
    source.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other["path"].iloc[0], quality=90)  # a mirrored copy
    summary = evaluate_cross_dataset(out / "best.pt", copied, tmp_path / "cross", n_resamples=20, device="cpu")
    assert sum(summary["left_out_as_training_copies"].values()) == 1
    assert summary["images_scored"] == len(other) - 1


def test_predict_and_onnx_use_the_checkpoint_vocabulary(fracatlas_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from mura_utils.inference.onnx_export import export_onnx, read_contract
    from mura_utils.inference.predict import predict_paths

    root, out = fracatlas_run
    image = next((root / "images" / "Fractured").iterdir())
    table = predict_paths([image], out / "best.pt", device="cpu")
    assert set(table["study_prediction"]) <= {"fractured", "not fractured"}
    assert table["predicted_body_part"].iloc[0] in {"HAND", "HIP", "LEG", "MIXED", "SHOULDER"}
    contract = export_onnx(out / "best.pt", tmp_path / "model.onnx")
    assert contract["positive_label"] == "fractured" and len(contract["body_parts"]) == 5
    assert read_contract(tmp_path / "model.onnx")["dataset"]["name"] == "fracatlas"
    onnx_table = predict_paths([image], tmp_path / "model.onnx")
    assert onnx_table["probability"].iloc[0] == pytest.approx(table["probability"].iloc[0], abs=1e-4)
    assert onnx_table["study_prediction"].iloc[0] == table["study_prediction"].iloc[0]


def test_an_ensemble_refuses_members_of_different_datasets(fracatlas_run, tmp_path, untrained_checkpoint):
    from mura_utils.models.checkpoint import CheckpointError
    from mura_utils.models.ensemble import make_ensemble

    _, out = fracatlas_run
    mura_model = untrained_checkpoint(tmp_path / "mura.pt")
    with pytest.raises(CheckpointError, match=r"mura\.pt: trained on MURA-v1\.1.*FracAtlas"):
        make_ensemble([out / "best.pt", mura_model], tmp_path / "mixed.pt")
    ensemble = make_ensemble([out / "best.pt", out / "best.pt"], tmp_path / "pair.pt")
    assert ensemble["dataset"]["name"] == "fracatlas"


def test_a_blank_patient_cell_is_an_error_not_a_silent_loss_of_patients(tmp_path):
    csv = write_manifest(tmp_path)
    table = pd.read_csv(csv)
    table.loc[3, "patient"] = ""
    table.to_csv(csv, index=False)
    with pytest.raises(DatasetLayoutError, match=r"row 5: empty 'patient'"):
        load_index(csv)


def test_the_manifest_split_survives_moving_the_folder(tmp_path):
    import shutil

    csv = write_manifest(tmp_path / "a", split=False)
    table = pd.read_csv(csv).drop(columns=["patient", "study"])  # ids come from the paths
    table.to_csv(csv, index=False)
    before = load_index(csv)
    shutil.move(tmp_path / "a", tmp_path / "b")
    after = load_index(tmp_path / "b" / "manifest.csv")
    assert before["split"].tolist() == after["split"].tolist()
    assert before["study"].tolist() == after["study"].tolist() and not before["study"].str.startswith("/").any()


def test_study_ids_may_repeat_across_patients_as_in_mura(tmp_path):
    csv = write_manifest(tmp_path)
    table = pd.read_csv(csv)
    table["study"] = table["study"].str.split("_").str[-1]  # s0, s1 under every patient
    table.to_csv(csv, index=False)
    index = load_index(csv)
    assert index["study"].nunique() == 12 and index["study"].str.contains("/").all()


def test_the_shipped_fracatlas_split_is_used_when_the_copy_holds_its_images(tmp_path, monkeypatch):
    from mura_utils.data import fracatlas

    root = write_fracatlas(tmp_path / "FracAtlas", n=40)
    listed = tmp_path / "listed.csv"
    listed.write_text("# a shipped list\nimage_id\n" + "".join(f"IMG{n:07d}.jpg\n" for n in (1, 2, 3, 5)))
    monkeypatch.setattr(fracatlas, "TEST_SPLIT_FILE", listed)
    index = load_index(root)
    assert sorted(index.loc[index["split"] == "test", "image_id"]) == [f"IMG{n:07d}.jpg" for n in (1, 2, 3, 5)]
    (root / "dataset.csv").write_text(  # a copy without image 5: under 95% of the list, a fresh draw
        "\n".join(line for line in (root / "dataset.csv").read_text().splitlines() if "IMG0000005" not in line) + "\n"
    )
    redrawn = load_index(root)
    assert sorted(redrawn.loc[redrawn["split"] == "test", "image_id"]) != [f"IMG{n:07d}.jpg" for n in (1, 2, 3)]


def test_a_nested_ensemble_cannot_smuggle_in_another_dataset(fracatlas_run, tmp_path, untrained_checkpoint):
    from mura_utils.models.checkpoint import CheckpointError
    from mura_utils.models.ensemble import make_ensemble

    _, out = fracatlas_run
    mura_pair = make_ensemble(
        [untrained_checkpoint(tmp_path / "m1.pt"), untrained_checkpoint(tmp_path / "m2.pt")], tmp_path / "mura_pair.pt"
    )
    assert mura_pair["dataset"]["name"] == "mura"
    with pytest.raises(CheckpointError, match=r"best\.pt: trained on FracAtlas"):
        make_ensemble([tmp_path / "mura_pair.pt", out / "best.pt"], tmp_path / "mixed.pt")


def test_run_experiment_leaves_a_finished_run_folder_untouched(fracatlas_run, tmp_path):
    import shutil

    from mura_utils.config import TrainConfig
    from mura_utils.training.experiment import run_experiment
    from mura_utils.training.run_folder import RunFolderInUseError

    root, out = fracatlas_run
    folder = tmp_path / "finished"
    shutil.copytree(out, folder)
    (folder / "run.json").write_text("{}")
    config = TrainConfig(model="custom_cnn", data_root=str(root), img_size=32, epochs=1, out_dir=str(folder))
    with pytest.raises(RunFolderInUseError):
        run_experiment(config)
    assert (folder / "run.json").read_text() == "{}"
