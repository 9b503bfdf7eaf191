"""Model registry and factory: timm backbones with one input channel, an abnormality head and an
optional body-part head.

Any timm model name works besides the four seed entries of ``MODEL_REGISTRY``: its input size and
mean/std come from timm's pretrained config (RGB statistics averaged to one channel) and its
Grad-CAM layer is found by running it once (the last layer with a spatial feature map).

The abnormality head sees only image features: the body part is a second *output* (multi-task
learning), never an input, so nothing at test time depends on a ground-truth body part.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager

import timm
import torch
from torch import nn

from mura_utils.data.constants import BODY_PARTS
from mura_utils.models.registry import ModelSpec, get_spec
from mura_utils.models.weights import create_from_weights_file


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet weights could not be loaded (usually: no network); the message says what to do."""


class CustomCNN(nn.Module):
    """A small convnet trained from scratch: five conv-BN-ReLU-maxpool blocks, global pooling.

    Few channels at high resolution and global average pooling (not a huge flatten + dense
    layer) keep it at ~0.4M parameters and ~80 MMAC at 128 px, so it trains on a laptop CPU and
    works at any input size.
    """

    def __init__(self, in_chans: int = 1, widths: tuple[int, ...] = (16, 32, 64, 128, 256)):
        super().__init__()
        blocks, channels = [], in_chans
        for width in widths:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(images)).flatten(1)


class RadiographNet(nn.Module):
    """Backbone -> pooled features -> {"abnormality": (N,) logit, "body_part": (N, parts) logits}; the
    body-part vocabulary (MURA's seven by default) is the dataset's, stored in the checkpoint."""

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        multitask: bool = True,
        dropout: float = 0.2,
        num_body_parts: int = len(BODY_PARTS),
    ):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.abnormality_head = nn.Linear(num_features, 1)
        self.body_part_head = nn.Linear(num_features, num_body_parts) if multitask else None

    @property
    def multitask(self) -> bool:
        return self.body_part_head is not None

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.dropout(self.backbone(images))
        outputs = {"abnormality": self.abnormality_head(features).squeeze(1)}
        if self.body_part_head is not None:
            outputs["body_part"] = self.body_part_head(features)
        return outputs


class HeadOutput(nn.Module):
    """Wraps RadiographNet so it returns one head's logits as a tensor (grad-cam cannot take a dict)."""

    def __init__(self, model: RadiographNet, head: str = "abnormality"):
        super().__init__()
        self.model, self.head = model, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)[self.head]
        return logits.unsqueeze(1) if logits.ndim == 1 else logits


_NOT_CAM_LAYERS = (nn.Identity, nn.Dropout, nn.ReLU, nn.GELU, nn.SiLU)


@torch.no_grad()
def _feature_map_sizes(backbone: nn.Module, probe_size: int) -> list[tuple[str, tuple[int, int]]]:
    """(name, (H, W)) of every module with a (N,C,H,W) output, in execution order, from one blank
    image of ``probe_size`` px."""
    found: list[tuple[str, tuple[int, int]]] = []
    hooks = [
        module.register_forward_hook(
            lambda _module, _inputs, output, name=name: (
                found.append((name, tuple(output.shape[-2:])))
                if isinstance(output, torch.Tensor) and output.ndim == 4
                else None
            )
        )
        for name, module in backbone.named_modules()
        if name and not isinstance(module, _NOT_CAM_LAYERS)
    ]
    was_training = backbone.training
    try:
        parameter = next(backbone.parameters(), None)
        device = parameter.device if parameter is not None else "cpu"
        backbone.eval()(torch.zeros(1, 1, probe_size, probe_size, device=device))
    except Exception as error:  # e.g. a transformer with a fixed input size
        raise ValueError(
            f"cannot probe {type(backbone).__name__} for a Grad-CAM layer at {probe_size} px ({error}); "
            "a convolutional model needs a larger input, a transformer its own fixed size"
        ) from error
    finally:
        backbone.train(was_training)
        for hook in hooks:
            hook.remove()
    return found


def find_cam_layer(backbone: nn.Module, probe_size: int = 128) -> str:
    """Name of the layer Grad-CAM should use at ``probe_size`` px inputs (pass the model's img_size):
    the last module (in execution order) whose output is a spatial (N,C,H,W) feature map with H,W > 1,
    found by running one blank image. For BatchNorm CNNs this is the last block or norm (``bn2``,
    ``layer4``); for ConvNeXt-style LayerNorm models the last stage (their head norm works on pooled
    features), or an earlier one where the input is so small that the last is 1x1."""
    maps = _feature_map_sizes(backbone, probe_size)
    spatial = [name for name, size in maps if min(size) > 1]
    if not spatial and maps:
        raise ValueError(
            f"every feature map of {type(backbone).__name__} is 1x1 at {probe_size} px, so Grad-CAM would be "
            "blank: Grad-CAM needs a larger input (train or evaluate at a larger img_size)"
        )
    if not spatial:
        raise ValueError(
            f"no spatial feature map in {type(backbone).__name__} for Grad-CAM (transformer token "
            "outputs need a reshape); use a CNN-style model for --cam-dir"
        )
    return spatial[-1]


def cam_target_layer(model: RadiographNet, name: str, img_size: int | None = None) -> nn.Module:
    """The Grad-CAM layer of a built model: the registry's, or found automatically. With ``img_size``
    (the size the model sees) a layer that is 1x1 at that size is replaced by the last larger one."""
    layer = get_spec(name).cam_layer
    if img_size is None:
        if layer is None:
            layer = getattr(model, "_cam_layer", None) or find_cam_layer(model.backbone)
            model._cam_layer = layer  # a plain attribute: not in the state dict
        return model.backbone.get_submodule(layer)
    chosen = getattr(model, "_cam_layers", {})  # {img_size: layer name}; a plain attribute, not in the state dict
    if img_size not in chosen:
        if layer is None or not _is_spatial_at(model.backbone, layer, img_size):
            layer = find_cam_layer(model.backbone, img_size)
        chosen[img_size] = layer
        model._cam_layers = chosen
    return model.backbone.get_submodule(chosen[img_size])


@torch.no_grad()
def _is_spatial_at(backbone: nn.Module, layer: str, img_size: int) -> bool:
    """Whether ``layer``'s output is a feature map larger than 1x1 at ``img_size`` px."""
    shapes: list[torch.Size] = []
    hook = backbone.get_submodule(layer).register_forward_hook(lambda _m, _i, output: shapes.append(output.shape))
    was_training = backbone.training
    try:
        parameter = next(backbone.parameters(), None)
        device = parameter.device if parameter is not None else "cpu"
        backbone.eval()(torch.zeros(1, 1, img_size, img_size, device=device))
    finally:
        backbone.train(was_training)
        hook.remove()
    return bool(shapes) and len(shapes[-1]) == 4 and min(shapes[-1][-2:]) > 1


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def _hub_offline():
    """Make huggingface_hub use only its local cache, so an offline machine fails at once
    instead of after minutes of retries."""
    import huggingface_hub.constants as hub_constants

    previous = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = previous


def _create_backbone(spec: ModelSpec, pretrained: bool, weights_path: str | None) -> nn.Module:
    kwargs = dict(in_chans=1, num_classes=0)  # in_chans=1 sums the pretrained RGB kernels
    if not pretrained:
        return timm.create_model(spec.timm_name, pretrained=False, **kwargs)
    if weights_path is not None:  # read by weights.py (tensors only), never unpickled by timm
        return create_from_weights_file(spec.timm_name, weights_path, **kwargs)
    online = _hub_reachable()
    try:
        if online:
            return timm.create_model(spec.timm_name, pretrained=True, **kwargs)
        with _hub_offline():
            return timm.create_model(spec.timm_name, pretrained=True, **kwargs)
    except Exception as error:  # timm/hub raise many types; all mean "no weights"
        raise PretrainedWeightsUnavailable(
            f"cannot load ImageNet weights for timm model {spec.timm_name!r} "
            f"({'download failed' if online else 'no network and not in the Hugging Face cache'}: "
            f"{type(error).__name__}: {error}). Either download them on a machine with internet "
            f"(https://huggingface.co/timm/{spec.timm_name}, file model.safetensors) and pass "
            "weights_path=... (CLI: --weights PATH), or train from scratch with pretrained=False "
            "(CLI: --no-pretrained)."
        ) from error


def build_model(
    name: str,
    pretrained: bool = True,
    multitask: bool = True,
    weights_path: str | None = None,
    dropout: float = 0.2,
    num_body_parts: int = len(BODY_PARTS),
) -> RadiographNet:
    """Create a one-channel model by registry name (custom_cnn, resnet50, densenet169,
    efficientnet_b0) or any timm model name (the stem's RGB kernels are summed to one channel).
    ``pretrained`` loads ImageNet weights through timm (or the local file ``weights_path``);
    ``num_body_parts`` is the size of the dataset's body-part vocabulary."""
    spec = get_spec(name)
    if spec.timm_name is None:
        backbone = CustomCNN()
        num_features = backbone.num_features
    else:
        backbone = _create_backbone(spec, pretrained, weights_path)
        # pooled width; ConvNeXt-style heads with a hidden layer report it as head_hidden_size
        num_features = getattr(backbone, "head_hidden_size", None) or backbone.num_features
    return RadiographNet(backbone, num_features, multitask=multitask, dropout=dropout, num_body_parts=num_body_parts)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
