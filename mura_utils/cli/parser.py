"""The ``mura`` commands and their options; ``main`` runs one and turns the package's errors into one
line naming the file and the problem, exit status 2."""

from __future__ import annotations

import argparse
import sys

from mura_utils.cli.commands import (
    _cmd_compare,
    _cmd_ensemble,
    _cmd_evaluate,
    _cmd_explain,
    _cmd_export,
    _cmd_predict,
    _cmd_prepare,
    _cmd_reproduce,
    _cmd_sample,
    _cmd_sample_external,
    _cmd_sample_fracatlas,
    _cmd_sample_manifest,
    _cmd_train,
)
from mura_utils.cli.train_options import add_train_config_options, optional_value


def build_parser() -> argparse.ArgumentParser:
    from mura_utils.data.registry import dataset_names
    from mura_utils.models.registry import MODEL_ORDER

    parser = argparse.ArgumentParser(
        prog="mura",
        description="Abnormality (fracture) detection on musculoskeletal radiographs: MURA, FracAtlas or your own CSV manifest.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    sample = commands.add_parser("sample", help="write the synthetic MURA-v1.1-shaped sample")
    sample.add_argument("out_dir")
    sample.add_argument("--patients-per-part", type=int, default=None, help="train patients per body part")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(handler=_cmd_sample)

    external = commands.add_parser("sample-external", help="write a synthetic sample in the external set's layout")
    external.add_argument("out_dir")
    external.add_argument("--seed", type=int, default=0)
    external.set_defaults(handler=_cmd_sample_external)

    fracatlas = commands.add_parser("sample-fracatlas", help="write a synthetic sample in FracAtlas's layout")
    fracatlas.add_argument("out_dir")
    fracatlas.add_argument("--images", type=int, default=60, help="number of images (about 20%% fractured)")
    fracatlas.add_argument("--seed", type=int, default=0)
    fracatlas.set_defaults(handler=_cmd_sample_fracatlas)

    manifest = commands.add_parser("sample-manifest", help="write synthetic images with a CSV manifest")
    manifest.add_argument("out_dir")
    manifest.add_argument("--patients", type=int, default=24, help="number of patients (a third held out)")
    manifest.add_argument("--seed", type=int, default=0)
    manifest.set_defaults(handler=_cmd_sample_manifest)

    prepare = commands.add_parser("prepare", help="decode every image once into a uint8 memory-mapped cache")
    prepare.add_argument("--data-root", required=True)
    prepare.add_argument("--dataset", default="auto", choices=["auto", *dataset_names()])
    prepare.add_argument("--img-size", type=int, required=True)
    prepare.add_argument("--cache-dir", default=None)
    prepare.set_defaults(handler=_cmd_prepare)

    train = commands.add_parser(
        "train",
        help="train one model (best epoch chosen on a patient-level split)",
        description="Train one model. Every TrainConfig field is an option; --config FILE starts from a saved "
        f"config.json (explicit flags override it). Seed models: {', '.join(MODEL_ORDER)}; any timm model name "
        "works too (convnext_tiny, efficientnet_b3, resnet18, ...).",
    )
    train.add_argument("--config", default=None, help="a saved config.json to rerun (explicit flags override it)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (with the same settings)")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="train afresh into an OUT that holds a trained run: first removes its checkpoints and records "
        "(run.json, *.pt, history, predictions, metrics) and names them; without it such an OUT is refused",
    )
    add_train_config_options(train)
    train.set_defaults(handler=_cmd_train)

    evaluate = commands.add_parser(
        "evaluate", help="metrics of a checkpoint on a dataset split (default: its test split)"
    )
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument(
        "--data-root", required=True, help="MURA-v1.1 (or its parent), a FracAtlas folder, or a manifest .csv"
    )
    evaluate.add_argument("--dataset", default="auto", choices=["auto", *dataset_names()])
    evaluate.add_argument(
        "--split",
        default=None,
        help="split to score (default: the dataset's held-out test split: MURA valid, FracAtlas/manifest test)",
    )
    evaluate.add_argument("--out", required=True)
    evaluate.add_argument("--threshold", default="0.5", help="a number, or 'val' for the one chosen on validation")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--cache-dir", default=None)
    evaluate.add_argument("--no-cache", action="store_true")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="patient-bootstrap resamples for metrics.json's 95%% intervals (0: none; default 1000)",
    )
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    evaluate.add_argument("--tta", action="store_true", help="average each image with its mirror image")
    evaluate.set_defaults(handler=_cmd_evaluate)

    compare = commands.add_parser(
        "compare", help="paired A - B differences of two evaluations of the same images (patient bootstrap)"
    )
    compare.add_argument("a", help="folder from mura evaluate (predictions.csv + metrics.json) or a run folder")
    compare.add_argument("b", help="the same for the other model")
    compare.add_argument("--out", required=True, help="writes compare.json and compare.md here")
    compare.add_argument("--bootstrap", type=int, default=2000, help="patient resamples (default 2000)")
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="study and image threshold for both A and B (default: each side's recorded threshold)",
    )
    compare.set_defaults(handler=_cmd_compare)

    predict = commands.add_parser("predict", help="abnormality probabilities for images, study folders or DICOM")
    predict.add_argument("paths", nargs="+", help="PNG/JPEG/DICOM files or study folders (a folder = one study)")
    predict.add_argument("--checkpoint", required=True, help="best.pt, an ensemble file, or an exported .onnx file")
    predict.add_argument(
        "--cam-dir",
        default=None,
        help="write per image a PNG of the image beside its Grad-CAM map (at the image's own size), captioned with the probability and threshold",
    )
    predict.add_argument("--format", choices=["table", "json", "csv"], default="table")
    predict.add_argument("--device", default="auto")
    predict.add_argument("--batch-size", type=int, default=16)
    predict.add_argument("--tta", action="store_true", help="average each image with its mirror image")
    predict.set_defaults(handler=_cmd_predict)

    from mura_utils.explain.names import CAM_METHOD_NAMES, DEFAULT_METHODS, DEFAULT_ROAD_PERCENTILES

    explain = commands.add_parser(
        "explain",
        help="measure CAM heatmaps against fracture boxes (pointing game, mass ratio, ROAD) on a dataset with boxes",
        description="For each fractured test image of a dataset with fracture boxes (FracAtlas) and each CAM method: "
        "does the map's maximum fall in a box (pointing game), how much of its mass lies in the boxes and polygons "
        "(mass ratio, 1 = a flat map), and ROAD faithfulness; summarized with image-bootstrap intervals next to an "
        "image-centre and a flat-map baseline.",
    )
    explain.add_argument("--checkpoint", required=True, help="best.pt of a single model")
    explain.add_argument("--data-root", required=True, help="the dataset (e.g. FracAtlas); its test split is used")
    explain.add_argument("--out", required=True, help="writes localization.json, per_image.csv, methods.md/.csv here")
    explain.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        choices=CAM_METHOD_NAMES,
        metavar="METHOD",
        help=f"CAM methods (default: {' '.join(DEFAULT_METHODS)}; choices: {', '.join(CAM_METHOD_NAMES)})",
    )
    explain.add_argument("--limit", type=int, default=None, help="score only the first N fractured images (by name)")
    explain.add_argument("--bootstrap", type=int, default=2000, help="image resamples for the intervals")
    explain.add_argument("--seed", type=int, default=0, help="seed of the resamples and of ROAD's noise")
    explain.add_argument(
        "--road-percentiles",
        nargs="+",
        type=int,
        default=list(DEFAULT_ROAD_PERCENTILES),
        metavar="P",
        help="ROAD: percent of pixels kept at each step (default: %(default)s)",
    )
    explain.add_argument(
        "--road-limit",
        type=optional_value(int),
        default=50,
        help="ROAD on the first N scored images only ('none': all); it costs seconds per image and method "
        "on a CPU (default: %(default)s)",
    )
    explain.add_argument("--no-road", action="store_true", help="skip ROAD")
    explain.add_argument(
        "--annotations",
        default=None,
        help="COCO file (default: DATA_ROOT/Annotations/COCO JSON/COCO_fracture_masks.json)",
    )
    explain.add_argument("--gallery-method", default=None, choices=CAM_METHOD_NAMES, help="method of gallery.png")
    explain.add_argument("--batch-size", type=int, default=16)
    explain.add_argument("--device", default="auto")
    explain.set_defaults(handler=_cmd_explain)

    ensemble = commands.add_parser(
        "ensemble", help="combine checkpoints into one ensemble checkpoint (probability: the members' mean)"
    )
    ensemble.add_argument("checkpoints", nargs="+", help="best.pt files (or ensembles); backbones and sizes may differ")
    ensemble.add_argument("--out", required=True, help="the ensemble checkpoint to write (e.g. E.pt)")
    ensemble.add_argument(
        "--threshold", type=float, default=None, help="study threshold (default: mean of the members' thresholds)"
    )
    ensemble.set_defaults(handler=_cmd_ensemble)

    export = commands.add_parser("export", help="write a checkpoint or ensemble as ONNX, preprocessing in its metadata")
    export.add_argument("--checkpoint", required=True)
    export.add_argument("--format", choices=["onnx"], default="onnx")
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.set_defaults(handler=_cmd_export)

    reproduce = commands.add_parser("reproduce", help="run every notebook through papermill and rebuild reports/")
    reproduce.add_argument("--data-root", default="data/sample")
    reproduce.add_argument(
        "--out", default="reports", help="reports: tables, figures, executed notebooks (rebuilt by a rerun)"
    )
    reproduce.add_argument(
        "--profile",
        choices=["demo", "cpu", "full"],
        default="demo",
        help="demo: synthetic sample, minutes; cpu: real radiographs (FracAtlas) on 2 CPU cores, 1.5 hours (budget 3); full: GPU",
    )
    reproduce.add_argument(
        "--runs-dir",
        default=None,
        help="trained runs (checkpoints, predictions), kept apart from the reports (default: runs/<profile>-<dataset>-<data folder>, "
        "e.g. runs/demo-mura-sample; the folder's name is left out when it is the dataset's own: runs/cpu-fracatlas, runs/full-mura)",
    )
    reproduce.add_argument(
        "--external-root",
        default=None,
        help="external fracture set (train|val|test/fractured|not fractured); "
        "default: a synthetic one for the demo profile",
    )
    reproduce.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="override one notebook parameter, e.g. -p epochs 5, -p pretrained False, -p seeds [0,1]",
    )
    reproduce.add_argument(
        "--restart",
        nargs="*",
        default=None,
        metavar="RUN",
        help="delete and retrain the runs this command plans, or only the named ones (e.g. resnet50_multitask_seed0); "
        "it says which folders it deletes (default: reuse finished runs, resume interrupted ones)",
    )
    reproduce.add_argument("--dry-run", action="store_true", help="list the runs it would train, resume or reuse")
    reproduce.set_defaults(handler=_cmd_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"mura {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0
