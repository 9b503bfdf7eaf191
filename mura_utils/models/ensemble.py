"""Ensembles as files: ``mura ensemble A.pt B.pt --out E.pt`` stores several trained models in one
checkpoint that ``evaluate``, ``predict`` and ``export`` accept wherever a checkpoint goes.

An ensemble's image probability is the mean of its members' image probabilities (body-part
probabilities: the mean over its multitask members). Members may differ in backbone, input size
and normalization: each member sees the original image letterboxed at its own size, normalized
with its own mean/std, exactly as it did alone.

The file holds only tensors and plain types (``torch.load(weights_only=True)`` reads it):
``{"kind": "ensemble", "model_name": "ensemble", "state_dict": {}, "members": [member, ...], ...}``
where each member is a plain dict (model_name, multitask, state_dict, config, img_size, mean, std,
threshold, source).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mura_utils.models.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    checkpoint_dataset,
    package_version,
    read_checkpoint,
)
from mura_utils.models.networks import RadiographNet, build_model
from mura_utils.models.registry import get_spec
from mura_utils.utils.io import atomic_torch_save

ENSEMBLE_KIND = "ensemble"


@dataclass
class Member:
    """One model and its input contract: letterbox to ``img_size``, then ``(x/255 - mean) / std``."""

    model: RadiographNet
    model_name: str
    img_size: int
    mean: float
    std: float

    @property
    def multitask(self) -> bool:
        return self.model.multitask


class EnsembleNet(nn.Module):
    """Members of an ensemble (or one single model) behind one forward pass.

    ``forward(*pixels)`` takes one uint8-valued (N,1,S_i,S_i) letterboxed image tensor per member
    (0..255, any float or integer dtype), normalizes each with its member's mean/std and returns
    ``{"probability": (N,), "body_part_probabilities": (N,7)}`` (the latter only with a multitask
    member): the means over members. ``mura export`` traces exactly this module.
    """

    def __init__(self, members: list[Member]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.models = nn.ModuleList(member.model for member in members)
        self.contracts = [(m.model_name, int(m.img_size), float(m.mean), float(m.std)) for m in members]

    @property
    def members(self) -> list[Member]:
        return [Member(model, *contract) for model, contract in zip(self.models, self.contracts)]

    @property
    def multitask(self) -> bool:
        return any(model.multitask for model in self.models)

    def forward(self, *pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        if len(pixels) != len(self.models):
            raise ValueError(f"expected one image tensor per member ({len(self.models)}), got {len(pixels)}")
        probabilities, part_probabilities = [], []
        for model, (_, _, mean, std), images in zip(self.models, self.contracts, pixels):
            outputs = model((images.float() / 255.0 - mean) / std)  # as augment.normalize does for uint8
            probabilities.append(torch.sigmoid(outputs["abnormality"].float()))
            if "body_part" in outputs:
                part_probabilities.append(torch.softmax(outputs["body_part"].float(), dim=1))
        result = {"probability": torch.stack(probabilities).mean(0)}
        if part_probabilities:
            result["body_part_probabilities"] = torch.stack(part_probabilities).mean(0)
        return result


def is_ensemble(checkpoint: dict) -> bool:
    return isinstance(checkpoint, dict) and checkpoint.get("kind") == ENSEMBLE_KIND


def checkpoint_img_size(checkpoint: dict) -> int:
    """The input size a single-model checkpoint was trained at (its own, else its config's, else the model's)."""
    return int(
        checkpoint.get("img_size")
        or (checkpoint.get("config") or {}).get("img_size")
        or get_spec(checkpoint["model_name"]).default_img_size
    )


def checkpoint_normalization(checkpoint: dict) -> tuple[float | None, float | None]:
    """The (mean, std) a single-model checkpoint was trained with: stored in it (older files: the
    model's own); (None, None) for an ensemble, whose members each carry theirs."""
    if is_ensemble(checkpoint):
        return None, None
    if "mean" in checkpoint and "std" in checkpoint:
        return float(checkpoint["mean"]), float(checkpoint["std"])
    spec = get_spec(checkpoint["model_name"])
    return spec.mean, spec.std


def members_of(model: nn.Module, checkpoint: dict) -> list[Member]:
    """The members to run for a loaded checkpoint: an ensemble's, or the single model itself."""
    if isinstance(model, EnsembleNet):
        return model.members
    mean, std = checkpoint_normalization(checkpoint)
    return [Member(model, checkpoint["model_name"], checkpoint_img_size(checkpoint), mean, std)]


def member_entry(checkpoint: dict, source: str | Path) -> dict:
    """A single-model checkpoint as an ensemble member: plain types and tensors only."""
    mean, std = checkpoint_normalization(checkpoint)
    return {
        "model_name": checkpoint["model_name"],
        "multitask": bool(checkpoint["multitask"]),
        "state_dict": checkpoint["state_dict"],
        "config": checkpoint.get("config", {}),
        "img_size": checkpoint_img_size(checkpoint),
        "mean": mean,
        "std": std,
        "threshold": float(checkpoint.get("threshold", 0.5)),
        "epoch": checkpoint.get("epoch"),
        "source": str(source),
        "dataset": checkpoint_dataset(checkpoint).to_dict(),
        "data_root": checkpoint.get("data_root") or (checkpoint.get("config") or {}).get("data_root"),
    }


# Where an ensemble's threshold came from (its "threshold_source"): the members' thresholds were each
# chosen on that member's own validation split, so their mean was not chosen on any one split.
THRESHOLD_MEMBERS_MEAN = "mean of members' validation thresholds"
THRESHOLD_GIVEN = "given"


def threshold_origin(checkpoint: dict) -> str:
    """A sentence on where an ensemble's stored threshold came from (for warnings and reports)."""
    source = checkpoint.get("threshold_source")
    if source == THRESHOLD_GIVEN:
        return "it was given when the ensemble was made (mura ensemble --threshold), not chosen on validation data"
    if source == THRESHOLD_MEMBERS_MEAN:
        return (
            "it is the mean of the members' validation thresholds, each chosen on that member's own validation "
            "split, so it was not chosen for the ensemble on any one split"
        )
    return "this ensemble file does not record where it came from (made before threshold_source was stored)"


def make_ensemble(checkpoints: list[str | Path], out: str | Path, threshold: float | None = None) -> dict:
    """Write one ensemble checkpoint of ``checkpoints`` (single models or ensembles, flattened).

    Its decision threshold is ``threshold`` or, by default, the mean of the members' own
    validation-chosen thresholds (no data is looked at here); ``threshold_source`` records which.
    Returns the written dict."""
    if not checkpoints:
        raise ValueError("mura ensemble needs at least one checkpoint")
    members = []
    for path in checkpoints:
        checkpoint = read_checkpoint(path)
        if is_ensemble(checkpoint):
            members.extend(checkpoint["members"])
            continue
        try:
            members.append(member_entry(checkpoint, path))
        except ValueError as error:  # a model_name this version cannot build
            raise CheckpointError(f"{path}: {error}") from error
    datasets = [checkpoint_dataset(member) for member in members]  # one per member, nested ensembles flattened
    for member, info in zip(members, datasets):
        if (info.body_parts, info.positive_label) != (datasets[0].body_parts, datasets[0].positive_label):
            raise CheckpointError(
                f"{member['source']}: trained on {info.title} (label 1 = {info.positive_label}, body parts {list(info.body_parts)}), "
                f"but the first member on {datasets[0].title} (label 1 = {datasets[0].positive_label}, body parts "
                f"{list(datasets[0].body_parts)}): an ensemble averages outputs that mean the same thing"
            )
    if threshold is not None:  # an explicit threshold wins, for nested ensembles too
        chosen, source = float(threshold), THRESHOLD_GIVEN
    else:
        chosen, source = sum(m["threshold"] for m in members) / len(members), THRESHOLD_MEMBERS_MEAN
    ensemble = {
        "format": CHECKPOINT_FORMAT,
        "package_version": package_version(),
        "kind": ENSEMBLE_KIND,
        "model_name": ENSEMBLE_KIND,
        "multitask": any(member["multitask"] for member in members),
        "state_dict": {},  # the weights live in the members
        "config": {},
        "threshold": chosen,
        "threshold_source": source,
        "img_size": max(member["img_size"] for member in members),
        "members": members,
        "dataset": datasets[0].to_dict(),
    }
    atomic_torch_save(ensemble, out)
    return ensemble


def load_ensemble(checkpoint: dict, path: str | Path, device: str | torch.device = "cpu") -> EnsembleNet:
    """Rebuild every member of an ensemble checkpoint (no download needed)."""
    members = []
    for number, entry in enumerate(checkpoint.get("members") or []):
        try:
            parts = checkpoint_dataset(entry).body_parts
            model = build_model(
                entry["model_name"], pretrained=False, multitask=entry["multitask"], num_body_parts=len(parts)
            )
            model.load_state_dict(entry["state_dict"])
        except (KeyError, ValueError, RuntimeError) as error:
            raise CheckpointError(
                f"{path}: ensemble member {number} ({entry.get('model_name')!r}, from {entry.get('source')}) "
                f"cannot be rebuilt: {str(error)[:300]}"
            ) from error
        members.append(Member(model.eval(), entry["model_name"], int(entry["img_size"]), entry["mean"], entry["std"]))
    if not members:
        raise CheckpointError(f"{path}: ensemble checkpoint without members")
    return EnsembleNet(members).to(device).eval()


def mean_outputs(outputs: list[dict]) -> dict:
    """Members' ``predict_batches`` outputs (same positions, same order) to the ensemble's: mean
    probability, mean body-part probabilities over the members that have that head."""
    import numpy as np

    merged = {"position": outputs[0]["position"], "probability": np.mean([o["probability"] for o in outputs], axis=0)}
    parts = [o["body_part_probabilities"] for o in outputs if "body_part_probabilities" in o]
    if parts:
        merged["body_part_probabilities"] = np.mean(parts, axis=0)
    return merged if len(outputs) > 1 else outputs[0]


__all__ = [
    "EnsembleNet",
    "Member",
    "is_ensemble",
    "load_ensemble",
    "make_ensemble",
    "mean_outputs",
    "members_of",
    "threshold_origin",
]
