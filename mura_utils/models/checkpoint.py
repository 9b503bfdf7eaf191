"""Saving and loading checkpoints: weights plus everything needed to rebuild and judge the model
(config, epoch, validation metrics, threshold, package version), written atomically.

Checkpoints travel between people (a colleague's ``best.pt``, ensembles, exports), and a ``.pt``
file is a pickle: loaded with ``weights_only=False`` it can run any code it carries. So a
checkpoint holds only tensors and plain Python values, is read with ``torch.load(weights_only=True)``,
and a file holding anything else is refused before any of it runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mura_utils.config import TrainConfig
from mura_utils.models.registry import get_spec
from mura_utils.utils.io import atomic_torch_save

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and why."""


_PLAIN_LEAVES = (str, int, float, bool, bytes, type(None), torch.Tensor, torch.dtype, torch.device)


def _plain(value: Any, where: str) -> Any:
    """``value`` as tensors and plain Python types only, so it loads with ``weights_only=True``.

    numpy arrays become tensors (``np.random.set_state`` and numpy functions accept them back),
    numpy scalars become Python numbers; anything else that is not plain is an error naming its key.
    """
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value).copy()
        try:
            return torch.from_numpy(array)
        except TypeError:  # e.g. uint32 before torch 2.3: widen, numpy takes it back as well
            return torch.from_numpy(array.astype(np.int64 if array.dtype.kind in "iu" else np.float64))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, _PLAIN_LEAVES):
        return value
    if isinstance(value, dict):
        items = {key: _plain(item, f"{where}[{key!r}]") for key, item in value.items()}
        if all(items[key] is item for key, item in value.items()):
            return value  # untouched, so a state_dict keeps its OrderedDict type and _metadata
        return dict(items)
    if type(value) in (list, tuple, torch.Size):
        items = [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if all(new is old for new, old in zip(items, value)):
            return value
        return list(items) if type(value) is list else tuple(items)
    raise TypeError(
        f"cannot save {where} in a checkpoint: {type(value).__module__}.{type(value).__qualname__} is not a "
        "tensor or plain Python value (checkpoints must load with torch.load(weights_only=True))"
    )


def _legacy_numpy_globals() -> list:
    """numpy pieces that checkpoints written before the plain-types rule hold (the numpy RNG state
    in ``last.pt``): array and scalar rebuilders that construct data, never call anything else."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy 2 / 1.x
    pieces = [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype]
    pieces += [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFD"]  # numpy >= 1.25 pickles dtype classes
    aliases = [(multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]  # written by numpy 1.x
    aliases += [(multiarray.scalar, "numpy.core.multiarray.scalar")]
    return pieces + aliases


@contextmanager
def _numpy_allowed() -> Iterator[None]:
    safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    if safe_globals is None:
        yield
        return
    with safe_globals(_legacy_numpy_globals()):
        yield


_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")  # torch's weights_only refusal


def _load_weights_only(path: Path) -> Any:
    """``torch.load(weights_only=True)``: a file referring to any other code is refused unrun."""
    try:
        with _numpy_allowed():
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        message = str(error)
        unsafe = _UNSAFE_GLOBAL.search(message)
        if unsafe:
            raise CheckpointError(
                f"{path}: refused to load: the file holds non-weight objects (it refers to "
                f"{unsafe.group(1)!r}), "
                "which unpickling would run as code. A checkpoint may hold only tensors and plain Python "
                "values; nothing from this file was run. If you trust its author, ask for a re-saved "
                "checkpoint (mura_utils.models.checkpoint.save_checkpoint) instead of loading it unsafely."
            ) from error
        detail = message.split("WeightsUnpickler error:")[-1].strip().splitlines()[0][:300] if message else type(error)
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({detail})") from error


def package_version() -> str:
    from mura_utils import __version__

    return __version__


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    config: TrainConfig,
    epoch: int,
    metrics: dict | None = None,
    threshold: float = 0.5,
    **extra,
) -> None:
    """Write a checkpoint via temp file + rename: a crash never leaves a half-written file.

    Everything saved must be tensors or plain Python values (numpy arrays and scalars are converted),
    so the file loads with ``weights_only=True``; anything else raises TypeError naming its key.
    """
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    spec = get_spec(config.model)
    # the normalization the weights were trained with travels with them (a timm upgrade may change the defaults)
    extra = {"mean": float(spec.mean), "std": float(spec.std), **extra}
    contents = _plain(
        {
            "format": CHECKPOINT_FORMAT,
            "package_version": package_version(),
            "model_name": config.model,
            "multitask": config.multitask,
            "config": config.to_dict(),
            "epoch": epoch,
            "metrics": metrics or {},
            "threshold": threshold,
            "state_dict": model.state_dict(),
            **extra,
        },
        "checkpoint",
    )
    atomic_torch_save(contents, path)


def read_checkpoint(path: str | Path) -> dict:
    """Load and check a checkpoint file, raising CheckpointError that names it.

    Read with ``weights_only=True``: a file carrying a pickled object (code that would run on load)
    is refused before anything in it runs.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    checkpoint = _load_weights_only(path)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "model_name" not in checkpoint:
        raise CheckpointError(f"{path}: not a mura_utils checkpoint (no model_name/state_dict)")
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {checkpoint.get('format')} written by mura_utils "
            f"{checkpoint.get('package_version')}; this version reads format {CHECKPOINT_FORMAT}"
        )
    return checkpoint


def checkpoint_dataset(checkpoint: dict):
    """The DatasetInfo a checkpoint (or ensemble) was trained on: body-part vocabulary and label meaning
    (MURA for files written before datasets were recorded; an ensemble: its first member's)."""
    from mura_utils.data.registry import info_from_record

    if checkpoint.get("dataset") is None and checkpoint.get("members"):
        return info_from_record(checkpoint["members"][0])
    return info_from_record(checkpoint)
