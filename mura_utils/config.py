"""One bag of settings for a training run: plain defaults that the CLI, a script or a papermill
parameters cell override. It is saved as ``config.json`` beside every checkpoint.

Each field carries its help text in ``metadata["help"]``: ``mura train`` generates its options
from these fields, so names, types, defaults and help are defined once, here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

# Checkpoint selection on the patient-level validation split: metric name -> True when higher is better.
# val_loss is the weighted BCE of the abnormality head on the validation images (the MURA paper's choice);
# it moves smoothly from epoch to epoch, where AUROC/kappa on a few dozen studies jump by chance.
SELECTION_METRICS: dict[str, bool] = {"val_loss": False, "study_auroc": True, "study_kappa": True}
# Fields that change how a run looks or where its scratch files go, never its numbers: a resumed or
# reused run may differ in these (tests/test_train.py trains with and without the cache, and resumes
# with workers, to hold use_cache and num_workers to it). Every other field must match the run folder's config.json.
RESULT_NEUTRAL_FIELDS = frozenset({"progress", "verbose", "num_workers", "cache_dir", "use_cache", "out_dir"})
_PATH_FIELDS = ("data_root", "weights_path")


class ConfigMismatchError(ValueError):
    """A run folder was trained with other settings than the ones requested now."""


def _option(default, help: str):  # noqa: A002 - argparse's word
    """A dataclass field whose help text the CLI shows."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    # what to train
    model: str = _option(
        "custom_cnn", "custom_cnn | resnet50 | densenet169 | efficientnet_b0, or any timm model name (convnext_tiny)"
    )
    pretrained: bool = _option(True, "ImageNet weights through timm (ignored by custom_cnn)")
    weights_path: str | None = _option(None, "local ImageNet weights file for offline machines (3-channel is fine)")
    multitask: bool = _option(True, "also train the body-part head; --single-task drops it (the ablation)")
    # data
    data_root: str = _option(
        "data/sample",
        "MURA-v1.1 folder or its parent, a FracAtlas folder, or a manifest .csv (mura_utils.data.registry)",
    )
    dataset: str = _option(
        "auto", "auto (detected from data_root) or a name of data.registry (mura, fracatlas, manifest)"
    )
    img_size: int | None = _option(None, "letterboxed input size in px; default: the model's own (224 for most)")
    val_fraction: float = _option(0.1, "patient-level validation split of the training split")
    cache_dir: str | None = _option(
        None, "decode-once image cache; default: <MURA parent>/mura_cache (see data.default_cache_dir)"
    )
    use_cache: bool = _option(True, "read images through the decode-once uint8 cache")
    num_workers: int = _option(0, "DataLoader workers (cache reads are cheap; 0 is fastest on 2 cores)")
    # optimisation
    epochs: int = _option(10, "training epochs")
    batch_size: int = _option(32, "images per optimizer step")
    lr: float = _option(1e-3, "peak learning rate of the one-cycle schedule")
    weight_decay: float = _option(1e-4, "AdamW weight decay")
    body_part_loss_weight: float = _option(0.3, "weight of the body-part cross-entropy")
    class_weighting: bool = _option(True, "the MURA paper's per-body-part weights on the BCE")
    augment: bool = _option(True, "batched random flip + rotation + brightness/contrast on the training device")
    rotation_degrees: float = _option(30.0, "max random rotation (the MURA paper's 30 degrees)")
    selection_metric: str = _option(
        "val_loss",
        "one of SELECTION_METRICS (val_loss, study_auroc, study_kappa): picks the best epoch on the patient-level validation split",
    )
    # epochs without improvement before stopping early; 0 (default) runs the one-cycle schedule to its end,
    # where the best epochs usually are (early epochs can score high by chance on a small validation split)
    patience: int = _option(0, "stop after this many epochs without improvement (0: run every epoch)")
    # exponential moving average of the weights (e.g. 0.999); the average is validated, selected and saved
    ema_decay: float = _option(0.0, "EMA decay of the weights (e.g. 0.999); 0 turns EMA off")
    # run
    seed: int = _option(0, "seeds torch, numpy and random")
    device: str = _option("auto", "auto | cpu | cuda | cuda:1 | mps")
    amp: bool = _option(True, "mixed precision on CUDA (bf16 where supported)")
    out_dir: str = _option("runs/custom_cnn", "run folder: best.pt, last.pt, history.csv, config.json")
    progress: bool = _option(True, "tqdm bars")
    verbose: bool = _option(True, "one summary line per epoch")

    def __post_init__(self) -> None:
        """Refuse impossible settings now, not after a whole epoch."""
        from mura_utils.models.registry import get_spec

        problems = []
        spec = None
        try:  # any timm name is fine too; an unknown one lists close matches
            spec = get_spec(self.model)
        except ValueError as error:
            problems.append(str(error))
        if (
            spec is not None
            and spec.fixed_input_size
            and isinstance(self.img_size, int)
            and self.img_size != spec.default_img_size
        ):
            problems.append(
                f"model {self.model!r} only takes {spec.default_img_size} px inputs (a fixed-input-size timm "
                f"model), not img_size {self.img_size}; use img_size {spec.default_img_size} (or leave it unset) "
                "or a convolutional model"
            )
        decay = self.ema_decay
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not (decay == 0 or 0 < decay < 1):
            problems.append(f"ema_decay {self.ema_decay!r} must be 0 (off) or between 0 and 1 (exclusive), e.g. 0.999")
        from mura_utils.data.registry import dataset_names

        if self.dataset not in ("auto", *dataset_names()):
            problems.append(f"dataset {self.dataset!r} is not one of auto, {', '.join(dataset_names())}")
        if self.selection_metric not in SELECTION_METRICS:
            problems.append(f"selection_metric {self.selection_metric!r} is not one of {list(SELECTION_METRICS)}")
        if not 0 < self.val_fraction < 1:
            problems.append(f"val_fraction {self.val_fraction!r} must be between 0 and 1 (exclusive)")
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name} {getattr(self, name)!r} must be a whole number >= 1")
        if self.img_size is not None and (not isinstance(self.img_size, int) or self.img_size < 16):
            problems.append(f"img_size {self.img_size!r} must be None or a whole number >= 16")
        for name in ("num_workers", "patience"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                problems.append(f"{name} {getattr(self, name)!r} must be a whole number >= 0")
        if not self.lr > 0:
            problems.append(f"lr {self.lr!r} must be > 0")
        if problems:
            raise ValueError("TrainConfig: " + "; ".join(problems))

    def differences(self, other: TrainConfig) -> dict[str, tuple]:
        """{field: (self's value, other's value)} for the fields that change results (paths
        compared resolved); empty when a run trained with ``self`` is a run of ``other``."""
        mine, theirs = self.to_dict(), other.to_dict()
        for name in _PATH_FIELDS:
            for values in (mine, theirs):
                if values[name]:
                    values[name] = str(Path(values[name]).expanduser().resolve())
        return {
            name: (mine[name], theirs[name])
            for name in mine
            if name not in RESULT_NEUTRAL_FIELDS and mine[name] != theirs[name]
        }

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        from mura_utils.utils.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {unknown}")
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a saved ``config.json`` (reruns that run exactly), naming the file when it is unusable."""
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: config file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not a JSON config file ({error})") from error
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a config file holds one JSON object of TrainConfig fields")
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from error


def format_differences(differences: dict[str, tuple]) -> str:
    """'name: saved X, requested Y; ...' for {name: (saved, requested)}."""
    return "; ".join(f"{name}: saved {saved!r}, requested {wanted!r}" for name, (saved, wanted) in differences.items())


def describe_mismatch(out_dir: Path, differences: dict[str, tuple], way_out: str = "") -> str:
    """Why ``out_dir`` cannot be continued with the requested settings, and the way out."""
    settings = format_differences(differences)
    return f"{out_dir} was trained with other settings ({settings}). Continuing it would mix two experiments; " + (
        way_out or "pass the saved settings, choose another output folder, or retrain it with --overwrite instead"
    )
