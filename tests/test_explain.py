"""mura explain: planted heatmaps against planted fracture boxes, the COCO scaling and letterbox
geometry, every CAM method and ROAD on a tiny untrained model, and the paired image bootstrap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mura_utils.data.imaging import letterbox
from mura_utils.evaluation.bootstrap import ClusterBootstrap
from mura_utils.explain.boxes import AnnotationSizeError, FractureAnnotation, read_coco
from mura_utils.explain.frames import letterbox_region, to_image_frame
from mura_utils.explain.localization import (
    baseline_scores,
    centre_map,
    image_scores,
    mass_ratio,
    near_mask,
    pointing,
    summarize,
)
from mura_utils.explain.run import explain_cases


def _annotation(boxes, polygons=(), width=10, height=10, name="a.png") -> FractureAnnotation:
    return FractureAnnotation(
        name,
        width,
        height,
        np.asarray(boxes, dtype=float).reshape(-1, 4),
        tuple(np.asarray(p, float) for p in polygons),
    )


# ----------------------------------------------------------------------------- metrics on planted maps


def test_pointing_hits_when_the_peak_is_in_a_box_and_misses_outside():
    boxes = _annotation([[2, 3, 4, 2]]).box_mask()  # columns 2..5, rows 3..4
    inside, outside = np.zeros((10, 10)), np.zeros((10, 10))
    inside[4, 5] = 1.0
    outside[4, 6] = 1.0  # one pixel right of the box
    assert pointing(inside, boxes) == 1.0
    assert pointing(outside, boxes) == 0.0
    assert pointing(np.ones((10, 10)), boxes) == pytest.approx(boxes.mean())  # a flat map: the area share


def _peak(shape, row, column) -> np.ndarray:
    heatmap = np.zeros(shape)
    heatmap[row, column] = 1.0
    return heatmap


def test_tolerant_pointing_hits_a_maximum_closer_than_15_px_to_a_box():
    boxes = np.zeros((100, 100), dtype=bool)
    boxes[40:50, 40:50] = True  # rows and columns 40..49
    near = near_mask(boxes)
    for (row, column), strict, tolerant in [
        ((45, 45), 1.0, 1.0),  # inside
        ((45, 59), 0.0, 1.0),  # 10 px right of the box
        ((59, 59), 0.0, 1.0),  # 10 px right and 10 px down: 14.1 px from the corner
        ((45, 64), 0.0, 0.0),  # 15 px: not closer than 15
        ((45, 69), 0.0, 0.0),  # 20 px
        ((61, 61), 0.0, 0.0),  # 12 px right and 12 px down: 17.0 px
    ]:
        scores = image_scores(_peak((100, 100), row, column), boxes, boxes, near)
        assert (scores["pointing"], scores["pointing_tol15"]) == (strict, tolerant), (row, column)
        assert scores == image_scores(_peak((100, 100), row, column), boxes, boxes)  # the zone computed alone
    flat = baseline_scores(boxes, boxes)["flat"]
    assert flat["pointing_tol15"] == pytest.approx(near.mean()) and near.mean() > flat["pointing"] == boxes.mean()
    halved = near_mask(boxes, pixel_size=(2.0, 2.0))  # a copy at half the original size: 15 px are 7.5 here
    assert halved[45, 56] and not halved[45, 57] and not halved[45, 59]


def test_a_map_equal_to_the_box_mask_has_mass_ratio_one_over_the_area_share():
    annotation = _annotation([[2, 3, 4, 2], [7, 7, 2, 2]])
    boxes = annotation.box_mask()
    assert boxes.sum() == 4 * 2 + 2 * 2
    assert mass_ratio(boxes.astype(float), boxes) == pytest.approx(1 / boxes.mean())
    assert mass_ratio(np.ones((10, 10)), boxes) == pytest.approx(1.0)  # flat map: no better than chance
    scores = image_scores(np.zeros((10, 10)), boxes, boxes)  # an empty map scores as a flat one, flagged
    assert scores["empty_map"] and scores["box_mass_ratio"] == pytest.approx(1.0)


def test_box_mask_takes_the_pixels_whose_centre_is_inside_and_keeps_sub_pixel_boxes():
    mask = _annotation([[1.6, 0.4, 2.0, 1.2]]).box_mask()  # x 1.6..3.6 -> centres 2.5, 3.5; y 0.4..1.6 -> 0.5, 1.5
    assert np.argwhere(mask).tolist() == [[0, 2], [0, 3], [1, 2], [1, 3]]
    tiny = _annotation([[4.1, 4.1, 0.2, 0.2]]).box_mask()
    assert np.argwhere(tiny).tolist() == [[4, 4]]


def test_polygon_mask_lies_inside_its_box_and_has_the_triangle_area():
    triangle = [[0, 0], [8, 0], [0, 8]]
    annotation = _annotation([[0, 0, 8, 8]], [triangle])
    polygon, box = annotation.polygon_mask(), annotation.box_mask()
    assert not (polygon & ~box).any()
    assert polygon.sum() == pytest.approx(32, abs=5)  # half of 8 x 8, up to the diagonal's pixels


def test_centre_baseline_points_at_the_image_centre():
    central = _annotation([[4, 4, 2, 2]]).box_mask()
    corner = _annotation([[0, 0, 2, 2]]).box_mask()
    assert np.unravel_index(np.argmax(centre_map(11, 11)), (11, 11)) == (5, 5)
    assert baseline_scores(central, central)["centre"]["pointing"] == 1.0
    assert baseline_scores(corner, corner)["centre"]["pointing"] == 0.0
    assert baseline_scores(corner, corner)["flat"]["box_mass_ratio"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- scaling and the letterbox


def test_annotations_scale_from_the_listed_size_to_the_file_size():
    listed = _annotation([[40, 20, 80, 40]], [[[40, 20], [120, 20], [40, 60]]], width=200, height=100)
    scaled = listed.scaled(50, 25)
    np.testing.assert_allclose(scaled.boxes, [[10, 5, 20, 10]])
    assert scaled.pixel_size == (4.0, 4.0) and scaled.scaled(100, 50).pixel_size == (2.0, 2.0)
    np.testing.assert_allclose(scaled.polygons[0], [[10, 5], [30, 5], [10, 15]])
    assert scaled.box_mask().shape == (25, 50) and scaled.box_mask().sum() == 20 * 10
    with pytest.raises(AnnotationSizeError, match="a.png.*30x25 px.*200x100"):
        listed.scaled(30, 25)  # not the listed aspect ratio: a rotated or cropped file


@pytest.mark.parametrize("shape", [(40, 30), (30, 40), (33, 33), (7, 61), (100, 1)])
def test_letterbox_region_is_where_imaging_letterbox_puts_the_image(shape):
    canvas = letterbox(np.full(shape, 255, dtype=np.uint8), 32)
    top, left, height, width = letterbox_region(*shape, 32)
    rows, columns = np.nonzero(canvas)
    assert (rows.min(), columns.min(), rows.max() + 1 - rows.min(), columns.max() + 1 - columns.min()) == (
        top,
        left,
        height,
        width,
    )


def test_a_map_made_on_the_letterbox_maps_back_onto_the_image_pixels():
    # a bright block in a tall 60 x 40 image, letterboxed to 32 px (padding left and right) and back
    image = np.zeros((60, 40), dtype=np.uint8)
    image[10:20, 25:35] = 255
    canvas = letterbox(image, 32).astype(np.float32) / 255
    canvas[:, :2] = 5.0  # mass in the padding is dropped, not moved onto the image
    back = to_image_frame(canvas, 60, 40)
    assert back.shape == (60, 40)
    block = np.zeros((60, 40), dtype=bool)
    block[10:20, 25:35] = True
    assert pointing(back, block) == 1.0
    assert mass_ratio(back, block) > 0.5 / block.mean()


class PlantedExplainer:
    """An ``Explainer`` whose maps are given: one (size, size) letterboxed map per image, in order."""

    def __init__(self, size: int, maps: list[np.ndarray]):
        self.img_size, self.maps = size, maps

    def letterboxed(self, grays):
        return torch.from_numpy(np.stack([letterbox(gray, self.img_size) for gray in grays]))[:, None]

    def probabilities(self, images):
        return np.full(len(images), 0.5, dtype=np.float32)

    def heatmaps(self, images, method):
        return np.stack(self.maps[: len(images)])


def _bump_at(height: int, width: int, size: int, row: int, column: int) -> np.ndarray:
    """A smooth bump on the ``size`` letterbox canvas of a ``height`` x ``width`` image whose
    maximum, brought back onto the image's pixels, lies at (row, column) of the image."""
    top, left, region_height, region_width = letterbox_region(height, width, size)
    centre_row = top + (row + 0.5) * region_height / height - 0.5
    centre_column = left + (column + 0.5) * region_width / width - 0.5
    rows, columns = np.mgrid[0:size, 0:size]
    return np.exp(-((rows - centre_row) ** 2 + (columns - centre_column) ** 2) / (2 * 2.0**2)).astype(np.float32)


def test_the_tolerance_is_measured_in_original_pixels_through_the_coco_scaling_and_the_letterbox(tmp_path):
    # 300 x 180 files, a copy at half the 600 x 360 that the annotations list; the box [200, 100, 40, 40]
    # is columns 100..119 and rows 50..69 of the file; the model sees a 96 px letterbox (a 96 x 58 region).
    # Maxima 10 and 20 original px right of the box are 5 and 10 px of the file (both within 15 file px,
    # and within 15 px of the canvas): only the original pixels tell them apart.
    coco = {"images": [], "annotations": []}
    names = ["IMG_near.png", "IMG_far.png"]
    for number, name in enumerate(names):
        Image.fromarray(np.full((180, 300), 128, dtype=np.uint8)).save(tmp_path / name)
        coco["images"].append({"id": number, "width": 600, "height": 360, "file_name": name})
        coco["annotations"].append({"image_id": number, "bbox": [200, 100, 40, 40], "segmentation": []})
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    annotations = read_coco(tmp_path / "coco.json")
    assert annotations["IMG_near.png"].scaled(300, 180).pixel_size == (2.0, 2.0)
    planted = [_bump_at(180, 300, 96, 60, 124), _bump_at(180, 300, 96, 60, 129)]  # 5 and 10 px of the file
    for heatmap, column in zip(planted, (124, 129)):
        peak = np.unravel_index(np.argmax(to_image_frame(heatmap, 180, 300)), (180, 300))
        assert abs(peak[0] - 60) <= 1 and abs(peak[1] - column) <= 1
    cases = pd.DataFrame({"image": names, "path": [str(tmp_path / name) for name in names]})
    table, skipped = explain_cases(
        PlantedExplainer(96, planted), cases, annotations, methods=["gradcam"], road_percentiles=None
    )
    assert skipped == []
    scores = table[table["method"] == "gradcam"].set_index("image")
    assert scores.loc["IMG_near.png", ["pointing", "pointing_tol15"]].tolist() == [0.0, 1.0]
    assert scores.loc["IMG_far.png", ["pointing", "pointing_tol15"]].tolist() == [0.0, 0.0]
    assert set(table["method"]) == {"gradcam", "centre", "flat"} and table["pointing_tol15"].notna().all()


# ----------------------------------------------------------------------------- COCO reading


def test_read_coco_keys_by_file_name_and_reports_bad_files(tmp_path):
    coco = {
        "images": [
            {"id": 1, "width": 200, "height": 100, "file_name": "sub/IMG1.jpg"},
            {"id": 2, "width": 200, "height": 100, "file_name": "IMG2.jpg"},  # no annotation: left out
        ],
        "annotations": [
            {"image_id": 1, "bbox": [1, 2, 3, 4], "segmentation": [[1, 2, 4, 2, 4, 6]]},
            {"image_id": 1, "bbox": [10, 20, 30, 40], "segmentation": []},
        ],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    annotations = read_coco(path)
    assert list(annotations) == ["IMG1.jpg"]
    assert annotations["IMG1.jpg"].boxes.shape == (2, 4) and len(annotations["IMG1.jpg"].polygons) == 1
    coco["annotations"].append({"image_id": 9, "bbox": [0, 0, 1, 1]})
    path.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="coco.json.*image ids not listed.*9"):
        read_coco(path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_coco(tmp_path / "missing.json")


# ----------------------------------------------------------------------------- CAM methods and ROAD


@pytest.fixture(scope="module")
def tiny_model():
    from mura_utils.models.networks import build_model

    torch.manual_seed(0)
    return build_model("custom_cnn", pretrained=False).eval()


def test_every_method_name_is_a_grad_cam_class_and_the_names_load_without_torch():
    import subprocess
    import sys

    from pytorch_grad_cam.base_cam import BaseCAM

    from mura_utils.explain.cam import CAM_METHODS
    from mura_utils.explain.names import CAM_METHOD_NAMES, DEFAULT_CAM_METHOD, DEFAULT_METHODS

    assert tuple(CAM_METHODS) == CAM_METHOD_NAMES and all(issubclass(c, BaseCAM) for c in CAM_METHODS.values())
    assert set(DEFAULT_METHODS) <= set(CAM_METHOD_NAMES) and DEFAULT_CAM_METHOD in DEFAULT_METHODS
    code = "import sys, mura_utils.explain.names; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "hirescam", "eigencam", "layercam", "xgradcam"])
def test_each_method_gives_a_map_in_0_1_at_the_input_size(tiny_model, method):
    from mura_utils.explain.cam import cam_heatmaps

    images = torch.randint(0, 256, (2, 1, 48, 48), dtype=torch.uint8)
    maps = cam_heatmaps(tiny_model, "custom_cnn", images, method=method)
    assert maps.shape == (2, 48, 48) and np.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1


def test_unknown_method_is_refused_with_the_choices(tiny_model):
    from mura_utils.explain.cam import cam_heatmaps

    with pytest.raises(ValueError, match="unknown CAM method 'gradcan'.*gradcam, gradcam\\+\\+"):
        cam_heatmaps(tiny_model, "custom_cnn", torch.zeros(1, 1, 48, 48, dtype=torch.uint8), method="gradcan")


def test_road_scores_per_image_repeat_with_the_seed(tiny_model):
    from mura_utils.explain.methods import road_scores

    inputs = torch.randn(2, 1, 32, 32)
    maps = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    first = road_scores(tiny_model, inputs, maps, percentiles=(50,), seed=3)
    again = road_scores(tiny_model, inputs, maps, percentiles=(50,), seed=3)
    assert first["road_morf"].shape == (2,)
    np.testing.assert_allclose(first["road_combined"], (first["road_lerf"] - first["road_morf"]) / 2)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    with pytest.raises(ValueError, match="do not match inputs"):
        road_scores(tiny_model, inputs, maps[:1], percentiles=(50,))


# ----------------------------------------------------------------------------- the summary


def test_methods_and_baselines_are_compared_on_the_same_resamples():
    rng = np.random.default_rng(0)
    images = [f"IMG{i}.jpg" for i in range(30)]
    base = rng.random(30)
    per_image = pd.concat(
        [
            pd.DataFrame({"image": images, "method": "gradcam", "pointing": base, "box_mass_ratio": 2 + base}),
            pd.DataFrame({"image": images, "method": "other", "pointing": base + 0.1, "box_mass_ratio": 2 + base}),
            pd.DataFrame({"image": images, "method": "flat", "pointing": base / 2, "box_mass_ratio": 1.0}),
        ]
    )
    bootstrap = ClusterBootstrap(images, n_resamples=200, seed=0, unit="image")
    summary = summarize(per_image, bootstrap, ("pointing", "box_mass_ratio"), references=("gradcam", "flat"))
    paired = summary["other"]["pointing"]["minus_gradcam"]
    # a constant per-image difference is constant on every resample only if both sides see the same images
    assert paired["delta"] == pytest.approx(0.1) and paired["ci"] == pytest.approx([0.1, 0.1])
    assert summary["flat"]["box_mass_ratio"]["ci"] == pytest.approx([1.0, 1.0])
    assert summary["gradcam"]["box_mass_ratio"]["minus_flat"]["delta"] == pytest.approx(1 + base.mean())
    low, high = summary["gradcam"]["pointing"]["ci"]
    assert low < base.mean() < high
    assert "minus_gradcam" not in summary["gradcam"]["pointing"]


# ----------------------------------------------------------------------------- end to end


@pytest.fixture
def planted_fracatlas(tmp_path):
    """A FracAtlas-layout tree of small noise images: 12 fractured hands with annotations listed at
    twice the file size, except IMG0000002 (listed rotated: cannot be scaled) and IMG0000003 (none),
    and 4 normal hands. Returns the root and an index of every image (path, label)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "FracAtlas"
    rows, coco = [], {"images": [], "annotations": []}
    for number in range(16):
        label = int(number < 12)
        name = f"IMG{number:07d}.jpg"
        folder = root / "images" / ("Fractured" if label else "Non_fractured")
        folder.mkdir(parents=True, exist_ok=True)
        height, width = (40, 30) if number % 2 else (30, 40)
        Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)).save(folder / name)
        rows.append({"image_id": name, "hand": 1, "leg": 0, "hip": 0, "shoulder": 0, "mixed": 0, "fractured": label})
        if label and number != 3:
            listed = (2 * width, 2 * height) if number != 2 else (2 * height, 3 * width)
            coco["images"].append({"id": number, "width": listed[0], "height": listed[1], "file_name": name})
            coco["annotations"].append(
                {"image_id": number, "bbox": [10, 12, 20, 16], "segmentation": [[10, 12, 30, 12, 10, 28]]}
            )
    pd.DataFrame(rows).to_csv(root / "dataset.csv", index=False)
    (root / "Annotations" / "COCO JSON").mkdir(parents=True)
    (root / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json").write_text(json.dumps(coco))
    index = pd.DataFrame(
        {
            "path": [
                str(root / "images" / ("Fractured" if r["fractured"] else "Non_fractured") / r["image_id"])
                for r in rows
            ],
            "label": [r["fractured"] for r in rows],
        }
    )
    return root, index


def test_run_explain_writes_scores_summary_table_and_figures(tmp_path, planted_fracatlas, untrained_checkpoint):
    from mura_utils.explain import localization_section, run_explain

    root, index = planted_fracatlas
    checkpoint = untrained_checkpoint(tmp_path / "best.pt", img_size=48)
    out = tmp_path / "explain"
    result = run_explain(
        checkpoint,
        root,
        out,
        methods=["gradcam", "eigencam"],
        limit=5,  # the first five fractured images by name: IMG0000000 to IMG0000005 but the unannotated 3
        n_resamples=50,
        road_percentiles=(50,),
        road_limit=1,
        device="cpu",
        per_group=2,
        index=index,  # every image, so the planted cases are all there
    )
    assert result["images"] == 4 and result["road"]["images"] == 1
    assert [entry["image"] for entry in result["skipped"]] == ["IMG0000002.jpg"]
    assert result["unannotated"] == ["IMG0000003.jpg"]
    per_image = pd.read_csv(out / "per_image.csv")
    assert sorted(per_image["method"].unique()) == ["centre", "eigencam", "flat", "gradcam"]
    assert len(per_image) == 4 * 4
    assert per_image.loc[per_image["method"] == "gradcam", "road_combined"].notna().sum() == 1
    np.testing.assert_allclose(per_image.loc[per_image["method"] == "flat", "box_mass_ratio"], 1.0)
    assert (per_image["pointing_tol15"] >= per_image["pointing"]).all()  # the tolerance only adds hits
    stored = json.loads((out / "localization.json").read_text())
    assert set(stored["summary"]) == {"gradcam", "eigencam", "centre", "flat"}
    assert "minus_gradcam" in stored["summary"]["eigencam"]["pointing"]
    assert stored["pointing"]["tolerance_px"] == 15
    for method in ("gradcam", "eigencam", "flat"):  # the tolerant game, paired against the centre, as the strict
        assert {"mean", "ci", "minus_centre"} <= set(stored["summary"][method]["pointing_tol15"])
        assert {"mean", "ci", "minus_centre"} <= set(stored["summary"][method]["pointing"])
    assert "road_combined" not in stored["summary"]["flat"]  # ROAD only for the CAM methods
    table = pd.read_csv(out / "methods.csv")
    assert table["method"].tolist() == ["gradcam", "eigencam", "centre", "flat"]
    for column in ("pointing_tol15", "pointing_tol15_minus_gradcam_ci_low", "pointing_tol15_minus_centre_ci_high"):
        assert column in table
    gradcam = table.set_index("method").loc["gradcam"]
    centre_difference = stored["summary"]["gradcam"]["pointing_tol15"]["minus_centre"]
    assert gradcam["pointing_tol15_minus_centre"] == pytest.approx(centre_difference["delta"])
    markdown, figures = localization_section(out, relative_to=tmp_path)
    assert "| Grad-CAM |" in markdown and "Δ vs Grad-CAM" in markdown and "baseline: flat map" in markdown
    assert "Pointing game (15 px)" in markdown and "Pointing game (15 px), Δ vs image centre" in markdown
    # a folder written before the tolerant game (no pointing_tol15, no differences to the centre) still renders
    old = table[[c for c in table if "pointing_tol15" not in c and "minus_centre" not in c]]
    old.to_csv(out / "methods.csv", index=False)
    for scores in stored["summary"].values():
        scores.pop("pointing_tol15")
    del stored["pointing"]
    (out / "localization.json").write_text(json.dumps(stored))
    markdown, _ = localization_section(out, relative_to=tmp_path)
    assert "| Grad-CAM |" in markdown and "15 px" not in markdown and "Δ vs image centre" not in markdown, markdown
    assert [path.name for path in figures] == ["gallery.png", "methods.png"]
    assert "(explain/gallery.png)" in markdown and all(path.stat().st_size > 0 for path in figures)


def test_cli_explain_scores_the_fractured_test_images_and_refuses_unknown_methods(
    tmp_path, planted_fracatlas, untrained_checkpoint
):
    from mura_utils import cli
    from mura_utils.data.registry import load_index

    root, _ = planted_fracatlas
    test = load_index(root, splits=("test",))
    expected = {Path(path).name for path in test.loc[test["label"] == 1, "path"]} - {"IMG0000002.jpg", "IMG0000003.jpg"}
    checkpoint = untrained_checkpoint(tmp_path / "best.pt", img_size=48)
    arguments = ["explain", "--checkpoint", str(checkpoint), "--data-root", str(root), "--out", str(tmp_path / "x")]
    arguments += ["--methods", "hirescam", "--no-road", "--bootstrap", "20", "--device", "cpu"]
    assert cli.main(arguments) == 0
    result = json.loads((tmp_path / "x" / "localization.json").read_text())
    assert result["methods"] == ["hirescam"] and result["dataset"] == "FracAtlas" and result["split"] == "test"
    assert set(pd.read_csv(tmp_path / "x" / "per_image.csv")["image"]) == expected
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([*arguments[:7], "--methods", "gradcan"])


def test_cli_explain_refuses_a_dataset_without_boxes(tmp_path, tiny_mura, untrained_checkpoint, capsys):
    from mura_utils import cli

    checkpoint = untrained_checkpoint(tmp_path / "best.pt", img_size=48)
    arguments = ["explain", "--checkpoint", str(checkpoint), "--data-root", str(tiny_mura), "--out", str(tmp_path)]
    assert cli.main(arguments) == 2
    assert "has no fracture boxes" in capsys.readouterr().err
