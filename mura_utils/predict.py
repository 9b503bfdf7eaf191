"""``mura predict``: abnormality probabilities for radiographs (PNG, JPEG or DICOM) outside the
MURA folder layout, scored per study like MURA, with optional Grad-CAM overlays.

A folder given on the command line is one study (its direct image children); a file given on
its own is a study of one image. Each image goes through exactly the pixels path training used
(8-bit grayscale -> letterbox -> the registry's normalization), so probabilities are comparable.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .constants import NEGATIVE_LABEL, POSITIVE_LABEL
from .imaging import IMAGE_SUFFIXES, ImageReadError, letterbox, read_grayscale

DICOM_SUFFIXES = (".dcm", ".dicom")
SKIPPED_NAMES = (".DS_Store", "Thumbs.db")  # plus any hidden file (AppleDouble "._*" included)
FORMATS = ("table", "json", "csv")


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


# --- prediction ----------------------------------------------------------------------------------


def load_predictor(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """``load_model``, with a model_name missing from this version's registry reported as a
    CheckpointError naming the file (build_model alone says only 'unknown model')."""
    from .checkpoint import CheckpointError, load_model

    try:
        return load_model(checkpoint, device)
    except CheckpointError:
        raise
    except ValueError as error:  # build_model -> get_spec: model_name not in MODEL_REGISTRY
        raise CheckpointError(f"{checkpoint}: cannot build the checkpoint's model: {error}") from error


def _cam_names(paths: list[str]) -> list[str]:
    """Readable unique overlay names: two parent folders (patient, study) and the file stem."""
    names, used = [], set()
    for path in paths:
        parts = Path(path).with_suffix("").parts[-3:]
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", "__".join(parts)).strip("._") or "image"
        name, count = f"{base}_cam.png", 1
        while name.lower() in used:
            count += 1
            name = f"{base}_cam-{count}.png"
        used.add(name.lower())
        names.append(name)
    return names


def _resized(heatmap: np.ndarray, size: int) -> np.ndarray:
    """A float heatmap resized (bilinear) to size x size; grad-cam gives it at the member's input size."""
    if heatmap.shape == (size, size):
        return heatmap
    return np.asarray(Image.fromarray(heatmap.astype(np.float32)).resize((size, size), Image.BILINEAR))


def _write_png(path: Path, rgb: np.ndarray) -> None:
    """Temp file then os.replace: an interrupted run never leaves a half-written overlay."""
    from .io import atomic_path

    with atomic_path(path) as temporary:
        Image.fromarray(rgb).save(temporary, format="PNG")


def predict_paths(
    paths: list[str | Path] | str | Path,
    checkpoint: str | Path,
    device: str = "auto",
    batch_size: int = 16,
    cam_dir: str | Path | None = None,
    tta: bool = False,
) -> pd.DataFrame:
    """Predict every image under ``paths``; one row per image.

    Columns: path, study, probability (of 'abnormal'), study_probability (mean over the study's
    images, as MURA scores studies), study_prediction ('abnormal'/'normal' at the checkpoint's
    validation-chosen ``threshold``), threshold, predicted_body_part and body_part_probability
    (None/NaN for a single-task model) and, with ``cam_dir``, cam_path: a Grad-CAM overlay PNG
    of the abnormality logit on the letterboxed image.

    ``checkpoint`` may be a ``mura ensemble`` file (probability: the members' mean; Grad-CAM: the
    mean of the members' heatmaps, each resized to the largest member's letterboxed image) or an
    ONNX file from ``mura export`` (run with onnxruntime; no Grad-CAM). ``tta`` averages each
    image with its mirror image (see ``evaluate.predict_batches``).
    """
    if Path(checkpoint).suffix.lower() == ".onnx":
        if cam_dir:
            raise ValueError(f"{checkpoint}: Grad-CAM needs the PyTorch checkpoint, not an ONNX export")
        from .export import predict_onnx

        return predict_onnx(paths, checkpoint, batch_size=batch_size, tta=tta)
    from .cam import gradcam_heatmaps, overlay
    from .ensemble import mean_outputs, members_of
    from .evaluate import predict_batches
    from .runtime import resolve_device
    from .tta import mirrored_letterbox

    inputs = collect_inputs(paths)
    torch_device = resolve_device(device)
    model, info = load_predictor(checkpoint, torch_device)
    members = members_of(model, info)
    threshold = float(info.get("threshold", 0.5))
    cam_paths = [Path(cam_dir) / name for name in _cam_names(inputs["path"].tolist())] if cam_dir else None
    cam_size = max(member.img_size for member in members)

    batches = []
    for start in range(0, len(inputs), batch_size):
        rows = inputs.iloc[start : start + batch_size]
        grays = [read_image(path, kind) for path, kind in zip(rows["path"], rows["kind"])]
        positions = torch.arange(start, start + len(rows))
        member_outputs, heatmap_sum = [], None
        for member in members:
            images = torch.from_numpy(np.stack([letterbox(gray, member.img_size) for gray in grays]))[:, None]
            batch = {"image": images, "position": positions}  # (N,1,S,S) uint8
            if tta:
                mirrored = np.stack([mirrored_letterbox(gray, member.img_size) for gray in grays])
                batch["mirrored_image"] = torch.from_numpy(mirrored)[:, None]
            member_outputs.append(
                predict_batches(member.model, [batch], torch_device, member.mean, member.std, tta=tta)
            )
            if cam_paths is not None:
                heatmaps = gradcam_heatmaps(member.model, member.model_name, images, mean=member.mean, std=member.std)
                heatmaps = np.stack([_resized(heatmap, cam_size) for heatmap in heatmaps])
                heatmap_sum = heatmaps if heatmap_sum is None else heatmap_sum + heatmaps
        batches.append(mean_outputs(member_outputs))
        if cam_paths is not None:
            for offset, (gray, heatmap) in enumerate(zip(grays, heatmap_sum / len(members))):
                _write_png(cam_paths[start + offset], overlay(letterbox(gray, cam_size), heatmap))
    outputs = {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}
    return study_predictions(inputs, outputs, threshold, cam_paths)


def study_predictions(
    inputs: pd.DataFrame, outputs: dict[str, np.ndarray], threshold: float, cam_paths: list[Path] | None = None
) -> pd.DataFrame:
    """``predict_paths``' table from ``collect_inputs`` rows and model outputs (PyTorch or ONNX)."""
    from .evaluate import predictions_table

    table = predictions_table(inputs, outputs)
    table["study_probability"] = table.groupby("study", sort=False)["probability"].transform("mean")
    table["study_prediction"] = np.where(table["study_probability"] >= threshold, POSITIVE_LABEL, NEGATIVE_LABEL)
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


# --- output --------------------------------------------------------------------------------------


def _plain(value):
    """JSON-safe scalar: NumPy numbers to Python, NaN to null."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def format_predictions(table: pd.DataFrame, fmt: str = "table") -> str:
    """Render ``predict_paths`` output as 'table' (one block per study, then its images),
    'json' (a list of studies, each with its images) or 'csv' (one row per image)."""
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    image_keys = [
        key
        for key in ("path", "probability", "predicted_body_part", "body_part_probability", "cam_path")
        if key in table
    ]
    studies = []
    for study, rows in table.groupby("study", sort=False):
        first = rows.iloc[0]
        studies.append(
            {
                "study": study,
                "study_probability": _plain(first["study_probability"]),
                "study_prediction": first["study_prediction"],
                "threshold": _plain(first["threshold"]),
                "images": [{key: _plain(row[key]) for key in image_keys} for _, row in rows.iterrows()],
            }
        )
    if fmt == "json":
        return json.dumps(studies, indent=2) + "\n"

    lines = []
    for study in studies:
        lines.append(
            f"{study['study']}: {study['study_prediction'].upper()}  study probability "
            f"{study['study_probability']:.3f} (threshold {study['threshold']:.3f}, "
            f"{len(study['images'])} image{'s' if len(study['images']) != 1 else ''})"
        )
        lines.append(f"  {'probability':>11}  {'body part':<16}  image")
        for image in study["images"]:
            part = image["predicted_body_part"]
            part = f"{part} ({image['body_part_probability']:.2f})" if part else "-"
            lines.append(f"  {image['probability']:>11.3f}  {part:<16}  {image['path']}")
        lines.append("")
    return "\n".join(lines)


__all__ = [
    "PredictInputError",
    "collect_inputs",
    "format_predictions",
    "load_predictor",
    "predict_paths",
    "read_dicom",
    "read_image",
]
