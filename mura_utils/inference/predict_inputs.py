"""Reading what users point the models at: radiographs (PNG, JPEG, DICOM) and study folders, and
turning model outputs for them into a per-study table. Shared by ``predict`` (PyTorch) and ``onnx_export``
(ONNX) so neither imports the other for it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from mura_utils.data.base import DatasetInfo
from mura_utils.data.imaging import IMAGE_SUFFIXES, ImageReadError, read_grayscale
from mura_utils.data.registry import info_from_record
from mura_utils.evaluation.metrics import image_study_probability

DICOM_SUFFIXES = (".dcm", ".dicom")
SKIPPED_NAMES = (".DS_Store", "Thumbs.db")  # plus any hidden file (AppleDouble "._*" included)


class PredictInputError(ValueError):
    """An input path that cannot be predicted (unsupported file, empty folder); names the path."""


# --- reading -------------------------------------------------------------------------------------


def _is_dicom_file(path: Path) -> bool:
    """DICOM by suffix, or by the 'DICM' marker at byte 128 (archives often drop the suffix or
    name files by UID, e.g. ``1.2.840.113619.2.55``)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with open(path, "rb") as handle:
        return handle.read(132)[128:] == b"DICM"


def read_dicom(path: str | Path) -> np.ndarray:
    """Decode a DICOM radiograph to HxW uint8 as a viewer would show it: modality LUT (rescale
    slope/intercept), then the file's VOI LUT or window, MONOCHROME1 inverted so bone is bright.

    Without a window the pixels' own min/max are stretched to 0..255 (as for 16-bit PNGs).
    Pixel spacing is ignored: letterboxing rescales every image anyway.
    """
    import pydicom

    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(path, force=True)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: DICOM file not found") from None
    except Exception as error:  # pydicom raises many types for a damaged file
        raise ImageReadError(f"{path}: cannot read DICOM file ({error})") from error
    if not any(tag in dataset for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageReadError(f"{path}: DICOM file has no pixel data (not an image, e.g. a report or SR)")
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # missing decoder plugin, truncated data, ...
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax) or "unknown transfer syntax"
        raise ImageReadError(
            f"{path}: cannot decode DICOM pixel data ({name}): {error}. Compressed DICOM "
            "needs a decoder: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg "
            "(or python-gdcm)"
        ) from error

    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        warnings.warn(f"{path}: multi-frame DICOM ({frames} frames); using the first frame only", stacklevel=2)
        pixels = pixels[0]
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        if pixels.ndim == 3 and pixels.shape[-1] == 3:  # RGB / YBR (pydicom converts YBR to RGB)
            return _stretch(pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114]), None)
        raise ImageReadError(f"{path}: unsupported DICOM photometric interpretation {photometric!r}")

    try:
        values = apply_modality_lut(pixels, dataset)
        lut = dataset.VOILUTSequence[0] if dataset.get("VOILUTSequence") else None
        window_range = None
        if lut is not None and "LUTDescriptor" in lut and "LUTData" in lut:  # pydicom prefers it to a window
            entries, first = lut.LUTDescriptor[0] or 2**16, lut.LUTDescriptor[1]
            values = apply_voi_lut(np.rint(values).astype(np.int64), dataset)  # a LUT indexes integers
            window_range = apply_voi_lut(np.arange(first, first + entries), dataset)  # every LUT entry
        elif "WindowCenter" in dataset and "WindowWidth" in dataset:
            values = apply_voi_lut(values, dataset)
            window_range = apply_voi_lut(np.array([-1e12, 1e12]), dataset)  # far outside: the output range
        if window_range is not None:
            window_range = (float(np.min(window_range)), float(np.max(window_range)))
    except Exception as error:  # malformed window, LUT descriptor, ...
        raise ImageReadError(f"{path}: cannot apply the DICOM modality/VOI LUT ({error})") from error
    gray = _stretch(values, window_range)
    return 255 - gray if photometric == "MONOCHROME1" else gray


def _stretch(values: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    """Map ``value_range`` (default: the values' own min/max) linearly onto 0..255 uint8."""
    values = np.asarray(values, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if value_range is None else value_range
    if not high > low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.clip((values - low) * (255.0 / (high - low)), 0, 255).round().astype(np.uint8)


def read_image(path: str | Path, kind: str | None = None) -> np.ndarray:
    """Any supported file to HxW uint8: DICOM through ``read_dicom``, PNG/JPEG through
    ``read_grayscale``. ``kind`` ('image'|'dicom') skips the detection when already known."""
    if kind is None:
        kind = "dicom" if _is_dicom_file(Path(path)) else "image"
    return read_dicom(path) if kind == "dicom" else read_grayscale(path)


# --- inputs --------------------------------------------------------------------------------------


def _file_kind(path: Path) -> str:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    if _is_dicom_file(path):
        return "dicom"
    raise PredictInputError(
        f"{path}: unsupported file type (expected {', '.join(IMAGE_SUFFIXES)} or DICOM {', '.join(DICOM_SUFFIXES)})"
    )


def _skipped(path: Path) -> bool:
    """Finder/Explorer litter (``._image1.png``, ``.DS_Store``, ``Thumbs.db``) inside a study folder."""
    return path.name.startswith(".") or path.name in SKIPPED_NAMES


def collect_inputs(paths: list[str | Path] | str | Path) -> pd.DataFrame:
    """Expand command-line paths into one row per image: path, study, kind ('image'|'dicom').

    A folder is one study made of its direct image/DICOM children (MURA's unit of diagnosis);
    a file is a study of its own, named by the file. A file listed twice is kept once.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    rows, seen = [], set()
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        if path.is_dir():
            children = sorted(child for child in path.iterdir() if child.is_file() and not _skipped(child))
            if not children:
                has_subfolders = any(child.is_dir() for child in path.iterdir())
                raise PredictInputError(
                    f"{path}: empty folder (no images directly inside it"
                    + ("; pass its study subfolders instead)" if has_subfolders else ")")
                )
            files = [(child, str(path)) for child in children]
        else:
            files = [(path, str(path))]
        for file, study in files:
            kind = _file_kind(file)
            key = file.resolve()
            if key in seen:
                warnings.warn(f"{file}: given more than once; predicted once, in its first study", stacklevel=2)
                continue
            seen.add(key)
            rows.append({"path": str(file), "study": study, "kind": kind})
    if not rows:
        raise PredictInputError("no input images given")
    return pd.DataFrame(rows, columns=["path", "study", "kind"])


def study_predictions(
    inputs: pd.DataFrame,
    outputs: dict[str, np.ndarray],
    threshold: float,
    cam_paths: list[Path] | None = None,
    dataset: DatasetInfo | None = None,
) -> pd.DataFrame:
    """``predict_paths``' table from ``collect_inputs`` rows and model outputs (PyTorch or ONNX);
    ``dataset`` (the model's, from its checkpoint or ONNX contract; MURA when None) names the body parts
    and the two classes."""
    from mura_utils.evaluation.predictions import predictions_table

    info = dataset if dataset is not None else info_from_record(None)
    table = predictions_table(inputs, outputs, info.body_parts)
    table["study_probability"] = image_study_probability(table)
    table["study_prediction"] = np.where(
        table["study_probability"] >= threshold, info.positive_label, info.negative_label
    )
    table["threshold"] = threshold
    columns = [
        "path",
        "study",
        "probability",
        "study_probability",
        "study_prediction",
        "threshold",
        "predicted_body_part",
        "body_part_probability",
    ]
    if cam_paths is not None:
        table["cam_path"] = [str(path) for path in cam_paths]
        columns.append("cam_path")
    return table[columns]
