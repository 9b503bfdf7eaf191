"""What `mura reproduce` runs: the notebooks, the profiles (demo, full) and per-notebook settings."""

from __future__ import annotations

from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent.parent / "notebooks"
NOTEBOOKS = (
    "00_data_overview",
    "01_custom_cnn",
    "02_resnet50",
    "03_efficientnet_densenet",
    "04_external_generalization",
    "05_comparison",
    "06_error_analysis",
)

# Parameters shared by every notebook, per profile; a notebook ignores the ones it does not declare.
PROFILES: dict[str, dict] = {
    # demo: the whole pipeline on the synthetic sample on 2 CPU cores in minutes; numbers say nothing
    "demo": {
        "epochs": 2,
        "img_size": 48,
        "batch_size": 32,
        "pretrained": False,
        "device": "cpu",
        "n_resamples": 200,
        "cam_per_group": 3,
        "seed": 0,
        "seeds": [0],
        "progress": False,
        "interactive": False,  # notebook 06: static figures, no widgets
    },
    # cpu: real radiographs on 2 CPU cores (FracAtlas, a manifest), from scratch: every model of every
    # notebook within ~3 hours; the per-notebook sizes and epochs below give each model what fits
    "cpu": {
        "epochs": 12,
        "img_size": 128,
        "batch_size": 32,
        "pretrained": False,
        "device": "cpu",
        "n_resamples": 1000,
        "cam_per_group": 3,
        "seed": 0,
        "seeds": [0],
        "num_workers": 0,
        "progress": False,
        "interactive": False,
        "explain_road_images": 10,  # notebook 06: ROAD faithfulness (slow on a CPU) on 10 fractured images per run
    },
    # full: the settings for a real MURA run on one GPU (ImageNet weights need internet or --weights)
    "full": {
        "epochs": 20,
        "img_size": 320,
        "batch_size": 64,
        "pretrained": True,
        "device": "auto",
        "n_resamples": 2000,
        "cam_per_group": 6,
        "seed": 0,
        "seeds": [0, 1, 2],
        "num_workers": 4,
        "progress": False,
        "interactive": False,
    },
}

# Per-notebook settings on top of a profile (``-p NAME VALUE`` still wins). The demo gives each model
# what it needs to learn on the synthetic sample within 8 minutes on 2 CPU cores: the small custom
# CNN can afford 160 px (10x10 Grad-CAM maps) and many epochs; the ImageNet-size backbones, trained from
# scratch offline, get fewer px and epochs and a from-scratch learning rate. DenseNet169, the slowest
# per image on a CPU and far above its floor, gets 64 px and 5 epochs (``model_settings``); EfficientNet-B0,
# closest to its floor, keeps 80 px and 8.
PROFILE_NOTEBOOK_OVERRIDES: dict[str, dict[str, dict]] = {
    "demo": {
        "01_custom_cnn": {"img_size": 160, "epochs": 16, "batch_size": 16, "lr": 1e-3},
        "02_resnet50": {"img_size": 64, "epochs": 6, "batch_size": 16, "lr": 1e-3},
        "03_efficientnet_densenet": {
            "img_size": 80,
            "epochs": 8,
            "batch_size": 16,
            "lr": 1e-3,
            "model_settings": {"densenet169": {"img_size": 64, "epochs": 5}},
        },
    },
    "cpu": {
        "01_custom_cnn": {"img_size": 160, "epochs": 16, "lr": 1e-3},
        "02_resnet50": {"img_size": 96, "epochs": 6, "lr": 1e-3},
        "03_efficientnet_densenet": {"img_size": 96, "epochs": 6, "lr": 1e-3},
    },
}


class ReproduceError(RuntimeError):
    """A notebook failed or the request cannot run; the message names the notebook, the cell
    or the setting, and the error."""


def notebook_settings(profile: str, notebook: str, overrides: dict | None = None) -> dict:
    """One notebook's parameters: the profile, then its per-notebook settings, then ``-p`` overrides.
    A ``-p`` setting wins for every model: the profile's per-model value of it (``model_settings``) goes."""
    overrides = overrides or {}
    settings = {**PROFILES[profile], **PROFILE_NOTEBOOK_OVERRIDES.get(profile, {}).get(notebook, {})}
    if settings.get("model_settings") and "model_settings" not in overrides:
        settings["model_settings"] = {
            model: {name: value for name, value in values.items() if name not in overrides}
            for model, values in settings["model_settings"].items()
        }
    return {**settings, **overrides}


# Parameters that describe a notebook itself, never set from outside.
FIXED_PARAMETERS = ("models",)
