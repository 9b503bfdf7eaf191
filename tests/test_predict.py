"""``mura predict``'s API: inputs to studies, DICOM pixels, predictions per study, Grad-CAM files,
clear errors, and the three output formats. Tiny custom_cnn checkpoints and 32 px images."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

pydicom = pytest.importorskip("pydicom", minversion="3.0")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, generate_uid  # noqa: E402

from mura_utils.config import TrainConfig  # noqa: E402
from mura_utils.data.constants import BODY_PARTS  # noqa: E402
from mura_utils.data.imaging import ImageReadError, letterbox  # noqa: E402
from mura_utils.inference.predict import cam_caption, cam_panels, format_predictions, predict_paths  # noqa: E402
from mura_utils.inference.predict_inputs import PredictInputError, collect_inputs, read_dicom, read_image  # noqa: E402
from mura_utils.models.checkpoint import CheckpointError, save_checkpoint  # noqa: E402
from mura_utils.models.networks import build_model  # noqa: E402

IMG_SIZE = 32


def make_checkpoint(path, multitask=True, model_name="custom_cnn"):
    torch.manual_seed(0)
    model = build_model("custom_cnn", pretrained=False, multitask=multitask)
    save_checkpoint(
        path,
        model,
        TrainConfig(model="custom_cnn", img_size=IMG_SIZE, multitask=multitask),
        epoch=1,
        img_size=IMG_SIZE,
        threshold=0.4,
    )
    if model_name != "custom_cnn":
        checkpoint = torch.load(path, weights_only=False)
        checkpoint["model_name"] = model_name
        torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


def radiograph(height=40, width=30, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width), dtype=np.uint8)


def write_dicom(
    path,
    pixels,
    photometric="MONOCHROME2",
    window=None,
    slope=None,
    intercept=None,
    frames=1,
    transfer_syntax=ExplicitVRLittleEndian,
    pixel_data=True,
):
    """A minimal 16-bit (12 bits stored) DX image, the way modalities write radiographs."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.1, 0.1]
    if frames > 1:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if pixel_data and transfer_syntax == ExplicitVRLittleEndian:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    elif pixel_data:  # compressed syntax: encapsulated bytes that need a JPEG-LS decoder
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7 not really jpeg-ls"])
        ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(height=8, width=64):
    return np.tile(np.linspace(0, 4095, width).round().astype(np.uint16), (height, 1))


# --- DICOM pixels -------------------------------------------------------------------------------


def test_dicom_window_is_applied_after_the_rescale(tmp_path):
    stored = ramp()
    slope, intercept, (center, width) = 2.0, -1000.0, (3000.0, 2000.0)
    gray = read_dicom(write_dicom(tmp_path / "a.dcm", stored, window=(center, width), slope=slope, intercept=intercept))
    assert gray.dtype == np.uint8 and gray.shape == stored.shape
    values = stored * slope + intercept  # modality LUT: what the window is defined on
    assert (gray[values <= center - width / 2] == 0).all()  # below the window clips to black
    assert (gray[values > center + width / 2] == 255).all()  # above clips to white
    expected = np.clip(((values - (center - 0.5)) / (width - 1) + 0.5) * 255, 0, 255)
    np.testing.assert_allclose(gray, expected, atol=1)
    inside = (values > center - width / 2) & (values < center + width / 2)
    assert np.unique(gray[inside]).size > 10  # a real grey ramp inside the window


def test_dicom_voi_lut_sequence_is_applied(tmp_path):
    path = write_dicom(tmp_path / "lut.dcm", ramp())
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.LUTDescriptor = [256, 1000, 16]  # 256 entries for stored values 1000..1255
    item.LUTData = np.linspace(0, 4000, 256).astype(int).tolist()
    item["LUTData"].VR = "US"
    ds.VOILUTSequence = [item]
    ds.save_as(path, enforce_file_format=True)
    gray, stored = read_dicom(path), ramp()
    assert (gray[stored < 1000] == 0).all() and (gray[stored > 1255] == 255).all()
    assert 0 < gray[stored == stored[(stored >= 1000) & (stored <= 1255)].min()].min() < 255


def test_monochrome1_is_inverted_so_bone_is_bright(tmp_path):
    stored = ramp()
    for window in [(2048, 1024), None]:
        mono2 = read_dicom(write_dicom(tmp_path / "m2.dcm", stored, "MONOCHROME2", window, 1.0, 0.0))
        mono1 = read_dicom(write_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1", window, 1.0, 0.0))
        np.testing.assert_array_equal(mono1, 255 - mono2)
    assert mono2.min() == 0 and mono2.max() == 255  # no window: the data's own range is stretched


def test_multiframe_uses_the_first_frame_with_a_warning(tmp_path):
    frames = np.stack([ramp(), ramp()[:, ::-1]])
    with pytest.warns(UserWarning, match="first frame"):
        gray = read_dicom(write_dicom(tmp_path / "multi.dcm", frames, frames=2))
    assert gray.shape == (8, 64) and gray[0, 0] == 0 and gray[0, -1] == 255


def test_dicom_without_pixels_or_decoder_is_a_clear_error(tmp_path):
    no_pixels = write_dicom(tmp_path / "no_pixels.dcm", ramp(), pixel_data=False)
    with pytest.raises(ImageReadError, match="no_pixels.dcm.*no pixel data"):
        read_dicom(no_pixels)
    compressed = write_dicom(tmp_path / "jpegls.dcm", ramp(), transfer_syntax=JPEGLSLossless)
    with pytest.raises(ImageReadError, match="jpegls.dcm.*cannot decode"):
        read_dicom(compressed)


# --- inputs -------------------------------------------------------------------------------------


def test_folder_is_one_study_and_files_are_their_own(tmp_path):
    study = tmp_path / "patient1" / "study1"
    study.mkdir(parents=True)
    Image.fromarray(radiograph()).save(study / "image2.png")
    Image.fromarray(radiograph(seed=1)).save(study / "image1.png")
    write_dicom(study / "IM0003", ramp())  # no suffix: recognised by the DICM marker
    (study / "._image1.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (study / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (study / "sub").mkdir()
    single = tmp_path / "loose.jpg"
    Image.fromarray(radiograph(seed=2)).save(single)

    inputs = collect_inputs([study, single])
    assert list(inputs.columns) == ["path", "study", "kind"]
    assert [Path(p).name for p in inputs["path"]] == ["IM0003", "image1.png", "image2.png", "loose.jpg"]
    assert list(inputs["kind"]) == ["dicom", "image", "image", "image"]
    assert list(inputs["study"]) == [str(study)] * 3 + [str(single)]


@pytest.mark.parametrize("name, content", [("notes.txt", b"hello"), ("anim.gif", b"GIF89a")])
def test_unsupported_files_are_named(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PredictInputError, match=f"{name}: unsupported file type"):
        collect_inputs([path])
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / name).write_bytes(content)
    with pytest.raises(PredictInputError, match=name):
        collect_inputs(folder)


def test_empty_folder_and_missing_path_are_named(tmp_path):
    empty = tmp_path / "empty_study"
    empty.mkdir()
    (empty / ".DS_Store").write_bytes(b"x")
    with pytest.raises(PredictInputError, match="empty_study: empty folder"):
        collect_inputs([empty])
    (tmp_path / "patient" / "study1").mkdir(parents=True)
    with pytest.raises(PredictInputError, match="subfolders"):
        collect_inputs([tmp_path / "patient"])
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        collect_inputs([tmp_path / "nowhere.png"])


# --- predictions --------------------------------------------------------------------------------


@pytest.fixture()
def inputs(tmp_path):
    """A study folder (L PNG, RGB PNG, 16-bit PNG, DICOM MONOCHROME1) and two loose files."""
    study = tmp_path / "XR_WRIST" / "patient00001" / "study1_positive"
    study.mkdir(parents=True)
    Image.fromarray(radiograph()).save(study / "image1.png")
    Image.fromarray(np.stack([radiograph(seed=1)] * 3, axis=2)).save(study / "image2.png")
    Image.fromarray(radiograph(50, 20, seed=2).astype(np.uint16) * 200).save(study / "image3.png")
    write_dicom(study / "image4.dcm", ramp(40, 40), "MONOCHROME1", (2048, 2000), 1.0, 0.0)
    loose_png = tmp_path / "loose.png"
    Image.fromarray(radiograph(20, 60, seed=3)).save(loose_png)
    loose_jpg = tmp_path / "other" / "image1.jpg"  # same stem as a study image: CAM names must differ
    loose_jpg.parent.mkdir()
    Image.fromarray(radiograph(seed=4)).save(loose_jpg, quality=90)
    return study, loose_png, loose_jpg


def test_study_probability_is_the_mean_of_its_images(inputs, checkpoint):
    study, loose_png, loose_jpg = inputs
    table = predict_paths([study, loose_png, loose_jpg], checkpoint, device="cpu", batch_size=3)
    assert len(table) == 6 and table["path"].is_unique
    assert table["study"].tolist() == [str(study)] * 4 + [str(loose_png), str(loose_jpg)]
    assert table["probability"].between(0, 1).all()
    for _, rows in table.groupby("study"):
        assert rows["study_probability"].nunique() == 1
        assert rows["study_probability"].iloc[0] == pytest.approx(rows["probability"].mean())
    assert (table["threshold"] == 0.4).all()
    abnormal = table["study_probability"] >= 0.4
    assert (table["study_prediction"] == np.where(abnormal, "abnormal", "normal")).all()
    assert table["predicted_body_part"].isin(BODY_PARTS).all()
    assert table["body_part_probability"].between(1 / len(BODY_PARTS), 1).all()
    assert "cam_path" not in table

    alone = predict_paths([loose_png], checkpoint, device="cpu")  # batching does not change a result
    assert alone["probability"].iloc[0] == pytest.approx(table["probability"].iloc[4], abs=1e-5)


def test_cam_overlays_one_per_image_beside_the_image_at_its_own_size(inputs, checkpoint, tmp_path):
    cam_dir = tmp_path / "cams"
    table = predict_paths(list(inputs), checkpoint, device="cpu", cam_dir=cam_dir)
    cam_paths = table["cam_path"].tolist()
    assert len(set(cam_paths)) == len(table) == 6
    assert sorted(p.name for p in cam_dir.iterdir()) == sorted(Path(p).name for p in cam_paths)
    assert "patient00001__study1_positive__image1_cam.png" in {Path(p).name for p in cam_paths}
    for path, cam_path in zip(table["path"], cam_paths):
        gray = read_image(path)
        with Image.open(cam_path) as image:
            assert image.format == "PNG" and image.mode == "RGB"
            picture = np.asarray(image)
        height, width = gray.shape
        assert picture.shape[0] > height and picture.shape[1] >= 2 * width  # two panels, a caption below
        np.testing.assert_array_equal(picture[:height, :width], np.repeat(gray[..., None], 3, axis=2))


def test_cam_of_a_wide_image_is_drawn_on_the_image_not_the_letterbox(checkpoint, tmp_path):
    from mura_utils.explain.cam import cam_heatmaps
    from mura_utils.explain.frames import to_image_frame
    from mura_utils.models.restore import load_model

    gray = radiograph(180, 300, seed=5)  # wide: a letterbox would put bars above and below
    Image.fromarray(gray).save(tmp_path / "wide.png")
    table = predict_paths([tmp_path / "wide.png"], checkpoint, device="cpu", cam_dir=tmp_path / "cams")
    with Image.open(table["cam_path"].iloc[0]) as image:
        picture = np.asarray(image)
    model, _ = load_model(checkpoint, "cpu")
    canvas = torch.from_numpy(letterbox(gray, IMG_SIZE))[None, None]
    expected_map = to_image_frame(cam_heatmaps(model, "custom_cnn", canvas)[0], 180, 300)
    caption = cam_caption(table["probability"].iloc[0], 0.4, "abnormal", "normal")
    np.testing.assert_array_equal(picture, cam_panels(gray, expected_map, caption))
    assert picture.shape[0] > 180 and picture.shape[1] > 600


def test_cam_panels_put_the_image_beside_its_overlay_at_the_image_size():
    from mura_utils.explain.cam import overlay

    gray = radiograph(180, 300, seed=6)
    heatmap = np.random.default_rng(0).random((180, 300)).astype(np.float32)
    picture = cam_panels(gray, heatmap, "p(abnormal) = 0.83, threshold 0.41 -> abnormal")
    height, width = gray.shape
    np.testing.assert_array_equal(picture[:height, :width], np.repeat(gray[..., None], 3, axis=2))
    assert 2 * width < picture.shape[1] <= 2 * width + 10  # a narrow gap; a 300 px image leaves the caption room
    np.testing.assert_array_equal(picture[:height, -width:], overlay(gray, heatmap))
    caption_strip = picture[height:]
    assert caption_strip.shape[0] >= 10 and (caption_strip < 128).any()  # the caption is drawn
    with pytest.raises(ValueError, match="not on the image's pixels"):
        cam_panels(gray, np.zeros((IMG_SIZE, IMG_SIZE), dtype=np.float32), "x")
    tiny = cam_panels(radiograph(20, 10), np.zeros((20, 10), dtype=np.float32), "a long caption " * 4)
    assert tiny.shape[1] > 2 * 10 + 2  # widened for its caption; the panels stay at 10 px


def test_cam_caption_states_the_probability_the_threshold_and_the_call():
    assert cam_caption(0.83, 0.41, "fractured", "not fractured") == "p(fractured) = 0.83, threshold 0.41 -> fractured"
    assert cam_caption(0.2, 0.41, "abnormal", "normal") == "p(abnormal) = 0.20, threshold 0.41 -> normal"
    # two decimals would show 0.41 against 0.41: as many as tell them apart
    assert cam_caption(0.409, 0.411, "abnormal", "normal") == "p(abnormal) = 0.409, threshold 0.411 -> normal"
    assert cam_caption(0.41, 0.41, "abnormal", "normal").endswith("-> abnormal")  # at the threshold: positive


def test_single_task_checkpoint_gives_no_body_part(inputs, tmp_path):
    single = make_checkpoint(tmp_path / "single.pt", multitask=False)
    table = predict_paths([inputs[1]], single, device="cpu")
    assert table["predicted_body_part"].isna().all() and table["body_part_probability"].isna().all()
    assert json.loads(format_predictions(table, "json"))[0]["images"][0]["predicted_body_part"] is None
    assert " - " in format_predictions(table, "table")


def test_unreadable_image_is_named(tmp_path, checkpoint):
    buffer = io.BytesIO()
    Image.fromarray(radiograph(64, 64)).save(buffer, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageReadError, match="truncated.png"):
        predict_paths([truncated], checkpoint, device="cpu")


def test_wrong_checkpoints_are_named(inputs, tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"a": 1}, plain)
    with pytest.raises(CheckpointError, match="plain.pt"):
        predict_paths([inputs[1]], plain, device="cpu")
    unknown = make_checkpoint(tmp_path / "vit.pt", model_name="vit_huge")
    with pytest.raises(CheckpointError, match="vit.pt.*unknown model 'vit_huge'"):
        predict_paths([inputs[1]], unknown, device="cpu")


# --- formats ------------------------------------------------------------------------------------


def test_formats_parse(inputs, checkpoint):
    study, loose_png, _ = inputs
    table = predict_paths([study, loose_png], checkpoint, device="cpu")
    studies = json.loads(format_predictions(table, "json"))
    assert [s["study"] for s in studies] == [str(study), str(loose_png)]
    assert [len(s["images"]) for s in studies] == [4, 1]
    assert studies[0]["study_probability"] == pytest.approx(table["study_probability"].iloc[0])
    assert studies[0]["study_prediction"] in ("abnormal", "normal")

    round_trip = pd.read_csv(io.StringIO(format_predictions(table, "csv")))
    assert list(round_trip.columns) == list(table.columns) and len(round_trip) == 5
    np.testing.assert_allclose(round_trip["probability"], table["probability"], rtol=1e-6)

    text = format_predictions(table, "table")
    assert text.count("study probability") == 2 and str(loose_png) in text
    assert all(str(path) in text for path in table["path"])
    with pytest.raises(ValueError, match="unknown format"):
        format_predictions(table, "xml")


def test_duplicate_file_is_predicted_once(inputs):
    study = inputs[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = collect_inputs([study, study / "image1.png"])
    assert len(table) == 4 and any("more than once" in str(w.message) for w in caught)


# --- test-time augmentation ----------------------------------------------------------------------


def mirrored_copies(paths, folder):
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in paths:
        copies.append(folder / Path(path).name)
        Image.fromarray(np.asarray(Image.open(path))[:, ::-1]).save(copies[-1])
    return copies


def test_tta_probability_is_unchanged_by_mirroring_the_input(tmp_path):
    """Odd letterbox padding included (29 and 31 px wide at 32 px), where flipping the letterboxed
    image would shift the content by a pixel."""
    trained = make_checkpoint(tmp_path / "trained.pt")
    originals = []
    for number, shape in enumerate([(40, 29), (33, 50), (64, 31)]):
        originals.append(tmp_path / "originals" / f"image{number}.png")
        originals[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(radiograph(*shape, seed=number)).save(originals[-1])
    mirrored = mirrored_copies(originals, tmp_path / "mirrored")
    tta = predict_paths(originals, trained, device="cpu", tta=True)["probability"].to_numpy()
    tta_mirrored = predict_paths(mirrored, trained, device="cpu", tta=True)["probability"].to_numpy()
    np.testing.assert_allclose(tta_mirrored, tta, atol=1e-6)
    plain = predict_paths(originals, trained, device="cpu")["probability"].to_numpy()
    plain_mirrored = predict_paths(mirrored, trained, device="cpu")["probability"].to_numpy()
    assert np.abs(plain - plain_mirrored).max() > 1e-4  # without TTA mirroring does change them
    assert np.all(np.minimum(plain, plain_mirrored) - 1e-6 <= tta) and np.all(
        tta <= np.maximum(plain, plain_mirrored) + 1e-6
    )


def test_evaluate_tta_is_unchanged_by_mirroring_every_image(tiny_mura, tmp_path):
    import shutil

    from mura_utils.data.mura import load_mura_index
    from mura_utils.evaluation.predictions import evaluate_checkpoint

    trained = make_checkpoint(tmp_path / "best.pt")
    mirrored_root = tmp_path / "mirrored" / "MURA-v1.1"
    shutil.copytree(tiny_mura, mirrored_root)
    for path in load_mura_index(mirrored_root, splits=("valid",))["path"]:
        Image.fromarray(np.asarray(Image.open(path))[:, ::-1]).save(path)

    def probabilities(root, tta, use_cache):
        predictions, metrics = evaluate_checkpoint(
            trained, root, device="cpu", tta=tta, use_cache=use_cache, cache_dir=tmp_path / "cache" / root.parent.name,
            progress=False,
        )  # fmt: skip
        assert metrics["tta"] is tta
        return predictions.assign(key=predictions["path"].map(lambda p: Path(p).relative_to(root).as_posix()))

    original = probabilities(tiny_mura, True, True).set_index("key")["probability"]
    mirrored = probabilities(mirrored_root, True, False).set_index("key")["probability"]
    assert np.abs(mirrored[original.index] - original).max() < 1e-5
    plain = probabilities(tiny_mura, False, True).set_index("key")["probability"]
    plain_mirrored = probabilities(mirrored_root, False, False).set_index("key")["probability"]
    assert np.abs(plain_mirrored[plain.index] - plain).max() > 1e-4


@pytest.mark.parametrize("ensemble", [False, True])
def test_one_pass_gives_the_plain_and_the_tta_predictions_of_two_passes(tiny_mura, tmp_path, ensemble):
    """run_experiment scores the test split once for both files: each view equals its own pass, for
    a model and for an ensemble (whose plain view is the mean of its members' plain views)."""
    from mura_utils.evaluation.predictions import evaluate_checkpoint, evaluate_checkpoint_views
    from mura_utils.models.ensemble import make_ensemble

    trained = make_checkpoint(tmp_path / "best.pt")
    if ensemble:
        other = make_checkpoint(tmp_path / "other.pt", multitask=False)
        make_ensemble([trained, other], tmp_path / "ensemble.pt", threshold=0.5)
        trained = tmp_path / "ensemble.pt"
    options = {"device": "cpu", "cache_dir": tmp_path / "cache", "progress": False, "threshold": 0.5}
    views = evaluate_checkpoint_views(trained, tiny_mura, **options)
    for view, tta in (("plain", False), ("tta", True)):
        predictions, metrics = evaluate_checkpoint(trained, tiny_mura, tta=tta, **options)
        pd.testing.assert_frame_equal(views[view][0], predictions)
        assert views[view][1] == metrics and metrics["tta"] is tta
    assert not views["plain"][0]["probability"].equals(views["tta"][0]["probability"])
    with pytest.raises(ValueError, match="views must be 'plain' and/or 'tta'"):
        evaluate_checkpoint_views(trained, tiny_mura, views=("mirror",), **options)
