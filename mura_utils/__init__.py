"""mura_utils: abnormality (fracture) detection on musculoskeletal radiographs: MURA-v1.1, FracAtlas,
or a CSV manifest of a user's own images.

The stages are subpackages, in the order data flows through them: ``data`` -> ``models`` ->
``training`` -> ``evaluation`` -> ``explain`` / ``inference`` -> ``report``; ``pipeline`` runs the
notebooks, ``synthetic`` writes sample trees. The names below are the small public API; each loads on
first use (PEP 562), so ``mura --help`` and the torch-free modules do not pay for torch and timm.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_MODULE_OF = {
    "TrainConfig": "config",
    "load_index": "data.registry",
    "dataset_info": "data.registry",
    "patient_split": "data.dataset",
    "RadiographDataset": "data.dataset",
    "build_model": "models.networks",
    "load_model": "models.restore",
    "fit": "training.fit",
    "run_experiment": "training.experiment",
    "evaluate_checkpoint": "evaluation.predictions",
    "compute_metrics": "evaluation.predictions",
    "predict_paths": "inference.predict",
    "run_explain": "explain.run",
    "write_report": "report",
    "make_sample": "synthetic",
}
__all__ = ["__version__", *_MODULE_OF]


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'mura_utils' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"mura_utils.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
