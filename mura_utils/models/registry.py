"""The model registry: one entry per seed model (name, display label, report order, input size, input
statistics, Grad-CAM layer), and a spec for any other timm model name.

Torch-free on import, so ``mura --help`` and config validation can list and check names cheaply; the
networks themselves are built by ``models.networks.build_model``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache

IMAGENET_GRAY_MEAN = (0.485 + 0.456 + 0.406) / 3  # ImageNet RGB statistics averaged to one channel
IMAGENET_GRAY_STD = (0.229 + 0.224 + 0.225) / 3


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of the package needs to know about one architecture."""

    timm_name: str | None  # None: our own network (custom_cnn)
    default_img_size: int
    mean: float
    std: float
    cam_layer: str | None  # Grad-CAM target inside ``RadiographNet.backbone``; None: found by ``find_cam_layer``
    fixed_input_size: bool = False  # True: only default_img_size (ViT, Swin, ...; timm's pretrained_cfg)
    label: str = ""  # how reports name it; "" for a plain timm name (shown as the name itself)


# In report order: tables, figures and the CLI's list follow it.
MODEL_REGISTRY: dict[str, ModelSpec] = {
    "custom_cnn": ModelSpec(None, 224, 0.5, 0.25, "blocks.4.2", label="Custom CNN"),
    "resnet50": ModelSpec("resnet50.tv_in1k", 224, IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD, "layer4", label="ResNet50"),
    "densenet169": ModelSpec(
        "densenet169.tv_in1k", 224, IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD, "features.norm5", label="DenseNet169"
    ),
    "efficientnet_b0": ModelSpec(
        "efficientnet_b0.ra_in1k", 224, IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD, "bn2", label="EfficientNet-B0"
    ),
}
MODEL_ORDER: tuple[str, ...] = tuple(MODEL_REGISTRY)


def model_label(name: str) -> str:
    """The display name of a registry model ("DenseNet169"); any other (timm) name as it is."""
    spec = MODEL_REGISTRY.get(name)
    return spec.label if spec is not None and spec.label else name


def model_rank(name: str) -> int:
    """Position in report order; models outside the registry come after it."""
    return MODEL_ORDER.index(name) if name in MODEL_ORDER else len(MODEL_ORDER)


def get_spec(name: str) -> ModelSpec:
    """The registry entry of a seed model, or a spec for any timm model name (``convnext_tiny``,
    ``efficientnet_b3``, ``resnet18.a1_in1k``, ...); an unknown name raises ValueError with close matches."""
    if name in MODEL_REGISTRY:
        return MODEL_REGISTRY[name]
    return _timm_spec(name)


@cache
def _timm_spec(name: str) -> ModelSpec:
    import timm
    from timm.models import get_pretrained_cfg, is_model

    if not isinstance(name, str) or not is_model(name):
        candidates = [*MODEL_REGISTRY, *timm.list_models()]
        close = difflib.get_close_matches(str(name), candidates, n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}: not one of {sorted(MODEL_REGISTRY)} nor a timm model name "
            f"(see timm.list_models()){hint}"
        )
    config = get_pretrained_cfg(name)
    input_size = getattr(config, "input_size", None) or (3, 224, 224)
    mean = getattr(config, "mean", None) or (0.485, 0.456, 0.406)
    std = getattr(config, "std", None) or (0.229, 0.224, 0.225)
    fixed = bool(getattr(config, "fixed_input_size", False))
    return ModelSpec(name, int(input_size[-1]), sum(mean) / len(mean), sum(std) / len(std), None, fixed)
