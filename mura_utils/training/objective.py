"""What training minimises and what chooses best.pt: MURA's per-body-part weighted loss, its
validation counterpart, the selection score, and each epoch's row of history.csv."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mura_utils.config import SELECTION_METRICS, TrainConfig
from mura_utils.utils.formatting import rounded


@dataclass
class LossWeights:
    """The per-body-part BCE weights of abnormal and normal images, as tensors on the training device."""

    abnormal: torch.Tensor
    normal: torch.Tensor

    @classmethod
    def from_table(cls, weights: pd.DataFrame, device: torch.device) -> LossWeights:
        """From ``class_weights``' table (columns w_abnormal, w_normal; one row per body part)."""
        return cls(
            torch.tensor(weights["w_abnormal"].to_numpy(), dtype=torch.float32, device=device),
            torch.tensor(weights["w_normal"].to_numpy(), dtype=torch.float32, device=device),
        )


def training_loss(outputs: dict, labels, body_parts, weights: LossWeights, config: TrainConfig) -> torch.Tensor:
    """MURA's weighted BCE (per-body-part weights) + weight x cross-entropy on the body part."""
    logits = outputs["abnormality"].float()
    image_weights = torch.where(labels > 0.5, weights.abnormal[body_parts], weights.normal[body_parts])
    if not config.class_weighting:
        image_weights = torch.ones_like(image_weights)
    loss = (F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * image_weights).mean()
    if "body_part" in outputs and config.body_part_loss_weight > 0:
        loss = loss + config.body_part_loss_weight * F.cross_entropy(outputs["body_part"].float(), body_parts)
    return loss


def validation_loss(predictions: pd.DataFrame, weights: pd.DataFrame, config: TrainConfig) -> float:
    """The training loss's abnormality term (MURA's per-body-part weighted BCE) on the validation
    *images*; the body-part term is left out so multi-task and single-task runs select alike."""
    labels = predictions["label"].to_numpy(dtype=np.float64)
    probabilities = np.clip(predictions["probability"].to_numpy(dtype=np.float64), 1e-7, 1 - 1e-7)
    if config.class_weighting:
        part_weights = weights.loc[predictions["body_part"]]
        image_weights = np.where(labels > 0.5, part_weights["w_abnormal"], part_weights["w_normal"])
    else:
        image_weights = np.ones_like(labels)
    losses = -(labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities))
    return float(np.mean(image_weights * losses))


def selection_score(metrics: dict, val_loss: float, selection_metric: str) -> float:
    """The number best.pt is chosen by, higher is better (val_loss is negated); -inf when undefined."""
    value = val_loss if selection_metric == "val_loss" else metrics["study"][selection_metric.removeprefix("study_")]
    if value is None or not math.isfinite(value):
        return -math.inf
    return value if SELECTION_METRICS[selection_metric] else -value


def history_row(
    epoch: int, train_loss: float, lr: float, train_seconds: float, images: int, val_loss: float, metrics: dict
) -> dict:
    """One epoch's line of history.csv; ``images``: trained on by all processes together."""
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "lr": lr,
        "train_seconds": train_seconds,
        "images_per_second": images / train_seconds,
        "val_loss": val_loss,
        **{f"val_image_{k}": v for k, v in metrics["image"].items()},
        **{f"val_study_{k}": v for k, v in metrics["study"].items()},
        "val_body_part_accuracy": metrics["body_part_accuracy"],
    }


def epoch_summary(model_name: str, row: dict, metrics: dict, improved: bool) -> str:
    """The one line ``verbose`` prints after an epoch."""
    return (
        f"{model_name} epoch {row['epoch']}: loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
        f"val study AUROC {rounded(metrics['study']['auroc'])}, kappa {rounded(metrics['study']['kappa'])}"
        f"{' (best)' if improved else ''}, {row['images_per_second']:.0f} img/s"
    )
