"""What `mura reproduce` runs: the notebooks and the profiles (demo, cpu, full): the notebooks' parameters here,
the training settings in configs/<profile>/<model>.json."""

from __future__ import annotations

from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent.parent
NOTEBOOK_DIR = REPOSITORY_ROOT / "notebooks"
NOTEBOOKS = (
    "00_data_overview",
    "01_custom_cnn",
    "02_resnet50",
    "03_efficientnet_densenet",
    "04_external_generalization",
    "05_comparison",
    "06_error_analysis",
)

# Each profile's training settings, one TrainConfig file per model: configs/<profile>/<model>.json. The training
# notebooks read them (their ``config_dir`` parameter) and ``mura train --config`` reads the same files, so one
# run of a profile can be reproduced alone. The demo gives each model what it needs to learn on the synthetic
# sample within 8 minutes on 2 CPU cores (the small custom CNN 160 px and 16 epochs; the ImageNet-size backbones,
# from scratch offline, fewer px and epochs; DenseNet169, the slowest per image on a CPU, 64 px and 5 epochs).
CONFIG_DIR = REPOSITORY_ROOT / "configs"

# The notebooks' other parameters, per profile; a notebook ignores the ones it does not declare.
PROFILES: dict[str, dict] = {
    # demo: the whole pipeline on the synthetic sample on 2 CPU cores in minutes; numbers say nothing
    "demo": {
        "device": "cpu",  # notebooks 04 and 06 (evaluation); the training settings are in configs/demo
        "n_resamples": 200,
        "cam_per_group": 3,
        "seed": 0,
        "seeds": [0],
        "interactive": False,  # notebook 06: static figures, no widgets
    },
    # cpu: real radiographs on 2 CPU cores (FracAtlas, a manifest), from scratch: every model of every
    # notebook within ~3 hours (configs/cpu gives each model what fits)
    "cpu": {
        "device": "cpu",
        "n_resamples": 1000,
        "cam_per_group": 3,
        "seed": 0,
        "seeds": [0],
        "interactive": False,
        "explain_road_images": 10,  # notebook 06: ROAD faithfulness (slow on a CPU) on 10 fractured images per run
    },
    # full: the settings for a real MURA run on one GPU (ImageNet weights need internet or --weights)
    "full": {
        "device": "auto",
        "n_resamples": 2000,
        "cam_per_group": 6,
        "seed": 0,
        "seeds": [0, 1, 2],
        "interactive": False,
    },
}


def profile_config_dir(profile: str) -> Path:
    """The folder of ``profile``'s training settings (``configs/<profile>``, one ``<model>.json`` per model)."""
    return CONFIG_DIR / profile


class ReproduceError(RuntimeError):
    """A notebook failed or the request cannot run; the message names the notebook, the cell
    or the setting, and the error."""


# Parameters that describe a notebook itself or come with the profile, never set with -p.
FIXED_PARAMETERS = ("models", "config_dir")
