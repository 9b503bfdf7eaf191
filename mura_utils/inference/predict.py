"""``mura predict``: abnormality (or fracture) probabilities for radiographs (PNG, JPEG or DICOM)
outside any dataset layout, scored per study like MURA, with optional Grad-CAM overlays (the map
drawn back through the letterbox onto the image at its own size, beside the plain image).

A folder given on the command line is one study (its direct image children); a file given on
its own is a study of one image. Each image goes through exactly the pixels path training used
(8-bit grayscale -> letterbox -> the registry's normalization), so probabilities are comparable.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw, ImageFont

from mura_utils.data.imaging import letterbox
from mura_utils.inference.predict_inputs import collect_inputs, read_image, study_predictions
from mura_utils.utils.formatting import plain_json

FORMATS = ("table", "json", "csv")

# --- prediction ----------------------------------------------------------------------------------


def load_predictor(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """``load_model``, with a model_name missing from this version's registry reported as a
    CheckpointError naming the file (build_model alone says only 'unknown model')."""
    from mura_utils.models.checkpoint import CheckpointError
    from mura_utils.models.restore import load_model

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


def cam_caption(probability: float, threshold: float, positive_label: str, negative_label: str) -> str:
    """The overlay's caption: the image's probability of the positive class, the checkpoint's threshold
    and the call they give, e.g. "p(fractured) = 0.83, threshold 0.41 -> fractured" (more decimals
    when two decimals would show the two numbers equal)."""
    call = positive_label if probability >= threshold else negative_label
    digits = 2
    while digits < 4 and f"{probability:.{digits}f}" == f"{threshold:.{digits}f}":
        digits += 1
    return f"p({positive_label}) = {probability:.{digits}f}, threshold {threshold:.{digits}f} -> {call}"


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1: one bitmap size only
        return ImageFont.load_default()


def cam_panels(gray: np.ndarray, heatmap: np.ndarray, caption: str) -> np.ndarray:
    """One RGB picture: the radiograph as it is (left) and with ``heatmap`` over it (right), both at
    the image's own size (``heatmap`` is on the image's pixels), and ``caption`` on a strip below
    (the picture widens when a small image leaves the caption too little room)."""
    from mura_utils.explain.cam import overlay

    height, width = gray.shape
    if heatmap.shape != gray.shape:
        raise ValueError(f"heatmap {heatmap.shape} is not on the image's pixels {gray.shape}")
    gap = max(2, width // 100)
    panels_width = 2 * width + gap
    font_size = max(10, round(panels_width / 45))
    margin = font_size // 2
    text_width = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(caption, font=_font(font_size))
    picture = Image.new(
        "RGB", (max(panels_width, int(np.ceil(text_width)) + 2 * margin), height + 2 * font_size), "white"
    )
    picture.paste(Image.fromarray(gray).convert("RGB"), (0, 0))
    picture.paste(Image.fromarray(overlay(gray, heatmap)), (width + gap, 0))
    ImageDraw.Draw(picture).text((margin, height + font_size // 2), caption, fill="black", font=_font(font_size))
    return np.asarray(picture)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    """Temp file then os.replace: an interrupted run never leaves a half-written overlay."""
    from mura_utils.utils.io import atomic_path

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

    Columns: path, study, probability (of the model's positive class: 'abnormal' for MURA, 'fractured'
    for FracAtlas), study_probability (mean over the study's images, as MURA scores studies),
    study_prediction (e.g. 'abnormal'/'normal', the names stored in the checkpoint, at the checkpoint's
    validation-chosen ``threshold``), threshold, predicted_body_part and body_part_probability
    (None/NaN for a single-task model) and, with ``cam_dir``, cam_path: a PNG of the image beside
    its Grad-CAM map of the abnormality logit (made on the letterboxed input, drawn back onto the
    image at its own size: ``cam_panels``), captioned with the image's probability and the threshold.

    ``checkpoint`` may be a ``mura ensemble`` file (probability: the members' mean; Grad-CAM: the
    mean of the members' heatmaps, each brought back onto the image's pixels) or an
    ONNX file from ``mura export`` (run with onnxruntime; no Grad-CAM). ``tta`` averages each
    image with its mirror image (see ``evaluate.predict_batches``).
    """
    if Path(checkpoint).suffix.lower() == ".onnx":
        if cam_dir:
            raise ValueError(f"{checkpoint}: Grad-CAM needs the PyTorch checkpoint, not an ONNX export")
        from mura_utils.inference.onnx_export import predict_onnx

        return predict_onnx(paths, checkpoint, batch_size=batch_size, tta=tta)
    from mura_utils.evaluation.predictions import predict_batches
    from mura_utils.evaluation.tta import mirrored_letterbox
    from mura_utils.explain.cam import cam_heatmaps
    from mura_utils.explain.frames import to_image_frame
    from mura_utils.models.checkpoint import checkpoint_dataset
    from mura_utils.models.ensemble import mean_outputs, members_of
    from mura_utils.utils.runtime import resolve_device

    inputs = collect_inputs(paths)
    torch_device = resolve_device(device)
    model, info = load_predictor(checkpoint, torch_device)
    members = members_of(model, info)
    threshold = float(info.get("threshold", 0.5))
    dataset = checkpoint_dataset(info)
    cam_paths = [Path(cam_dir) / name for name in _cam_names(inputs["path"].tolist())] if cam_dir else None

    batches = []
    for start in range(0, len(inputs), batch_size):
        rows = inputs.iloc[start : start + batch_size]
        grays = [read_image(path, kind) for path, kind in zip(rows["path"], rows["kind"])]
        positions = torch.arange(start, start + len(rows))
        member_outputs, member_heatmaps = [], []
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
                member_heatmaps.append(
                    cam_heatmaps(member.model, member.model_name, images, mean=member.mean, std=member.std)
                )
        batches.append(mean_outputs(member_outputs))
        if cam_paths is not None:  # one image at a time on its own pixels: a full-size map is large
            probability_of = dict(zip(batches[-1]["position"].tolist(), batches[-1]["probability"].tolist()))
            for offset, gray in enumerate(grays):
                heatmap = np.mean([to_image_frame(maps[offset], *gray.shape) for maps in member_heatmaps], axis=0)
                caption = cam_caption(
                    probability_of[start + offset], threshold, dataset.positive_label, dataset.negative_label
                )
                _write_png(cam_paths[start + offset], cam_panels(gray, heatmap, caption))
    outputs = {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}
    return study_predictions(inputs, outputs, threshold, cam_paths, dataset)


# --- output --------------------------------------------------------------------------------------


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
                "study_probability": plain_json(first["study_probability"]),
                "study_prediction": first["study_prediction"],
                "threshold": plain_json(first["threshold"]),
                "images": [{key: plain_json(row[key]) for key in image_keys} for _, row in rows.iterrows()],
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


__all__ = ["cam_caption", "cam_panels", "format_predictions", "load_predictor", "predict_paths"]
