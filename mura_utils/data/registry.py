"""The dataset registry: every layout the package reads (MURA-v1.1, FracAtlas, a user's CSV manifest) as
one index table (path, split, body_part, patient, study, label) with its :class:`DatasetInfo` in
``attrs["dataset"]``.

Each dataset is one module of ``mura_utils.data`` that declares ``DATASET`` (a :class:`DatasetType`: how
to detect, read and describe it). Adding a dataset is that one file plus its name in ``DATASET_MODULES``;
detection, loading, config validation and the CLI's ``--dataset`` choices all read this list.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the readers (pandas) load on first use, so `mura --help` lists the names without them
    import pandas as pd

    from mura_utils.data.base import DatasetInfo, DatasetType

# name -> module that declares its DATASET, in detection order (only a manifest matches a .csv path, so the
# order decides nothing). A bare module name is one of mura_utils.data; a dotted one any importable module.
DATASET_MODULES: dict[str, str] = {"mura": "mura", "fracatlas": "fracatlas", "manifest": "manifest"}


def datasets() -> dict[str, DatasetType]:
    """{name: DatasetType} of every registered dataset, in detection order."""
    found = {}
    for name, module_name in DATASET_MODULES.items():
        module = importlib.import_module(module_name if "." in module_name else f"mura_utils.data.{module_name}")
        if module.DATASET.name != name:
            raise ValueError(
                f"data.registry: {module_name} declares dataset {module.DATASET.name!r}, listed as {name!r}"
            )
        found[name] = module.DATASET
    return found


def dataset_names() -> tuple[str, ...]:
    """The registered names (no reader is imported)."""
    return tuple(DATASET_MODULES)


def detect_dataset(root: str | Path) -> str:
    """The name of the dataset whose layout ``root`` holds; a path that is none of them is an error that
    says what was looked for."""
    from mura_utils.data.base import DatasetLayoutError

    path = Path(root).expanduser()
    registered = datasets()
    for name, kind in registered.items():
        if kind.looks_like(path):
            return name
    looked_for = "; ".join(kind.layout for kind in registered.values())
    raise DatasetLayoutError(
        f"{path}: not a dataset this package reads. Looked for {looked_for}. "
        "`mura sample DIR` writes a synthetic MURA-shaped sample."
    )


def dataset_type(root: str | Path, dataset: str = "auto") -> DatasetType:
    """The registered dataset at ``root``: detected, or the one named (``dataset``)."""
    registered = datasets()
    if dataset in (None, "", "auto"):
        return registered[detect_dataset(root)]
    if dataset not in registered:
        raise ValueError(f"unknown dataset {dataset!r}; choose auto or one of {list(registered)}")
    return registered[dataset]


def load_index(root: str | Path, dataset: str = "auto", splits: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The dataset at ``root`` as one row per image (all splits unless ``splits``); its DatasetInfo is
    ``table.attrs["dataset"]``."""
    table, info = dataset_type(root, dataset).read(root, splits)
    table.attrs["dataset"] = info
    return table


def dataset_folder(root: str | Path, dataset: str = "auto") -> Path:
    """The folder that holds a dataset (resolved): the MURA-v1.1 folder, the FracAtlas folder, a manifest's folder."""
    return dataset_type(root, dataset).folder(root)


def dataset_info(root: str | Path, dataset: str = "auto") -> DatasetInfo:
    """The DatasetInfo of the dataset at ``root`` (a manifest's vocabulary comes from its rows)."""
    return dataset_type(root, dataset).info(root)


def info_from_record(record: dict | None) -> DatasetInfo:
    """The DatasetInfo saved in a checkpoint, run.json or ONNX contract; MURA for files written before
    datasets were recorded."""
    from mura_utils.data.base import DatasetInfo
    from mura_utils.data.mura import INFO as MURA_INFO

    if record is None:
        return MURA_INFO
    stored = record.get("dataset") if isinstance(record, dict) else record
    if stored is None:  # written before datasets were recorded
        return MURA_INFO
    if isinstance(stored, DatasetInfo):
        return stored
    try:
        return DatasetInfo.from_dict(stored)
    except (TypeError, AttributeError) as error:
        raise ValueError(f"unreadable dataset record {stored!r} ({error}); expected DatasetInfo fields") from error
