"""Local ImageNet weights files (``--weights``), read safely on every torch the project allows.

timm's own file loader unpickles ``.pth`` files with ``torch.load`` and, on timm < 1.0 or torch < 2.6,
without ``weights_only``: a weights file from the internet could run any code it carries. So the file
is read here (``.safetensors`` with safetensors, anything else with ``torch.load(weights_only=True)``),
a file holding any non-tensor object is refused before any of it runs, and timm gets the tensors as
an in-memory state dict, so its loader still sums the RGB stem to one channel and drops the classifier.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from torch import nn

WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")  # timm's order: EMA weights first
_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DistributedDataParallel wrappers
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")  # torch's weights_only refusal


class WeightsFileError(ValueError):
    """A weights file that cannot be used; the message names the file and why."""


def _load_tensors_only(path: Path) -> object:
    """``torch.load(weights_only=True)`` whatever torch's default: anything but tensors and plain
    containers is refused unrun."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        message = str(error)
        unsafe = _UNSAFE_GLOBAL.search(message)
        if unsafe:
            raise WeightsFileError(
                f"{path}: refused to load: the file holds non-weight objects (it refers to {unsafe.group(1)!r}), "
                "which unpickling would run as code; nothing from this file was run. A weights file may hold only "
                "tensors: use the model's model.safetensors from https://huggingface.co/timm, or re-save just "
                "the tensors (torch.save(model.state_dict(), path)) where you trust the file."
            ) from error
        detail = message.split("WeightsUnpickler error:")[-1].strip().splitlines()[0][:300] if message else error
        raise WeightsFileError(f"{path}: not a readable PyTorch weights file ({detail})") from error


def _unwrap(contents: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint's usual wrappers, DDP/compile prefixes removed."""
    if isinstance(contents, Mapping):
        key = next((name for name in WRAPPER_KEYS if isinstance(contents.get(name), Mapping)), None)
        if key is not None:
            contents = contents[key]
    if not isinstance(contents, Mapping) or not contents:
        raise WeightsFileError(f"{path}: holds no state dict (a mapping of parameter names to tensors)")
    state_dict = {}
    for name, value in contents.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsFileError(
                f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor: not a state dict "
                f"(wrappers understood: {', '.join(WRAPPER_KEYS)})"
            )
        while isinstance(name, str) and name.startswith(_PREFIXES):
            name = next(name.removeprefix(prefix) for prefix in _PREFIXES if name.startswith(prefix))
        state_dict[name] = value
    return state_dict


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: ``.safetensors``, or a ``.pth``/``.pt``/``.bin`` state dict
    (bare or wrapped in ``state_dict``/``model``), read without running anything the file holds."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return _unwrap(load_file(str(path), device="cpu"), path)
        except WeightsFileError:
            raise
        except Exception as error:  # safetensors raises its own SafetensorError, OSError, ...
            raise WeightsFileError(f"{path}: not a readable safetensors file ({error})") from error
    return _unwrap(_load_tensors_only(path), path)


def create_from_weights_file(timm_name: str, path: str | Path, **kwargs) -> nn.Module:
    """``timm.create_model(timm_name, pretrained=True, **kwargs)`` with the tensors of ``path``: timm's
    loader adapts the stem to ``in_chans`` (3-channel kernels summed to 1) and drops a classifier that
    does not fit, exactly as for its own downloads."""
    from timm.models import PretrainedCfg

    if "state_dict" not in {field.name for field in dataclasses.fields(PretrainedCfg)}:  # would load the hub's
        raise RuntimeError(f"timm {timm.__version__} cannot load an in-memory state dict; upgrade timm")
    state_dict = read_weights(path)
    model = timm.create_model(timm_name, pretrained=True, pretrained_cfg_overlay=dict(state_dict=state_dict), **kwargs)
    model.pretrained_cfg.pop("state_dict", None)  # timm keeps a copy of the overlay: do not hold the tensors twice
    return model


__all__ = ["WeightsFileError", "create_from_weights_file", "read_weights"]
