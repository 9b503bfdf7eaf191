"""CAM methods run side by side on the same images, and their faithfulness by ROAD (Rong et al.,
"A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML 2022; the grad-cam
package's ``pytorch_grad_cam.metrics.road``): a map that localizes well but does not drive the
prediction shows as a small change in the fracture probability when its pixels are removed.

ROAD imputes the removed pixels from their neighbours (a sparse linear solve per image and
percentile, on the CPU: the slow part of ``mura explain``), with a little noise drawn from a fixed
seed, so every method sees the same noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage

from mura_utils.explain.cam import cam_class
from mura_utils.explain.names import CAM_METHOD_NAMES, DEFAULT_ROAD_PERCENTILES
from mura_utils.models.networks import HeadOutput

ROAD_SCORES = ("road_morf", "road_lerf", "road_combined")


def check_methods(methods: Sequence[str]) -> list[str]:
    """The methods as a list, each known (ValueError naming the unknown ones) and given once."""
    for method in methods:
        cam_class(method)
    if not methods:
        raise ValueError(f"no CAM method given; choose from {', '.join(CAM_METHOD_NAMES)}")
    return list(dict.fromkeys(methods))


class FractureProbability:
    """ROAD's target: the model's probability of the positive class (sigmoid of the one logit that
    ``HeadOutput`` gives per image), so ROAD scores are changes in probability."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output[..., 0])


def road_scores(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    heatmaps: np.ndarray,
    head: str = "abnormality",
    percentiles: Sequence[int] = DEFAULT_ROAD_PERCENTILES,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """ROAD of (N, H, W) heatmaps for normalized (N, 1, H, W) model inputs, one value per image:

    - road_morf: change of the probability when the most relevant pixels are removed (averaged over
      ``percentiles`` of pixels kept); lower (a larger drop) = more faithful;
    - road_lerf: the same removing the least relevant pixels first; higher (near 0) = more faithful;
    - road_combined: (road_lerf - road_morf) / 2; higher = more faithful, ~0 = a random map.
    """
    if heatmaps.shape != (inputs.shape[0], *inputs.shape[-2:]):
        raise ValueError(f"heatmaps {heatmaps.shape} do not match inputs {tuple(inputs.shape)}")
    wrapped = HeadOutput(model, head).eval()
    targets = [FractureProbability()] * len(inputs)
    percentiles = [int(p) for p in percentiles]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        morf = ROADMostRelevantFirstAverage(percentiles)(inputs, heatmaps, targets, wrapped)
        torch.manual_seed(seed + 1)
        lerf = ROADLeastRelevantFirstAverage(percentiles)(inputs, heatmaps, targets, wrapped)
    morf, lerf = np.asarray(morf, dtype=float).reshape(-1), np.asarray(lerf, dtype=float).reshape(-1)
    return {"road_morf": morf, "road_lerf": lerf, "road_combined": (lerf - morf) / 2}
