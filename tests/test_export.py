"""``mura export``: ONNX files of single models and ensembles carry their preprocessing contract and
give the PyTorch checkpoint's probabilities (within 1e-4) when run with onnxruntime on the CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from mura_utils.cli import main as cli_main  # noqa: E402
from mura_utils.config import TrainConfig  # noqa: E402
from mura_utils.data.constants import BODY_PARTS  # noqa: E402
from mura_utils.inference.onnx_export import export_onnx, read_contract  # noqa: E402
from mura_utils.inference.predict import predict_paths  # noqa: E402
from mura_utils.models.checkpoint import save_checkpoint  # noqa: E402
from mura_utils.models.ensemble import make_ensemble  # noqa: E402
from mura_utils.models.networks import build_model  # noqa: E402


def make_checkpoint(path, model_name, img_size, multitask=True, seed=0):
    torch.manual_seed(seed)
    model = build_model(model_name, pretrained=False, multitask=multitask)
    config = TrainConfig(model=model_name, img_size=img_size, multitask=multitask)
    save_checkpoint(path, model, config, epoch=1, img_size=img_size, threshold=0.35)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    paths = []
    for number, shape in enumerate([(40, 29), (33, 50), (64, 64), (70, 31)]):
        paths.append(folder / f"image{number}.png")
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("single") / "resnet18.pt", "resnet18", 32)


@pytest.mark.parametrize("tta", [False, True])
def test_onnx_matches_pytorch_for_a_single_model(single, images, tmp_path, tta):
    contract = export_onnx(single, tmp_path / "m.onnx")
    assert contract["inputs"][0]["img_size"] == 32 and contract["model_names"] == ["resnet18"]
    pytorch = predict_paths(images, single, device="cpu", tta=tta)
    exported = predict_paths(images, tmp_path / "m.onnx", tta=tta)
    np.testing.assert_allclose(exported["probability"], pytorch["probability"], atol=1e-4)
    np.testing.assert_allclose(exported["body_part_probability"], pytorch["body_part_probability"], atol=1e-4)
    assert (exported["predicted_body_part"] == pytorch["predicted_body_part"]).all()
    assert (exported["study_prediction"] == pytorch["study_prediction"]).all()


def test_onnx_metadata_holds_the_preprocessing_contract(single, tmp_path):
    export_onnx(single, tmp_path / "m.onnx")
    graph = onnx.load(str(tmp_path / "m.onnx"))
    metadata = {entry.key: entry.value for entry in graph.metadata_props}
    contract = json.loads(metadata["mura_contract"])
    assert contract == read_contract(tmp_path / "m.onnx")
    assert contract["threshold"] == pytest.approx(0.35) and float(metadata["threshold"]) == pytest.approx(0.35)
    assert contract["body_parts"] == list(BODY_PARTS) and "letterbox" in contract
    assert {"mean", "std", "img_size", "model_name"} <= set(contract["inputs"][0])
    assert [node.name for node in graph.graph.input] == ["image_0"]
    assert [node.name for node in graph.graph.output] == ["probability", "body_part_probabilities"]


def test_onnx_ensemble_of_different_sizes_and_heads_matches_pytorch(single, images, tmp_path):
    other = make_checkpoint(tmp_path / "convnext.pt", "convnext_atto", 48, multitask=False, seed=1)
    make_ensemble([single, other], tmp_path / "e.pt")
    assert cli_main(["export", "--checkpoint", str(tmp_path / "e.pt"), "--out", str(tmp_path / "e.onnx")]) == 0
    contract = read_contract(tmp_path / "e.onnx")
    assert [entry["img_size"] for entry in contract["inputs"]] == [32, 48] and contract["ensemble"]
    pytorch = predict_paths(images, tmp_path / "e.pt", device="cpu")
    exported = predict_paths(images, tmp_path / "e.onnx")
    np.testing.assert_allclose(exported["probability"], pytorch["probability"], atol=1e-4)


def test_cli_predict_runs_an_onnx_file_and_refuses_cam(single, images, tmp_path, capsys):
    export_onnx(single, tmp_path / "m.onnx")
    assert cli_main(["predict", str(images[0]), "--checkpoint", str(tmp_path / "m.onnx"), "--format", "json"]) == 0
    studies = json.loads(capsys.readouterr().out)
    assert len(studies) == 1 and 0 <= studies[0]["study_probability"] <= 1
    arguments = ["predict", str(images[0]), "--checkpoint", str(tmp_path / "m.onnx"), "--cam-dir", str(tmp_path)]
    assert cli_main(arguments) == 2
    assert "Grad-CAM" in capsys.readouterr().err
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    assert cli_main(["predict", str(images[0]), "--checkpoint", str(tmp_path / "junk.onnx")]) == 2
    assert "junk.onnx" in capsys.readouterr().err
