"""Checkpoint selection on a small validation split: which epoch does each rule keep, and how does
that checkpoint do on the held-out test split (MURA valid)?

One training run per (model, seed) serves every rule: each epoch's weights are kept, scored on the
test split at threshold 0.5, and the rules (``val_loss`` = lowest validation loss, ``study_auroc`` =
highest validation study AUROC, ``last`` = the final epoch) are read off history.csv. Training is
deterministic on the CPU, so this is the run ``fit`` would do with either ``selection_metric``.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/selection_metric.py --data-root data/sample \
        --model custom_cnn --img-size 160 --epochs 15 --lr 1e-3 --seeds 0 1 2 3 --out /tmp/selection

Prints one row per (model, seed, rule) and a summary per (model, rule): how often the kept checkpoint
calls every test study one class at 0.5 (study kappa 0 with one predicted class), and the mean, min
and max of its test study AUROC. Numbers on the synthetic sample are labelled synthetic.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, if mura_utils is not installed
from mura_utils.config import TrainConfig
from mura_utils.evaluation.metrics import study_table
from mura_utils.evaluation.predictions import evaluate_checkpoint
from mura_utils.training import fit as train_module

RULES = ("val_loss", "study_auroc", "last")


def _keep_every_epoch(snapshot_dir: Path):
    """Wrap train.save_checkpoint so each epoch's last.pt is also copied to epoch<k>.pt."""
    original = train_module.save_checkpoint

    def save_and_copy(path, model, config, epoch, *args, **kwargs):
        original(path, model, config, epoch, *args, **kwargs)
        if Path(path).name == "last.pt":
            shutil.copy(path, snapshot_dir / f"epoch{epoch}.pt")

    return original, save_and_copy


def one_run(config: TrainConfig) -> pd.DataFrame:
    """Train once; one row per epoch with the validation columns and the test metrics of that epoch."""
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    original, wrapper = _keep_every_epoch(out_dir)
    train_module.save_checkpoint = wrapper
    try:
        result = train_module.fit(config)
    finally:
        train_module.save_checkpoint = original
    rows = []
    for _, epoch_row in result.history.iterrows():
        epoch = int(epoch_row["epoch"])
        predictions, metrics = evaluate_checkpoint(
            out_dir / f"epoch{epoch}.pt", config.data_root, "valid", threshold=0.5, device="cpu", progress=False
        )
        studies = study_table(predictions)
        predicted = studies["probability"] >= 0.5
        rows.append(
            {
                "epoch": epoch,
                "val_loss": epoch_row["val_loss"],
                "val_study_auroc": epoch_row["val_study_auroc"],
                "train_seconds": epoch_row["train_seconds"],
                "test_study_auroc": metrics["study"]["auroc"],
                "test_study_kappa": metrics["study"]["kappa"],
                "test_one_class": bool(predicted.all() or (~predicted).all()),
            }
        )
        (out_dir / f"epoch{epoch}.pt").unlink()
    return pd.DataFrame(rows)


def kept_epoch(epochs: pd.DataFrame, rule: str) -> int:
    """The epoch a rule keeps; ties go to the earliest epoch, as in fit (strict improvement)."""
    if rule == "last":
        return int(epochs["epoch"].iloc[-1])
    if rule == "val_loss":
        return int(epochs.loc[epochs["val_loss"].idxmin(), "epoch"])
    scores = epochs["val_study_auroc"].fillna(-np.inf)
    return int(epochs.loc[scores.idxmax(), "epoch"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--model", default="custom_cnn")
    parser.add_argument("--img-size", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--out", default="/tmp/selection_metric")
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        config = TrainConfig(
            model=args.model,
            pretrained=False,
            data_root=args.data_root,
            img_size=args.img_size,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=seed,
            device="cpu",
            out_dir=str(Path(args.out) / f"{args.model}_seed{seed}"),
            progress=False,
            verbose=False,
        )
        epochs = one_run(config)
        epochs.to_csv(Path(config.out_dir) / "epochs.csv", index=False)
        print(epochs.round(3).to_string(index=False), flush=True)
        for rule in RULES:
            kept = epochs[epochs["epoch"] == kept_epoch(epochs, rule)].iloc[0]
            rows.append({"model": args.model, "seed": seed, "rule": rule, **kept.to_dict()})
    table = pd.DataFrame(rows)
    table.to_csv(Path(args.out) / f"{args.model}_selection.csv", index=False)
    print(f"\nsynthetic sample {args.data_root}: {args.model}, {args.img_size} px, {args.epochs} epochs")
    print(table[["model", "seed", "rule", "epoch", "test_study_auroc", "test_study_kappa", "test_one_class"]].round(3))
    summary = table.groupby("rule", sort=False).agg(
        one_class=("test_one_class", "sum"),
        runs=("seed", "size"),
        auroc_mean=("test_study_auroc", "mean"),
        auroc_min=("test_study_auroc", "min"),
        auroc_max=("test_study_auroc", "max"),
        kappa_mean=("test_study_kappa", "mean"),
    )
    print(summary.round(3).to_string())
    print(json.dumps({"args": vars(args)}))


if __name__ == "__main__":
    main()
