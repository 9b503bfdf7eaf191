"""``mura ensemble``: one checkpoint file of several members (backbones and input sizes may differ)
whose probability is the mean of its members' in predict and evaluate; Grad-CAM; plain contents."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mura_utils.cli import main as cli_main
from mura_utils.config import TrainConfig
from mura_utils.evaluation.predictions import evaluate_checkpoint
from mura_utils.inference.predict import predict_paths
from mura_utils.models.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from mura_utils.models.ensemble import EnsembleNet, make_ensemble
from mura_utils.models.networks import build_model
from mura_utils.models.restore import load_model


def make_checkpoint(path, model_name, img_size, multitask=True, threshold=0.4, seed=0):
    torch.manual_seed(seed)
    model = build_model(model_name, pretrained=False, multitask=multitask)
    config = TrainConfig(model=model_name, img_size=img_size, multitask=multitask)
    save_checkpoint(path, model, config, epoch=1, img_size=img_size, threshold=threshold)
    return path


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    folder = tmp_path_factory.mktemp("members")
    return [
        make_checkpoint(folder / "resnet18.pt", "resnet18", 32, threshold=0.4),
        make_checkpoint(folder / "custom_cnn.pt", "custom_cnn", 48, multitask=False, threshold=0.6, seed=1),
    ]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for number, shape in enumerate([(40, 29), (33, 50), (64, 64)]):
        paths.append(folder / f"image{number}.png")
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(paths[-1])
    return paths


def test_ensemble_file_holds_only_plain_types_and_its_members(members, tmp_path):
    ensemble = make_ensemble(members, tmp_path / "e.pt")
    loaded = torch.load(tmp_path / "e.pt", weights_only=True)  # no pickled objects
    assert loaded["kind"] == "ensemble" and read_checkpoint(tmp_path / "e.pt")["model_name"] == "ensemble"
    assert [m["model_name"] for m in loaded["members"]] == ["resnet18", "custom_cnn"]
    assert [m["img_size"] for m in loaded["members"]] == [32, 48]
    assert loaded["threshold"] == pytest.approx(0.5) == ensemble["threshold"]  # the members' mean by default
    assert loaded["multitask"]
    model, _ = load_model(tmp_path / "e.pt")
    assert isinstance(model, EnsembleNet) and len(model.models) == 2


def test_predict_probability_is_the_members_mean_and_cam_is_drawn(members, images, tmp_path):
    make_ensemble(members, tmp_path / "e.pt", threshold=0.45)
    alone = [predict_paths(images, member, device="cpu") for member in members]
    together = predict_paths(images, tmp_path / "e.pt", device="cpu", cam_dir=tmp_path / "cams")
    expected = (alone[0]["probability"] + alone[1]["probability"]) / 2
    np.testing.assert_allclose(together["probability"], expected, atol=1e-6)
    assert (together["probability"] - alone[0]["probability"]).abs().max() > 1e-4  # the second member counts
    # body part: only the multitask member has that head
    np.testing.assert_allclose(together["body_part_probability"], alone[0]["body_part_probability"], atol=1e-6)
    assert (together["threshold"] == 0.45).all()
    for path, cam in zip(together["path"], together["cam_path"]):  # members' mean map, on the image at its size
        height, width = np.asarray(Image.open(path).convert("L")).shape
        assert Image.open(cam).size[0] >= 2 * width and Image.open(cam).size[1] > height


def test_nested_ensembles_flatten(members, tmp_path):
    make_ensemble(members[:1], tmp_path / "one.pt")
    both = make_ensemble([tmp_path / "one.pt", members[1]], tmp_path / "both.pt")
    assert [m["model_name"] for m in both["members"]] == ["resnet18", "custom_cnn"]


def test_evaluate_runs_each_member_at_its_own_size(members, tiny_mura, tmp_path):
    make_ensemble(members, tmp_path / "e.pt")
    cache = tmp_path / "cache"
    alone = [evaluate_checkpoint(m, tiny_mura, device="cpu", cache_dir=cache, progress=False)[0] for m in members]
    together, metrics = evaluate_checkpoint(tmp_path / "e.pt", tiny_mura, device="cpu", cache_dir=cache, progress=False)
    assert metrics["model"] == "ensemble"
    np.testing.assert_allclose(
        together["probability"], (alone[0]["probability"] + alone[1]["probability"]) / 2, atol=1e-5
    )


def test_cli_ensemble_and_bad_members_are_named(members, tmp_path, capsys):
    assert cli_main(["ensemble", *map(str, members), "--out", str(tmp_path / "cli.pt")]) == 0
    assert "ensemble of 2" in capsys.readouterr().out
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert cli_main(["ensemble", str(members[0]), str(tmp_path / "junk.pt"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "junk.pt" in capsys.readouterr().err
    checkpoint = torch.load(tmp_path / "cli.pt", weights_only=True)
    checkpoint["members"][1]["state_dict"].pop("abnormality_head.weight")
    torch.save(checkpoint, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="broken.pt.*member 1 .'custom_cnn'"):
        load_model(tmp_path / "broken.pt")


def test_gradcam_of_a_loaded_ensemble_is_the_mean_of_its_members(members, tmp_path):
    from mura_utils.explain.cam import cam_heatmaps

    make_ensemble(members, tmp_path / "e.pt")
    model, checkpoint = load_model(tmp_path / "e.pt")
    images = torch.randint(0, 256, (2, 1, 48, 48), dtype=torch.uint8)
    heatmaps = cam_heatmaps(model, checkpoint["model_name"], images)
    assert heatmaps.shape == (2, 48, 48) and np.isfinite(heatmaps).all()
    second = model.members[1]  # custom_cnn runs at 48 px: its heatmap enters unchanged
    alone = cam_heatmaps(second.model, second.model_name, images)
    assert not np.allclose(heatmaps, alone)  # the other member counts too


def test_ensemble_records_where_its_threshold_came_from(members, tmp_path):
    assert make_ensemble(members, tmp_path / "mean.pt")["threshold_source"] == "mean of members' validation thresholds"
    assert make_ensemble(members, tmp_path / "given.pt", threshold=0.3)["threshold_source"] == "given"
    nested = make_ensemble([tmp_path / "mean.pt", members[0]], tmp_path / "nested.pt", threshold=0.35)
    assert nested["threshold"] == 0.35 and nested["threshold_source"] == "given"  # an explicit threshold is kept
    assert torch.load(tmp_path / "given.pt", weights_only=True)["threshold_source"] == "given"


def test_evaluate_with_the_val_threshold_of_an_ensemble_warns_where_it_came_from(members, tiny_mura, tmp_path):
    make_ensemble(members, tmp_path / "e.pt")
    command = ["evaluate", "--checkpoint", str(tmp_path / "e.pt"), "--data-root", str(tiny_mura), "--device", "cpu"]
    command += ["--cache-dir", str(tmp_path / "cache"), "--no-progress", "--bootstrap", "0", "--threshold", "val"]
    with pytest.warns(UserWarning, match=r"threshold 0.5000 of this ensemble.*mean of the members' validation"):
        assert cli_main([*command, "--out", str(tmp_path / "out")]) == 0
    assert '"threshold_source": "mean of members' in (tmp_path / "out" / "metrics.json").read_text()
    make_ensemble(members, tmp_path / "given.pt", threshold=0.3)
    with pytest.warns(UserWarning, match=r"threshold 0.3000 .*given when the ensemble was made"):
        evaluate_checkpoint(
            tmp_path / "given.pt",
            tiny_mura,
            threshold="val",
            device="cpu",
            progress=False,
            cache_dir=tmp_path / "cache",
        )


def test_a_checkpoint_keeps_the_normalization_it_was_trained_with(tmp_path):
    """mean/std travel in the file, so a later timm default cannot change how old weights are fed;
    files written before that fall back to the model's own."""
    from mura_utils.models.ensemble import checkpoint_normalization, member_entry, members_of
    from mura_utils.models.registry import get_spec

    path = make_checkpoint(tmp_path / "resnet18.pt", "resnet18", 32)
    spec = get_spec("resnet18")
    checkpoint = read_checkpoint(path)
    assert (checkpoint["mean"], checkpoint["std"]) == pytest.approx((spec.mean, spec.std))
    moved = {**checkpoint, "mean": 0.25, "std": 0.5}
    model, _ = load_model(path)
    assert (members_of(model, moved)[0].mean, members_of(model, moved)[0].std) == (0.25, 0.5)
    assert (member_entry(moved, path)["mean"], member_entry(moved, path)["std"]) == (0.25, 0.5)
    older = {key: value for key, value in checkpoint.items() if key not in ("mean", "std")}
    assert checkpoint_normalization(older) == (spec.mean, spec.std)
