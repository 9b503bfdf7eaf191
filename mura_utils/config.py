"""One bag of settings for a training run: plain defaults that the CLI, a script or a papermill
parameters cell override. It is saved as ``config.json`` beside every checkpoint.

Each field carries its help text in ``metadata["help"]``: ``mura train`` generates its options
from these fields, so names, types, defaults and help are defined once, here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


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
    data_root: str = _option("data/sample", "MURA-v1.1 folder or its parent")
    img_size: int | None = _option(None, "letterboxed input size in px; default: the model's own (224 for most)")
    val_fraction: float = _option(0.1, "patient-level validation split of MURA train")
    cache_dir: str | None = _option(None, "decode-once image cache; default: <MURA parent>/mura_cache")
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
        "study_auroc", "study_auroc | study_kappa: best epoch on the patient-level validation split"
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
