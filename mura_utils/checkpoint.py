"""Saving and loading checkpoints: weights plus everything needed to rebuild and judge the model
(config, epoch, validation metrics, threshold, package version), written atomically."""

from __future__ import annotations

from pathlib import Path

import torch

from .config import TrainConfig
from .io import atomic_torch_save
from .models import MuraNet, build_model

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and why."""


def package_version() -> str:
    from . import __version__

    return __version__


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    config: TrainConfig,
    epoch: int,
    metrics: dict | None = None,
    threshold: float = 0.5,
    **extra,
) -> None:
    """Write a checkpoint via temp file + rename: a crash never leaves a half-written file."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    atomic_torch_save(
        {
            "format": CHECKPOINT_FORMAT,
            "package_version": package_version(),
            "model_name": config.model,
            "multitask": config.multitask,
            "config": config.to_dict(),
            "epoch": epoch,
            "metrics": metrics or {},
            "threshold": threshold,
            "state_dict": model.state_dict(),
            **extra,
        },
        path,
    )


def read_checkpoint(path: str | Path) -> dict:
    """Load and check a checkpoint file, raising CheckpointError that names it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({error})") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "model_name" not in checkpoint:
        raise CheckpointError(f"{path}: not a mura_utils checkpoint (no model_name/state_dict)")
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {checkpoint.get('format')} written by mura_utils "
            f"{checkpoint.get('package_version')}; this version reads format {CHECKPOINT_FORMAT}"
        )
    return checkpoint


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[MuraNet, dict]:
    """Rebuild the model a checkpoint was trained as and load its weights (no download needed);
    an ensemble file gives an ``ensemble.EnsembleNet`` of its members."""
    checkpoint = read_checkpoint(path)
    if checkpoint.get("kind") == "ensemble":  # `mura ensemble` file: the members carry the weights
        from .ensemble import load_ensemble

        return load_ensemble(checkpoint, path, device), checkpoint
    model = build_model(checkpoint["model_name"], pretrained=False, multitask=checkpoint["multitask"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: weights do not fit model {checkpoint['model_name']!r} "
            f"(multitask={checkpoint['multitask']}): {str(error)[:300]}"
        ) from error
    return model.to(device).eval(), checkpoint
