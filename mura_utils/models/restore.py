"""Rebuild a model from a file: a single-model checkpoint or a `mura ensemble` file.

Sits above ``checkpoint`` (the file format) and ``ensemble`` (several checkpoints as one model), so
neither of those imports the other's caller.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mura_utils.models.checkpoint import CheckpointError, checkpoint_dataset, read_checkpoint
from mura_utils.models.ensemble import is_ensemble, load_ensemble
from mura_utils.models.networks import RadiographNet, build_model


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[RadiographNet, dict]:
    """Rebuild the model a checkpoint was trained as and load its weights (no download needed);
    an ensemble file gives an ``ensemble.EnsembleNet`` of its members."""
    checkpoint = read_checkpoint(path)
    if is_ensemble(checkpoint):  # `mura ensemble` file: the members carry the weights
        return load_ensemble(checkpoint, path, device), checkpoint
    parts = checkpoint_dataset(checkpoint).body_parts
    model = build_model(
        checkpoint["model_name"], pretrained=False, multitask=checkpoint["multitask"], num_body_parts=len(parts)
    )
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: weights do not fit model {checkpoint['model_name']!r} "
            f"(multitask={checkpoint['multitask']}): {str(error)[:300]}"
        ) from error
    return model.to(device).eval(), checkpoint
