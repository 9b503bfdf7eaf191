"""One handler per ``mura`` command: it takes the parsed flags, calls one function of mura_utils and
prints a line or two. Imports are inside the handlers so ``mura --help`` stays light."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mura_utils.cli.train_options import train_config


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
    from mura_utils.utils.formatting import rounded

    config = train_config(args)
    get_spec(config.model)  # an unknown model name fails here, with close matches, before any data is read
    claim_run_folder(config.out_dir, args.resume, args.overwrite, remove=False)  # a trained run is refused at once
    result = fit(config, resume=args.resume, overwrite=args.overwrite)
    study = result.best_metrics.get("study", {})
    print(
        f"best epoch {result.best_epoch}: validation (patient split) study AUROC {rounded(study.get('auroc'))}, "
        f"kappa {rounded(study.get('kappa'))}; checkpoint {Path(result.out_dir) / 'best.pt'}"
    )


def _cmd_evaluate(args) -> None:
    from mura_utils.evaluation.predictions import add_confidence_intervals, evaluate_checkpoint
    from mura_utils.utils.formatting import rounded
    from mura_utils.utils.io import atomic_write_text

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
    from mura_utils.evaluation.compare import format_p, write_paired_comparison

    if args.bootstrap < 1:
        raise ValueError(f"--bootstrap must be at least 1 for a comparison, not {args.bootstrap}")
    result = write_paired_comparison(args.a, args.b, args.out, args.bootstrap, args.seed, args.threshold)
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
            + (f"at 15 px {scores['pointing_tol15']['mean']:.3f}, " if "pointing_tol15" in scores else "")
            + f"box mass ratio {scores['box_mass_ratio']['mean']:.2f}"
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
