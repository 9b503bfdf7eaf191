"""mura_utils: abnormality detection on musculoskeletal radiographs (Stanford MURA-v1.1).

The small public API below is what notebooks and scripts use; each name lives in a module with
one job (data, models, train, evaluate, ...). Names load on first use (PEP 562), so importing
one light module (``mura_utils.external``, the CLI's ``--help``) does not pay for torch and timm.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "augment": ["AugmentConfig", "batch_augment", "normalize"],
    "checkpoint": ["checkpoint_dataset", "read_checkpoint", "save_checkpoint"],
    "compare": ["compare_evaluations", "load_evaluation"],
    "config": ["TrainConfig"],
    "constants": ["BODY_PARTS", "POSITIVE_LABEL"],
    "data": ["MuraDataset", "class_weights", "load_mura_index", "patient_split"],
    "datasets": ["DatasetInfo", "dataset_info", "detect_dataset", "load_index", "load_manifest"],
    "evaluate": [
        "add_confidence_intervals",
        "binary_metrics",
        "bootstrap_ci",
        "choose_threshold",
        "compute_metrics",
        "evaluate_checkpoint",
        "evaluate_checkpoint_views",
        "study_table",
    ],
    "ensemble": ["make_ensemble"],
    "experiment": ["run_experiment", "run_models"],
    "explain": ["localization_section", "read_coco", "run_explain"],
    "export": ["export_onnx", "predict_onnx"],
    "external": ["load_external_index", "find_duplicates", "deduplicate"],
    "imaging": ["ImageReadError", "letterbox", "load_letterboxed", "read_grayscale"],
    "loading": ["load_model"],
    "models": ["MODEL_REGISTRY", "build_model", "count_parameters"],
    "statistics": ["ClusterBootstrap", "confidence_intervals", "paired_differences", "patient_bootstrap"],
    "synthetic": ["make_sample", "make_external_sample", "make_fracatlas_sample", "make_manifest_sample"],
    "train": ["FitResult", "fit"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = ["__version__", *_MODULE_OF]


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'mura_utils' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
