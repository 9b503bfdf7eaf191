"""Explanations you can check: CAM methods measured against annotated fracture boxes (FracAtlas).

boxes (COCO boxes/polygons scaled to the files), frames (letterbox -> image pixels), localization
(pointing game strict and within 15 px, mass ratios, baselines, bootstrap summary), methods (ROAD
faithfulness), report (tables, galleries, ``localization_section``), run (``mura explain``), names
(method names and their grad-cam classes, no torch).
Names load on first use (PEP 562), as in ``mura_utils``.
"""

from __future__ import annotations

import importlib

_MODULE_OF = {
    "FractureAnnotation": "boxes",
    "read_coco": "boxes",
    "image_scores": "localization",
    "summarize": "localization",
    "localization_section": "report",
    "Explainer": "run",
    "explain_cases": "run",
    "run_explain": "run",
}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'mura_utils.explain' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value
