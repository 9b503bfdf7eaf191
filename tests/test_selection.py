"""Checkpoint selection: the validation loss is the training loss's weighted BCE, and fit keeps the
epoch the chosen metric ranks best."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mura_utils.config import SELECTION_METRICS, TrainConfig
from mura_utils.training.fit import selection_score, validation_loss


def test_validation_loss_is_the_weighted_bce_of_training():
    predictions = pd.DataFrame(
        {"label": [1, 0, 1, 0], "body_part": ["WRIST", "WRIST", "HAND", "HAND"], "probability": [0.8, 0.3, 0.4, 0.1]}
    )
    weights = pd.DataFrame({"w_abnormal": [0.7, 0.25], "w_normal": [0.3, 0.75]}, index=["WRIST", "HAND"])
    expected = torch.nn.functional.binary_cross_entropy(
        torch.tensor([0.8, 0.3, 0.4, 0.1], dtype=torch.float64),
        torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64),
        weight=torch.tensor([0.7, 0.3, 0.25, 0.75], dtype=torch.float64),
    ).item()
    assert validation_loss(predictions, weights, TrainConfig()) == pytest.approx(expected)
    unweighted = np.mean(-np.log([0.8, 0.7, 0.4, 0.9]))
    assert validation_loss(predictions, weights, TrainConfig(class_weighting=False)) == pytest.approx(unweighted)


def test_selection_score_is_higher_better_for_every_metric():
    metrics = {"study": {"auroc": 0.8, "kappa": None}}
    assert selection_score(metrics, 0.3, "val_loss") > selection_score(metrics, 0.4, "val_loss")
    assert selection_score(metrics, 0.3, "study_auroc") == pytest.approx(0.8)
    assert selection_score(metrics, 0.3, "study_kappa") == -math.inf  # undefined never wins
    assert set(SELECTION_METRICS) == {"val_loss", "study_auroc", "study_kappa"}


def test_unknown_selection_metric_is_refused_by_name():
    with pytest.raises(ValueError, match="selection_metric 'study_loss'.*val_loss"):
        TrainConfig(selection_metric="study_loss")


def test_fit_keeps_the_lowest_validation_loss_epoch(tiny_mura, tmp_path):
    from mura_utils.models.checkpoint import read_checkpoint
    from mura_utils.training.fit import fit

    config = TrainConfig(
        data_root=str(tiny_mura),
        img_size=32,
        epochs=3,
        batch_size=16,
        device="cpu",
        cache_dir=str(tmp_path / "cache"),
        out_dir=str(tmp_path / "run"),
        progress=False,
        verbose=False,
        selection_metric="val_loss",
    )
    result = fit(config)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["val_loss"].notna().all() and (history["val_loss"] > 0).all()
    best = int(history.loc[history["val_loss"].idxmin(), "epoch"])
    assert result.best_epoch == best
    assert read_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == best
