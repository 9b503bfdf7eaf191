"""Class activation maps (the ``grad-cam`` package: Grad-CAM and its relatives) for one head of a
MURA model, and overlays on the grayscale radiograph.

The target layer comes from the model registry (or, for other timm models, is found automatically);
an ensemble's heatmap is the mean of its members'; ``HeadOutput`` turns the model's dict output
into the single tensor grad-cam expects. ``CAM_METHODS`` holds the classes of the methods named in
``explain.names`` (``mura explain`` measures how well each points at FracAtlas fracture boxes).
"""

from __future__ import annotations

import numpy as np
import pytorch_grad_cam
import torch
import torch.nn.functional as F
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from mura_utils.data.augment import normalize
from mura_utils.explain.names import CAM_METHOD_CLASSES, DEFAULT_CAM_METHOD
from mura_utils.models.networks import HeadOutput, RadiographNet, cam_target_layer
from mura_utils.models.registry import get_spec

CAM_METHODS = {name: getattr(pytorch_grad_cam, class_name) for name, class_name in CAM_METHOD_CLASSES.items()}


def cam_class(method: str) -> type:
    """The grad-cam class of a method name of ``CAM_METHODS`` (ValueError listing them otherwise)."""
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(CAM_METHODS)}")
    return CAM_METHODS[method]


def cam_heatmaps(
    model: RadiographNet,
    model_name: str,
    images: torch.Tensor,
    head: str = "abnormality",
    class_index: int = 0,
    mean: float | None = None,
    std: float | None = None,
    method: str = DEFAULT_CAM_METHOD,
) -> np.ndarray:
    """Heatmaps in 0..1, shape (N,H,W), for uint8 (N,1,H,W) letterboxed images, by ``method``
    (a name of ``CAM_METHODS``).

    For the abnormality head the target is its single logit: regions that raise the
    "abnormal" score light up. For the body-part head pass the class index of the part.
    ``mean``/``std`` default to the model's own; the target layer is the registry's or, for other
    timm models, found automatically (``models.find_cam_layer``), at the images' size: the last
    layer that is larger than 1x1 there (a ValueError says when the input is too small for any).
    An ensemble's heatmap is the mean of its members' (see ``predict.predict_paths``).
    """
    from mura_utils.models.ensemble import EnsembleNet

    cam_type = cam_class(method)
    if isinstance(model, EnsembleNet):
        return _ensemble_heatmaps(model, images, head, class_index, method)
    spec = get_spec(model_name)
    device = next(model.parameters()).device
    inputs = normalize(images.to(device), spec.mean if mean is None else mean, spec.std if std is None else std)
    model.eval()
    with cam_type(
        model=HeadOutput(model, head), target_layers=[cam_target_layer(model, model_name, images.shape[-1])]
    ) as cam:
        heatmaps = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(class_index)] * len(inputs))
    return np.asarray(heatmaps, dtype=np.float32)


def _ensemble_heatmaps(ensemble, images: torch.Tensor, head: str, class_index: int, method: str) -> np.ndarray:
    """Mean of the members' heatmaps at the input's size; each member sees the letterboxed input
    resized to its own size (``predict_paths`` letterboxes the original per member instead)."""
    size = tuple(images.shape[-2:])
    heatmaps = []
    for member in ensemble.members:
        if head == "body_part" and not member.multitask:
            continue
        resized = images
        if size != (member.img_size, member.img_size):
            resized = F.interpolate(images.float(), size=(member.img_size,) * 2, mode="bilinear", antialias=True)
            resized = resized.round().clamp(0, 255).to(torch.uint8)
        maps = cam_heatmaps(
            member.model, member.model_name, resized, head, class_index, member.mean, member.std, method=method
        )
        maps = F.interpolate(torch.from_numpy(maps)[:, None], size=size, mode="bilinear")[:, 0]
        heatmaps.append(maps.numpy())
    return np.mean(heatmaps, axis=0).astype(np.float32)


def overlay(gray: np.ndarray, heatmap: np.ndarray, image_weight: float = 0.6) -> np.ndarray:
    """An RGB uint8 picture: the radiograph in gray with the heatmap in the jet colour map."""
    rgb = np.repeat((gray.astype(np.float32) / 255.0)[..., None], 3, axis=2)
    return show_cam_on_image(rgb, heatmap, use_rgb=True, image_weight=image_weight)
