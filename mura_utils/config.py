"""One bag of settings for a training run: plain defaults that the CLI, a script or a papermill
parameters cell override. It is saved as ``config.json`` beside every checkpoint."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

# Checkpoint selection on the patient-level validation split: metric name -> True when higher is better.
# val_loss is the weighted BCE of the abnormality head on the validation images (the MURA paper's choice);
# it moves smoothly from epoch to epoch, where AUROC/kappa on a few dozen studies jump by chance.
SELECTION_METRICS: dict[str, bool] = {"val_loss": False, "study_auroc": True, "study_kappa": True}


@dataclass
class TrainConfig:
    # what to train
    model: str = "custom_cnn"  # custom_cnn | resnet50 | densenet169 | efficientnet_b0
    pretrained: bool = True  # ImageNet weights through timm (ignored by custom_cnn)
    weights_path: str | None = None  # local weights file for offline machines
    multitask: bool = True  # False drops the body-part head (the ablation)
    # data
    data_root: str = "data/sample"  # MURA-v1.1 folder or its parent
    img_size: int | None = None  # None: the model's registry default (224)
    val_fraction: float = 0.1  # patient-level validation split of MURA train
    cache_dir: str | None = None  # decode-once image cache; None: <MURA parent>/mura_cache
    use_cache: bool = True
    num_workers: int = 0  # DataLoader workers (cache reads are cheap; 0 is fastest on 2 cores)
    # optimisation
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3  # peak learning rate of the one-cycle schedule
    weight_decay: float = 1e-4
    body_part_loss_weight: float = 0.3  # weight of the body-part cross-entropy
    class_weighting: bool = True  # the MURA paper's per-body-part weights on the BCE
    augment: bool = True  # batched random flip + rotation + brightness/contrast on the training device
    rotation_degrees: float = 30.0  # max random rotation (the MURA paper's 30 degrees)
    selection_metric: str = "val_loss"  # a SELECTION_METRICS key (on the patient-level val split)
    # epochs without improvement before stopping early; 0 (default) runs the one-cycle schedule to its end,
    # where the best epochs usually are (early epochs can score high by chance on a small validation split)
    patience: int = 0
    # run
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:1 | mps
    amp: bool = True  # mixed precision on CUDA (bf16 where supported)
    out_dir: str = "runs/custom_cnn"
    progress: bool = True  # tqdm bars
    verbose: bool = True  # one summary line per epoch

    def __post_init__(self) -> None:
        if self.selection_metric not in SELECTION_METRICS:
            raise ValueError(
                f"TrainConfig.selection_metric={self.selection_metric!r} is not one of {sorted(SELECTION_METRICS)}"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        from .io import atomic_write_text

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
        return cls.from_dict(json.loads(Path(path).read_text()))
