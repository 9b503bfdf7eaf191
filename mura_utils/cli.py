"""`mura` command line: a thin argparse front over the package (sample, prepare, train, evaluate,
predict, ensemble, export, reproduce). Every command only parses flags and calls one function of mura_utils."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_sample(args) -> None:
    from mura_utils.synthetic import make_sample

    sizes = {"patients_per_part": args.patients_per_part} if args.patients_per_part else {}
    root = make_sample(args.out_dir, seed=args.seed, **sizes)
    print(f"synthetic MURA-v1.1 sample (not real radiographs) written to {root}")


def _cmd_sample_external(args) -> None:
    from mura_utils.synthetic import make_external_sample

    root = make_external_sample(args.out_dir, seed=args.seed)
    print(f"synthetic external-layout sample (not real radiographs) written to {root}")


def _cmd_sample_fracatlas(args) -> None:
    from mura_utils.synthetic import make_fracatlas_sample

    root = make_fracatlas_sample(args.out_dir, n_images=args.images, seed=args.seed)
    print(f"synthetic FracAtlas-layout sample (not real radiographs) written to {root}")


def _cmd_sample_manifest(args) -> None:
    from mura_utils.synthetic import make_manifest_sample

    manifest = make_manifest_sample(args.out_dir, n_patients=args.patients, seed=args.seed)
    print(f"synthetic images and their manifest (not real radiographs) written to {manifest}")


def _cmd_prepare(args) -> None:
    from mura_utils.data.dataset import open_image_cache
    from mura_utils.data.registry import load_index

    index = load_index(args.data_root, args.dataset)
    cache = open_image_cache(index, args.img_size, args.data_root, args.cache_dir, dataset=args.dataset)
    print(f"image cache ready: {len(cache)} images at {args.img_size} px in {args.cache_dir or 'default cache dir'}")


def _cmd_train(args) -> None:
    from mura_utils.models.registry import get_spec
    from mura_utils.training.fit import fit
    from mura_utils.training.run_folder import claim_run_folder
    from mura_utils.utils.progress import rounded

    config = _train_config(args)
    get_spec(config.model)  # an unknown model name fails here, with close matches, before any data is read
    claim_run_folder(config.out_dir, args.resume, args.overwrite, remove=False)  # a trained run is refused at once
    result = fit(config, resume=args.resume, overwrite=args.overwrite)
    study = result.best_metrics.get("study", {})
    print(
        f"best epoch {result.best_epoch}: validation (patient split) study AUROC {rounded(study.get('auroc'))}, "
        f"kappa {rounded(study.get('kappa'))}; checkpoint {Path(result.out_dir) / 'best.pt'}"
    )


# Older spellings of generated TrainConfig options, still accepted: flag -> (field, value or None for "takes a value")
TRAIN_ALIASES = {
    "--out": ("out_dir", None),
    "--weights": ("weights_path", None),
    "--ema": ("ema_decay", None),
    "--single-task": ("multitask", False),
    "--no-cache": ("use_cache", False),
}


def _optional(kind):
    """argparse type for ``int | None`` style fields: 'none' (any case) gives None."""

    def parse(text: str):
        return None if text.lower() in ("none", "null") else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


def add_train_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field (names, types, defaults and help from the dataclass);
    bools as --flag/--no-flag. Defaults are SUPPRESSed so explicit flags can override --config."""
    import typing
    from dataclasses import MISSING, fields

    from mura_utils.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    group = parser.add_argument_group("training settings (TrainConfig fields)")
    types = {}
    for item in fields(TrainConfig):
        flag = "--" + item.name.replace("_", "-")
        kind = hints[item.name]
        default = item.default if item.default is not MISSING else None
        help_text = f"{item.metadata.get('help', '')} (default: {default})"
        if kind is bool:
            group.add_argument(
                flag, dest=item.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
            continue
        optional = type(None) in typing.get_args(kind)
        base = next((arg for arg in typing.get_args(kind) if arg is not type(None)), kind)
        types[item.name] = _optional(base) if optional else base
        group.add_argument(
            flag,
            dest=item.name,
            type=types[item.name],
            default=argparse.SUPPRESS,
            metavar=item.name.upper(),
            help=help_text,
        )
    for flag, (name, value) in TRAIN_ALIASES.items():
        if value is None:
            group.add_argument(
                flag,
                dest=name,
                type=types[name],
                default=argparse.SUPPRESS,
                metavar=name.upper(),
                help=f"same as --{name.replace('_', '-')}",
            )
        else:
            group.add_argument(
                flag,
                dest=name,
                action="store_const",
                const=value,
                default=argparse.SUPPRESS,
                help=f"same as --{'' if value else 'no-'}{name.replace('_', '-')}",
            )


def _train_config(args):
    """TrainConfig from ``--config FILE`` (or the defaults), then every flag given explicitly."""
    from dataclasses import fields, replace

    from mura_utils.config import TrainConfig

    config = TrainConfig.load(args.config) if args.config else TrainConfig()
    given = {item.name: getattr(args, item.name) for item in fields(TrainConfig) if hasattr(args, item.name)}
    if not args.config and "out_dir" not in given:
        raise ValueError("--out is required (the run folder) unless --config gives out_dir")
    return replace(config, **given)


def _cmd_evaluate(args) -> None:
    from mura_utils.evaluation.predictions import add_confidence_intervals, evaluate_checkpoint
    from mura_utils.utils.io import atomic_write_text
    from mura_utils.utils.progress import rounded

    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be 0 (off) or a number of resamples, not {args.bootstrap}")
    threshold = args.threshold if args.threshold == "val" else float(args.threshold)
    predictions, metrics = evaluate_checkpoint(
        args.checkpoint,
        args.data_root,
        args.split,
        threshold,
        device=args.device,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        progress=not args.no_progress,
        tta=args.tta,
        dataset=args.dataset,
    )
    metrics = add_confidence_intervals(metrics, predictions, args.bootstrap, args.seed)
    out = Path(args.out)
    atomic_write_text(out / "predictions.csv", predictions.to_csv(index=False))
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    study_ci = metrics.get("ci", {}).get("study", {})
    interval = " [{:.3f}, {:.3f}]".format(*study_ci["auroc"]) if "auroc" in study_ci else ""
    print(
        f"{metrics['dataset_title']} {metrics['split']}: study AUROC {rounded(metrics['study']['auroc'])}{interval}, "
        f"study kappa {rounded(metrics['study']['kappa'])}, image AUROC {rounded(metrics['image']['auroc'])}; "
        f"wrote {out / 'metrics.json'} and {out / 'predictions.csv'}"
    )


def _cmd_compare(args) -> None:
    from mura_utils.evaluation.compare import format_p, write_comparison

    if args.bootstrap < 1:
        raise ValueError(f"--bootstrap must be at least 1 for a comparison, not {args.bootstrap}")
    result = write_comparison(args.a, args.b, args.out, args.bootstrap, args.seed, args.threshold)
    if result["threshold_warning"]:
        print(f"warning: {result['threshold_warning']}")
    for name, value in result["metrics"].items():
        low, high = value["ci"]
        print(f"{name}: A - B = {value['delta']:+.3f} [{low:+.3f}, {high:+.3f}], {format_p(value, 'p')}")
    print(f"wrote {Path(args.out) / 'compare.json'} and {Path(args.out) / 'compare.md'}")


def _cmd_predict(args) -> None:
    from mura_utils.inference.predict import format_predictions, predict_paths

    table = predict_paths(
        args.paths, args.checkpoint, device=args.device, batch_size=args.batch_size, cam_dir=args.cam_dir, tta=args.tta
    )
    sys.stdout.write(format_predictions(table, args.format).rstrip("\n") + "\n")
    if args.cam_dir:
        print(f"Grad-CAM overlays written to {args.cam_dir}", file=sys.stderr)


def _cmd_explain(args) -> None:
    from mura_utils.explain import run_explain

    if args.bootstrap < 1:
        raise ValueError(f"--bootstrap must be at least 1, not {args.bootstrap}")
    result = run_explain(
        args.checkpoint,
        args.data_root,
        args.out,
        methods=args.methods,
        limit=args.limit,
        n_resamples=args.bootstrap,
        seed=args.seed,
        road_percentiles=None if args.no_road else args.road_percentiles,
        road_limit=args.road_limit,
        batch_size=args.batch_size,
        device=args.device,
        annotations_path=args.annotations,
        gallery_method=args.gallery_method,
    )
    for method in [*result["methods"], *result["baselines"]]:
        scores = result["summary"][method]
        low, high = scores["pointing"]["ci"]
        road = scores.get("road_combined", {}).get("mean")
        print(
            f"{method:>10}: pointing {scores['pointing']['mean']:.3f} [{low:.3f}, {high:.3f}], "
            f"box mass ratio {scores['box_mass_ratio']['mean']:.2f}"
            + (f", ROAD {road:+.4f}" if road is not None else "")
        )
    print(
        f"{result['images']} images; wrote localization.json, per_image.csv, methods.md/.csv and figures to {args.out}"
    )


def _cmd_ensemble(args) -> None:
    from mura_utils.models.ensemble import make_ensemble

    ensemble = make_ensemble(args.checkpoints, args.out, threshold=args.threshold)
    names = ", ".join(f"{m['model_name']} ({m['img_size']} px)" for m in ensemble["members"])
    print(f"ensemble of {len(ensemble['members'])}: {names}; threshold {ensemble['threshold']:.4f}; wrote {args.out}")


def _cmd_export(args) -> None:
    from mura_utils.inference.onnx_export import export_onnx

    contract = export_onnx(args.checkpoint, args.out)
    sizes = ", ".join(f"{entry['name']} {entry['img_size']} px" for entry in contract["inputs"])
    print(f"wrote {args.out} ({', '.join(contract['model_names'])}; inputs {sizes}; contract in metadata_props)")


def _cmd_reproduce(args) -> None:
    from mura_utils.pipeline import default_runs_dir, reproduce

    overrides = {name: _parse_value(value) for name, value in args.parameter}
    out = reproduce(
        args.data_root,
        args.out,
        args.profile,
        overrides,
        external_root=args.external_root,
        restart=True if args.restart == [] else (args.restart or False),  # --restart alone: every planned run
        dry_run=args.dry_run,
        runs_dir=args.runs_dir,
    )
    if not args.dry_run:
        runs_dir = args.runs_dir or default_runs_dir(args.profile, args.data_root)
        print(f"reports written to {out} (start with {out / 'index.md'}); trained runs in {runs_dir}")


def _parse_value(text: str):
    """-p values as papermill's CLI and a Python user read them: a Python literal (True, None,
    3, 1e-3, [0, 1], 'x'), else JSON (true, null), else the plain string."""
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


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
    predict.add_argument("--cam-dir", default=None, help="write a Grad-CAM overlay PNG per image here")
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
        type=_optional(int),
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
        help="trained runs (checkpoints, predictions), kept apart from the reports (default: runs/<profile>-<dataset>, e.g. runs/cpu-fracatlas)",
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


if __name__ == "__main__":
    sys.exit(main())
