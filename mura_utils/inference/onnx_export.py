"""``mura export``: a checkpoint (single model or ensemble) as one ONNX file for a viewer or a
hospital pipeline, with its preprocessing contract in the file's ``metadata_props``, and
``predict_onnx`` that runs such a file with onnxruntime exactly as ``mura predict`` runs the
PyTorch checkpoint.

The graph takes one input per member, ``image_<i>``: (N,1,S_i,S_i) float32 pixel values 0..255 of
the 8-bit grayscale radiograph letterboxed to S_i (long side resized to S_i, bilinear, centred on
black). Normalization (x/255 - mean)/std, the sigmoid/softmax and the ensemble mean are inside the
graph; outputs are ``probability`` (N,) of the model's positive class (``positive_label``: "abnormal"
for MURA, "fractured" for FracAtlas) and, for multitask models, ``body_part_probabilities`` (N,parts)
in ``body_parts`` order (the training dataset's vocabulary, also in ``dataset``). Exported with the TorchScript-based
exporter (``torch.onnx.export(dynamo=False)``): the dynamo exporter needs ``onnxscript``, which
this project does not install.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

FORMATS = ("onnx",)
OPSET = 17  # LayerNormalization (ConvNeXt) is in opset 17; onnxruntime >= 1.13 runs it
CONTRACT_KEY = "mura_contract"
LETTERBOX = (
    "8-bit grayscale; resize keeping the aspect ratio so the long side is img_size (bilinear); paste centred "
    "(offset (img_size - side) // 2) on a black img_size x img_size canvas; feed pixel values 0..255 as float32"
)


def _import_optional(module: str):
    """Import onnx/onnxruntime, or say how to install them (they are the optional ``export`` extra)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise RuntimeError(
            f"{module} is not installed: pip install 'mura_utils[export]' (onnx, onnxruntime)"
        ) from error


class _TupleOutputs(nn.Module):
    """EnsembleNet with tuple outputs (ONNX graphs return tensors, not dicts)."""

    def __init__(self, ensemble: nn.Module):
        super().__init__()
        self.ensemble = ensemble

    def forward(self, *pixels: torch.Tensor):
        outputs = self.ensemble(*pixels)
        if "body_part_probabilities" in outputs:
            return outputs["probability"], outputs["body_part_probabilities"]
        return (outputs["probability"],)


def export_onnx(checkpoint: str | Path, out: str | Path, opset: int = OPSET) -> dict:
    """Write ``checkpoint`` (single model or ensemble) as an ONNX file; returns the contract stored
    in its metadata (also readable with ``read_contract``)."""
    onnx = _import_optional("onnx")

    from mura_utils.models.checkpoint import checkpoint_dataset
    from mura_utils.models.ensemble import EnsembleNet, is_ensemble, members_of
    from mura_utils.models.restore import load_model
    from mura_utils.utils.io import atomic_path

    model, info = load_model(checkpoint, "cpu")
    dataset = checkpoint_dataset(info)
    members = members_of(model, info)
    ensemble = model if isinstance(model, EnsembleNet) else EnsembleNet(members)
    module = _TupleOutputs(ensemble).eval()
    input_names = [f"image_{number}" for number in range(len(members))]
    output_names = ["probability"] + (["body_part_probabilities"] if ensemble.multitask else [])
    examples = tuple(torch.zeros(1, 1, member.img_size, member.img_size) for member in members)
    contract = {
        "format": 1,
        "inputs": [
            {"name": name, "model_name": m.model_name, "img_size": m.img_size, "mean": m.mean, "std": m.std}
            for name, m in zip(input_names, members)
        ],
        "input_layout": "N,1,H,W float32 pixel values 0..255 (normalization is inside the graph)",
        "letterbox": LETTERBOX,
        "outputs": output_names,
        "threshold": float(info.get("threshold", 0.5)),
        "threshold_applies_to": "study probability = mean of the study's image probabilities",
        "positive_label": dataset.positive_label,
        "negative_label": dataset.negative_label,
        "body_parts": list(dataset.body_parts),
        "dataset": dataset.to_dict(),
        "model_names": [member.model_name for member in members],
        "ensemble": is_ensemble(info),
        "source_checkpoint": str(checkpoint),
        "package_version": info.get("package_version"),
    }
    with atomic_path(out) as temporary, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice and tracer warnings
        torch.onnx.export(
            module,
            examples,
            str(temporary),
            dynamo=False,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes={name: {0: "batch"} for name in input_names + output_names},
        )
        graph = onnx.load(str(temporary))
        plain = {
            CONTRACT_KEY: json.dumps(contract),
            "threshold": str(contract["threshold"]),
            "model_names": ",".join(contract["model_names"]),
            "body_parts": ",".join(dataset.body_parts),
            "img_sizes": ",".join(str(member.img_size) for member in members),
        }
        for key, value in plain.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        graph.doc_string = "mura_utils abnormality model; preprocessing contract in metadata_props['mura_contract']"
        onnx.checker.check_model(graph)
        onnx.save(graph, str(temporary))
    return contract


def _session(path: str | Path):
    onnxruntime = _import_optional("onnxruntime")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: ONNX file not found")
    try:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own types for a damaged file
        raise ValueError(f"{path}: not a readable ONNX model ({error})") from error


def read_contract(path: str | Path, session=None) -> dict:
    """The preprocessing contract ``export_onnx`` stored in an ONNX file's metadata."""
    session = session or _session(path)
    metadata = session.get_modelmeta().custom_metadata_map
    if CONTRACT_KEY not in metadata:
        raise ValueError(f"{path}: ONNX file without a {CONTRACT_KEY!r} entry (not written by mura export)")
    return json.loads(metadata[CONTRACT_KEY])


def predict_onnx(
    paths: list[str | Path] | str | Path, onnx_path: str | Path, batch_size: int = 16, tta: bool = False
) -> pd.DataFrame:
    """``predict.predict_paths`` for an exported ONNX file (onnxruntime on the CPU): the same
    reading, letterboxing, TTA views and table, with the contract taken from the file."""
    from mura_utils.data.imaging import letterbox
    from mura_utils.data.registry import info_from_record
    from mura_utils.evaluation.tta import mirrored_letterbox
    from mura_utils.inference.predict_inputs import collect_inputs, read_image, study_predictions

    session = _session(onnx_path)
    contract = read_contract(onnx_path, session)
    inputs = collect_inputs(paths)
    batches = []
    for start in range(0, len(inputs), batch_size):
        rows = inputs.iloc[start : start + batch_size]
        grays = [read_image(path, kind) for path, kind in zip(rows["path"], rows["kind"])]
        views = [letterbox] + ([mirrored_letterbox] if tta else [])
        view_outputs = []
        for view in views:
            feed = {
                entry["name"]: np.stack([view(gray, entry["img_size"]) for gray in grays])[:, None].astype(np.float32)
                for entry in contract["inputs"]
            }
            view_outputs.append(dict(zip(contract["outputs"], session.run(contract["outputs"], feed))))
        outputs = {"position": np.arange(start, start + len(rows))}
        outputs["probability"] = np.mean([view["probability"] for view in view_outputs], axis=0)
        if "body_part_probabilities" in contract["outputs"]:
            outputs["body_part_probabilities"] = np.mean([v["body_part_probabilities"] for v in view_outputs], axis=0)
        batches.append(outputs)
    outputs = {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}
    return study_predictions(inputs, outputs, float(contract["threshold"]), dataset=info_from_record(contract))


__all__ = ["FORMATS", "export_onnx", "predict_onnx", "read_contract"]
