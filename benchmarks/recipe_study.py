"""The recipe study: each training lever against a baseline, on VALIDATION images only.

Every lever is one set of TrainConfig overrides on top of a baseline config file (e.g. the cpu profile's
``configs/cpu/custom_cnn.json``). Each (lever, seed) trains with ``mura train`` into its own run folder
(a finished one is reused, an interrupted one resumed), and is scored on the validation split that
``fit`` draws inside the training split (the same images for every lever of one seed: the split depends on
the seed and val_fraction only). The test split is never read here: it is scored once, for the final
recipe, with ``mura evaluate``.

For each lever the table gives validation study AUROC and kappa with 95% bootstrap intervals, the paired
difference against the baseline of the same seed (the same resamples, ``evaluation.compare``), and the
training time. Run it from the repository root:

    python benchmarks/recipe_study.py --data-root ../shared/data/FracAtlas --baseline configs/cpu/custom_cnn.json \\
        --levers img224 epochs32 ema --seeds 0 --runs-dir runs/recipe-fracatlas --out benchmarks/recipe_study.md

``--reuse baseline=runs/cpu-fracatlas/custom_cnn_multitask_seed0`` scores an existing run of exactly the
baseline settings (its config.json is checked) instead of training it again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

# lever name -> TrainConfig overrides on top of the baseline (what it changes, nothing else)
LEVERS: dict[str, dict] = {
    "baseline": {},
    "img224": {"img_size": 224},
    "img288": {"img_size": 288},
    "epochs32": {"epochs": 32},
    "ema": {"ema_decay": 0.999},
    "no_augment": {"augment": False},
    "rotation10": {"rotation_degrees": 10.0},
    "lr3e-3": {"lr": 3e-3},
}
IGNORED_FIELDS = {"out_dir", "data_root", "progress", "verbose", "num_workers", "cache_dir", "use_cache"}


def train(config_path: Path, data_root: str, out_dir: Path, overrides: dict, seed: int) -> None:
    """Train (or resume, or reuse) one run of the baseline config with ``overrides``."""
    from mura_utils.config import TrainConfig

    expected = TrainConfig.load(config_path).to_dict() | overrides | {"seed": seed}
    history = out_dir / "history.csv"
    if history.is_file() and (out_dir / "best.pt").is_file():
        if len(pd.read_csv(history)) >= expected["epochs"]:
            return  # finished: reuse
    command = [sys.executable, "-m", "mura_utils.cli", "train", "--config", str(config_path)]
    command += ["--data-root", data_root, "--out", str(out_dir), "--seed", str(seed), "--no-progress"]
    for name, value in overrides.items():
        flag = "--" + name.replace("_", "-")
        command += (
            [flag if value else "--no-" + name.replace("_", "-")] if isinstance(value, bool) else [flag, str(value)]
        )
    if (out_dir / "last.pt").is_file():
        command.append("--resume")
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def check_reused(run: Path, config_path: Path, overrides: dict, seed: int) -> None:
    """A reused run must have exactly the settings this lever asks for (paths and display fields aside)."""
    from mura_utils.config import TrainConfig

    wanted = TrainConfig.load(config_path).to_dict() | overrides | {"seed": seed}
    saved = json.loads((run / "config.json").read_text())
    differ = {k: (saved.get(k), v) for k, v in wanted.items() if k not in IGNORED_FIELDS and saved.get(k) != v}
    if differ:
        raise SystemExit(f"{run}: not a run of these settings ({differ})")


def validation_evaluation(run: Path):
    """The run's best-epoch validation predictions as one side of a paired comparison, at the threshold
    the run chose on those same images (recorded in best.pt)."""
    from mura_utils.evaluation.compare import Evaluation, read_predictions
    from mura_utils.models.checkpoint import read_checkpoint

    checkpoint = read_checkpoint(run / "best.pt")
    threshold = float(checkpoint.get("threshold", 0.5))
    return Evaluation(run, read_predictions(run / "val_predictions.csv"), threshold, threshold)


def train_minutes(run: Path) -> float:
    return float(pd.read_csv(run / "history.csv")["train_seconds"].sum()) / 60


def study_rows(runs: dict[tuple[str, int], Path], n_resamples: int) -> pd.DataFrame:
    """One row per (lever, seed): its validation metrics with intervals and its paired difference
    against the baseline of that seed (the baseline's own row: a difference of 0)."""
    from mura_utils.evaluation.bootstrap import confidence_intervals
    from mura_utils.evaluation.compare import compare_evaluations

    rows = []
    for (lever, seed), run in runs.items():
        side = validation_evaluation(run)
        result = compare_evaluations(side, validation_evaluation(runs[("baseline", seed)]), n_resamples, seed)
        intervals = confidence_intervals(side.predictions, n_resamples, side.threshold, side.threshold, seed)
        history = pd.read_csv(run / "history.csv")
        best = history.loc[history["val_loss"].idxmin()]
        row = {"lever": lever, "seed": seed, "best_epoch": int(best["epoch"]), "epochs": len(history)}
        for metric in ("study_auroc", "study_kappa"):
            value = result["metrics"][metric]
            row[metric] = value["a"]
            row[f"{metric}_ci"] = intervals["study"][metric.split("_")[1]]
            row[f"{metric}_delta"] = value["delta"]
            row[f"{metric}_delta_ci"] = value["ci"]
            row[f"{metric}_p"] = value["p"]
        row["threshold"] = side.threshold
        row["train_min"] = train_minutes(run)
        rows.append(row)
    return pd.DataFrame(rows)


def interval(low_high) -> str:
    if low_high is None:
        return ""
    low, high = low_high
    return f" [{low:.3f}, {high:.3f}]"


def markdown(table: pd.DataFrame, command: str) -> str:
    lines = [
        "Validation images only (the patient-level split inside the training split; FracAtlas: one image per "
        "patient). Paired differences against the baseline of the same seed on identical bootstrap resamples. "
        f"Command: `{command}`",
        "",
        "| Lever | Seed | Val study AUROC | Δ vs baseline | Val study κ | Δ vs baseline | Best epoch / epochs | Train time |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for _, row in table.iterrows():
        lines.append(
            f"| {row['lever']} | {row['seed']} | {row['study_auroc']:.3f}{interval(row['study_auroc_ci'])} "
            f"| {row['study_auroc_delta']:+.3f}{interval(row['study_auroc_delta_ci'])} "
            f"| {row['study_kappa']:.3f}{interval(row['study_kappa_ci'])} "
            f"| {row['study_kappa_delta']:+.3f}{interval(row['study_kappa_delta_ci'])} "
            f"| {row['best_epoch']} / {row['epochs']} | {row['train_min']:.1f} min |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument(
        "--baseline", required=True, type=Path, help="a TrainConfig JSON file (configs/<profile>/<model>.json)"
    )
    parser.add_argument(
        "--levers", nargs="+", default=["img224", "epochs32", "ema"], choices=[k for k in LEVERS if k != "baseline"]
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/recipe-fracatlas"))
    parser.add_argument("--reuse", nargs="*", default=[], metavar="LEVER=RUN", help="score an existing run folder")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/recipe_study.md"))
    parser.add_argument("--score-only", action="store_true", help="train nothing; score the runs that are finished")
    parser.add_argument("--train-only", action="store_true", help="train (or reuse) the runs; score nothing")
    args = parser.parse_args(argv)
    reused = dict(item.split("=", 1) for item in args.reuse)
    runs: dict[tuple[str, int], Path] = {}
    for seed in args.seeds:
        for lever in ["baseline", *args.levers]:
            if lever in reused and seed == args.seeds[0]:
                run = Path(reused[lever])
                check_reused(run, args.baseline, LEVERS[lever], seed)
            else:
                run = args.runs_dir / f"{lever}_seed{seed}"
                if not args.score_only:
                    train(args.baseline, args.data_root, run, LEVERS[lever], seed)
            if (run / "val_predictions.csv").is_file() and (run / "best.pt").is_file():
                runs[(lever, seed)] = run
    if args.train_only:
        return
    table = study_rows({key: run for key, run in runs.items() if ("baseline", key[1]) in runs}, args.bootstrap)
    command = "python benchmarks/recipe_study.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(table, command))
    table.to_csv(args.out.with_suffix(".csv"), index=False)
    print(markdown(table, command))


if __name__ == "__main__":
    main()
