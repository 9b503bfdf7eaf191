"""`mura` command line: a thin argparse front over the package (sample, prepare, train, evaluate,
predict, reproduce). Every command only parses flags and calls one function of mura_utils."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_sample(args) -> None:
    from .synthetic import make_sample

    sizes = {"patients_per_part": args.patients_per_part} if args.patients_per_part else {}
    root = make_sample(args.out_dir, seed=args.seed, **sizes)
    print(f"synthetic MURA-v1.1 sample (not real radiographs) written to {root}")


def _cmd_sample_external(args) -> None:
    from .synthetic import make_external_sample

    root = make_external_sample(args.out_dir, seed=args.seed)
    print(f"synthetic external-layout sample (not real radiographs) written to {root}")


def _cmd_prepare(args) -> None:
    from .data import load_mura_index, open_image_cache

    index = load_mura_index(args.data_root)
    cache = open_image_cache(index, args.img_size, args.data_root, args.cache_dir)
    print(f"image cache ready: {len(cache)} images at {args.img_size} px in {args.cache_dir or 'default cache dir'}")


def _cmd_train(args) -> None:
    from .config import TrainConfig
    from .train import fit

    config = TrainConfig(
        model=args.model,
        data_root=args.data_root,
        epochs=args.epochs,
        img_size=args.img_size,
        batch_size=args.batch_size,
        out_dir=args.out,
        pretrained=not args.no_pretrained,
        weights_path=args.weights,
        multitask=not args.single_task,
        seed=args.seed,
        device=args.device,
        num_workers=args.num_workers,
        selection_metric=args.selection_metric,
        patience=args.patience,
        use_cache=not args.no_cache,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
        **({"lr": args.lr} if args.lr is not None else {}),
    )
    result = fit(config, resume=args.resume)
    study = result.best_metrics.get("study", {})
    print(
        f"best epoch {result.best_epoch}: validation (patient split) study AUROC {study.get('auroc')}, "
        f"kappa {study.get('kappa')}; checkpoint {Path(result.out_dir) / 'best.pt'}"
    )


def _cmd_evaluate(args) -> None:
    from .evaluate import evaluate_checkpoint
    from .io import atomic_write_text

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
    )
    out = Path(args.out)
    atomic_write_text(out / "predictions.csv", predictions.to_csv(index=False))
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    print(
        f"{args.split}: study AUROC {metrics['study']['auroc']}, study kappa {metrics['study']['kappa']:.3f}, "
        f"image AUROC {metrics['image']['auroc']}; wrote {out / 'metrics.json'} and {out / 'predictions.csv'}"
    )


def _cmd_predict(args) -> None:
    from .predict import format_predictions, predict_paths

    table = predict_paths(
        args.paths, args.checkpoint, device=args.device, batch_size=args.batch_size, cam_dir=args.cam_dir
    )
    sys.stdout.write(format_predictions(table, args.format).rstrip("\n") + "\n")
    if args.cam_dir:
        print(f"Grad-CAM overlays written to {args.cam_dir}", file=sys.stderr)


def _cmd_reproduce(args) -> None:
    from .pipeline import reproduce

    overrides = {name: _parse_value(value) for name, value in args.parameter}
    out = reproduce(
        args.data_root,
        args.out,
        args.profile,
        overrides,
        external_root=args.external_root,
        restart=args.restart,
        dry_run=args.dry_run,
    )
    if not args.dry_run:
        print(f"reports written to {out} (start with {out / 'index.md'})")


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
    from .constants import MODEL_NAMES

    parser = argparse.ArgumentParser(prog="mura", description="Abnormality detection on MURA radiographs.")
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

    prepare = commands.add_parser("prepare", help="decode every image once into a uint8 memory-mapped cache")
    prepare.add_argument("--data-root", required=True)
    prepare.add_argument("--img-size", type=int, required=True)
    prepare.add_argument("--cache-dir", default=None)
    prepare.set_defaults(handler=_cmd_prepare)

    train = commands.add_parser("train", help="train one model (best epoch chosen on a patient-level split)")
    train.add_argument("--data-root", required=True)
    train.add_argument("--model", choices=MODEL_NAMES, default="custom_cnn")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--img-size", type=int, default=None)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--out", required=True)
    train.add_argument("--no-pretrained", action="store_true", help="random init instead of ImageNet weights")
    train.add_argument("--weights", default=None, help="local ImageNet weights file (offline machines)")
    train.add_argument("--single-task", action="store_true", help="drop the body-part head (ablation)")
    train.add_argument("--selection-metric", choices=["study_auroc", "study_kappa"], default="study_auroc")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto")
    train.add_argument(
        "--patience",
        type=int,
        default=0,
        help="stop after this many epochs without improvement (default 0: run every epoch)",
    )
    train.add_argument("--num-workers", type=int, default=0)
    train.add_argument("--cache-dir", default=None)
    train.add_argument("--no-cache", action="store_true")
    train.add_argument("--no-progress", action="store_true")
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    train.set_defaults(handler=_cmd_train)

    evaluate = commands.add_parser("evaluate", help="metrics of a checkpoint on a MURA split")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--data-root", required=True)
    evaluate.add_argument("--split", choices=["valid", "train"], default="valid")
    evaluate.add_argument("--out", required=True)
    evaluate.add_argument("--threshold", default="0.5", help="a number, or 'val' for the one chosen on validation")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--cache-dir", default=None)
    evaluate.add_argument("--no-cache", action="store_true")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.set_defaults(handler=_cmd_evaluate)

    predict = commands.add_parser("predict", help="abnormality probabilities for images, study folders or DICOM")
    predict.add_argument("paths", nargs="+", help="PNG/JPEG/DICOM files or study folders (a folder = one study)")
    predict.add_argument("--checkpoint", required=True)
    predict.add_argument("--cam-dir", default=None, help="write a Grad-CAM overlay PNG per image here")
    predict.add_argument("--format", choices=["table", "json", "csv"], default="table")
    predict.add_argument("--device", default="auto")
    predict.add_argument("--batch-size", type=int, default=16)
    predict.set_defaults(handler=_cmd_predict)

    reproduce = commands.add_parser("reproduce", help="run every notebook through papermill and rebuild reports/")
    reproduce.add_argument("--data-root", default="data/sample")
    reproduce.add_argument("--out", default="reports")
    reproduce.add_argument("--profile", choices=["demo", "full"], default="demo")
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
        action="store_true",
        help="delete and retrain the runs this command plans (default: reuse finished runs, resume interrupted ones)",
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
