"""Shared fixtures: one small synthetic MURA tree per test session (generation takes seconds)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def tiny_mura(tmp_path_factory):
    """A MURA-v1.1-shaped synthetic tree with ~4 patients per body part (read-only for tests)."""
    from mura_utils.synthetic import make_sample

    return make_sample(tmp_path_factory.mktemp("tiny_mura"), patients_per_part=4, seed=0)


def save_untrained_checkpoint(path, model: str = "custom_cnn", img_size: int = 32, **extra):
    """A checkpoint of an untrained model through the real save path (costs ~0 s); returns ``path``."""
    from mura_utils.config import TrainConfig
    from mura_utils.models.checkpoint import save_checkpoint
    from mura_utils.models.networks import build_model

    config = TrainConfig(model=model, img_size=img_size)
    save_checkpoint(path, build_model(model, pretrained=False), config, epoch=1, img_size=img_size, **extra)
    return path


@pytest.fixture(scope="session")
def untrained_checkpoint():
    """``save_untrained_checkpoint``, for tests and fixtures of any scope."""
    return save_untrained_checkpoint


def interrupt_in_epoch(monkeypatch, epoch: int) -> None:
    """Make training stop with KeyboardInterrupt in ``epoch``'s validation, as a killed run would
    (last.pt then holds epoch - 1); ``monkeypatch.undo()`` lets the next fit run normally."""
    from mura_utils.training import fit as train_module

    real_validation, calls = train_module.validation_predictions, []

    def validation(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt(f"interrupted during epoch {epoch}")
        return real_validation(*args, **kwargs)

    monkeypatch.setattr(train_module, "validation_predictions", validation)
