"""Model factory: four registry entries and any timm name, one input channel, heads, Grad-CAM layers,
offline behaviour, local weights."""

from __future__ import annotations

import time

import numpy as np
import pytest
import timm
import torch

from mura_utils.models.networks import (
    HeadOutput,
    PretrainedWeightsUnavailable,
    build_model,
    cam_target_layer,
    find_cam_layer,
)
from mura_utils.models.registry import MODEL_REGISTRY, get_spec


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_every_model_takes_one_channel_and_has_both_heads(name):
    model = build_model(name, pretrained=False).eval()
    with torch.no_grad():
        outputs = model(torch.randn(2, 1, 64, 64))
    assert outputs["abnormality"].shape == (2,)
    assert outputs["body_part"].shape == (2, 7)
    assert isinstance(cam_target_layer(model, name), torch.nn.Module)


def test_single_task_drops_the_body_part_head():
    model = build_model("custom_cnn", multitask=False).eval()
    assert set(model(torch.randn(1, 1, 64, 64))) == {"abnormality"}
    assert not model.multitask


def test_abnormality_head_never_sees_the_body_part():
    """forward takes only images; the body part is an output, not an input."""
    model = build_model("custom_cnn").eval()
    with pytest.raises(TypeError):
        model(torch.randn(1, 1, 64, 64), torch.tensor([3]))


def test_head_output_wrapper_returns_a_tensor_for_grad_cam():
    model = build_model("custom_cnn").eval()
    assert HeadOutput(model)(torch.randn(2, 1, 64, 64)).shape == (2, 1)
    assert HeadOutput(model, "body_part")(torch.randn(2, 1, 64, 64)).shape == (2, 7)


def test_custom_cnn_is_small_and_pools_globally():
    model = build_model("custom_cnn")
    assert sum(p.numel() for p in model.parameters()) < 3_000_000
    assert model(torch.randn(2, 1, 96, 160))["abnormality"].shape == (2,)  # any input size


def test_pretrained_offline_fails_fast_with_a_way_out(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(PretrainedWeightsUnavailable, match="weights_path.*pretrained=False"):
        build_model("efficientnet_b0", pretrained=True)
    assert time.perf_counter() - started < 30


def test_local_weights_file_sums_rgb_kernels_into_one_channel(tmp_path):
    """weights_path is read as tensors and handed to timm's loader, which adapts the 3-channel stem by summing."""
    rgb = timm.create_model("resnet50", pretrained=False, num_classes=1000)
    weights = tmp_path / "resnet50_rgb.pth"
    torch.save(rgb.state_dict(), weights)
    model = build_model("resnet50", pretrained=True, weights_path=str(weights))
    stem = model.backbone.conv1.weight
    assert stem.shape[1] == 1
    torch.testing.assert_close(stem, rgb.conv1.weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.backbone.layer4[0].conv1.weight, rgb.layer4[0].conv1.weight)


def test_safetensors_and_wrapped_weights_files_load_with_summed_stem(tmp_path):
    """A timm model.safetensors, a training checkpoint's {"state_dict": ...} and a DDP {"model": {"module.*"}}
    all give the same one-channel model: stem summed, classifier dropped, nothing kept in pretrained_cfg."""
    from safetensors.torch import save_file

    rgb = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    state = rgb.state_dict()
    save_file(state, tmp_path / "model.safetensors")
    torch.save({"epoch": 90, "state_dict": state}, tmp_path / "checkpoint.pth")
    torch.save({"model": {f"module.{key}": value for key, value in state.items()}}, tmp_path / "ddp.pt")
    for name in ("model.safetensors", "checkpoint.pth", "ddp.pt"):
        backbone = build_model("resnet18", pretrained=True, weights_path=str(tmp_path / name)).backbone
        torch.testing.assert_close(backbone.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
        torch.testing.assert_close(backbone.layer4[1].conv2.weight, rgb.layer4[1].conv2.weight)
        assert "fc.weight" not in backbone.state_dict() and "state_dict" not in backbone.pretrained_cfg


def test_weights_file_that_is_not_a_state_dict_is_named(tmp_path):
    from mura_utils.models.weights import WeightsFileError

    torch.save({"conv1.weight": torch.zeros(1), "arch": "resnet18"}, tmp_path / "odd.pth")
    with pytest.raises(WeightsFileError, match=r"odd\.pth: entry 'arch' is a str, not a tensor"):
        build_model("resnet18", pretrained=True, weights_path=str(tmp_path / "odd.pth"))
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WeightsFileError, match=r"broken\.safetensors: not a readable safetensors file"):
        build_model("resnet18", pretrained=True, weights_path=str(tmp_path / "broken.safetensors"))
    (tmp_path / "broken.pth").write_bytes(b"not a pickle")
    with pytest.raises(WeightsFileError, match=r"broken\.pth: not a readable PyTorch weights file"):
        build_model("resnet18", pretrained=True, weights_path=str(tmp_path / "broken.pth"))


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_model("resnet50", pretrained=True, weights_path=str(tmp_path / "nope.pth"))


# --- any timm backbone by name -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto", "efficientnet_b3"])
def test_any_timm_model_by_name_has_one_channel_both_heads_and_a_spatial_cam_layer(name):
    from mura_utils.explain.cam import cam_heatmaps

    model = build_model(name, pretrained=False).eval()
    with torch.no_grad():
        outputs = model(torch.randn(2, 1, 64, 64))
    assert outputs["abnormality"].shape == (2,) and outputs["body_part"].shape == (2, 7)
    layer = cam_target_layer(model, name)
    maps = []
    handle = layer.register_forward_hook(lambda _module, _inputs, output: maps.append(output))
    with torch.no_grad():
        model(torch.randn(1, 1, 64, 64))
    handle.remove()
    assert maps[0].ndim == 4 and min(maps[0].shape[-2:]) > 1  # a feature map, not pooled features
    images = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8)
    heatmaps = cam_heatmaps(model, name, images)
    assert heatmaps.shape == (2, 64, 64) and np.isfinite(heatmaps).all()


def test_convnext_cam_layer_is_the_last_stage_not_the_pooled_head_norm():
    model = build_model("convnext_atto", pretrained=False)
    assert find_cam_layer(model.backbone) == "stages"
    assert find_cam_layer(build_model("resnet18", pretrained=False).backbone) == "layer4"


def test_timm_spec_comes_from_the_pretrained_config():
    from timm.models import get_pretrained_cfg

    assert get_spec("efficientnet_b3").default_img_size == get_pretrained_cfg("efficientnet_b3").input_size[-1]
    clip = get_spec("vit_base_patch16_clip_224.openai")
    assert clip.mean == pytest.approx(sum(get_pretrained_cfg("vit_base_patch16_clip_224.openai").mean) / 3)
    assert clip.mean != pytest.approx(get_spec("resnet18").mean)  # each model's own statistics
    assert get_spec("efficientnet_b0") is MODEL_REGISTRY["efficientnet_b0"]  # seed models keep their entries


def test_unknown_model_name_suggests_close_matches():
    with pytest.raises(ValueError, match=r"unknown model 'convnext_tinny'.*did you mean.*convnext_tiny"):
        build_model("convnext_tinny", pretrained=False)


def test_three_channel_weights_file_of_a_timm_model_loads_with_summed_stem(tmp_path):
    rgb = timm.create_model("convnext_atto", pretrained=False, num_classes=1000)
    weights = tmp_path / "convnext_atto_rgb.pth"
    torch.save(rgb.state_dict(), weights)
    model = build_model("convnext_atto", pretrained=True, weights_path=str(weights))
    torch.testing.assert_close(model.backbone.stem[0].weight, rgb.stem[0].weight.sum(dim=1, keepdim=True))
    torch.testing.assert_close(
        model.backbone.stages[3].blocks[0].mlp.fc1.weight, rgb.stages[3].blocks[0].mlp.fc1.weight
    )


# --- fixed-input-size models (ViT, Swin, ...) -----------------------------------------------------


def test_fixed_input_size_model_with_another_img_size_is_refused_at_construction():
    from mura_utils.config import TrainConfig

    assert get_spec("vit_tiny_patch16_224").fixed_input_size
    assert not get_spec("convnext_atto").fixed_input_size and not get_spec("custom_cnn").fixed_input_size
    with pytest.raises(ValueError, match=r"vit_tiny_patch16_224.*only takes 224 px.*img_size 48"):
        TrainConfig(model="vit_tiny_patch16_224", img_size=48)
    TrainConfig(model="vit_tiny_patch16_224", img_size=224)  # its own size is fine
    TrainConfig(model="vit_tiny_patch16_224")  # default: the model's own size
    TrainConfig(model="convnext_atto", img_size=48)  # convolutional models take any size


def test_convnext_grad_cam_at_a_small_input_uses_a_layer_larger_than_1x1():
    from mura_utils.explain.cam import cam_heatmaps

    torch.manual_seed(0)
    model = build_model("convnext_atto", pretrained=False).eval()
    assert find_cam_layer(model.backbone, 32) != "stages"  # the last stage is 1x1 at 32 px
    layer = cam_target_layer(model, "convnext_atto", 32)
    maps = []
    handle = layer.register_forward_hook(lambda _module, _inputs, output: maps.append(output))
    with torch.no_grad():
        model(torch.zeros(1, 1, 32, 32))
    handle.remove()
    assert min(maps[0].shape[-2:]) > 1
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 1, 32, 32), dtype=np.uint8))
    heatmaps = cam_heatmaps(model, "convnext_atto", images)
    assert heatmaps.shape == (2, 32, 32) and all(heatmap.max() > heatmap.min() for heatmap in heatmaps)
    assert cam_target_layer(model, "convnext_atto") is model.backbone.get_submodule("stages")  # old call: 128 px


def test_grad_cam_on_an_input_too_small_for_any_feature_map_says_so():
    backbone = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=16), torch.nn.AdaptiveAvgPool2d(1))
    assert find_cam_layer(backbone, 64) == "0"
    with pytest.raises(ValueError, match="1x1 at 16 px.*Grad-CAM needs a larger input"):
        find_cam_layer(backbone, 16)  # the stride-16 conv is 1x1 at 16 px
    with pytest.raises(ValueError, match="at 16 px"):  # a ConvNeXt cannot even run at 16 px: said clearly too
        cam_target_layer(build_model("convnext_atto", pretrained=False), "convnext_atto", 16)


def test_registry_cam_layer_is_kept_while_it_is_spatial():
    model = build_model("custom_cnn", pretrained=False)
    assert cam_target_layer(model, "custom_cnn", 48) is model.backbone.get_submodule("blocks.4.2")
