"""Time load_mura_index on a MURA-sized CSV pair (40,000 image rows, empty files: nothing is decoded).

Baseline beside it: the same rows read by a naive per-row pandas loop (what the earlier notebooks
did with iterrows). Target: the project's index in under 2 s on 2 CPU cores.

    python benchmarks/index_speed.py [--rows 40000] [--dir /tmp/mura_index_bench]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, if mura_utils is not installed
from mura_utils.data.mura import load_mura_index


def write_tree(root: Path, rows: int) -> None:
    if (root / "train_image_paths.csv").exists():
        return
    image_rows, study_rows = [], []
    for patient in range(rows // 4):
        folder = f"train/XR_WRIST/patient{patient:05d}/study1_{'positive' if patient % 3 == 0 else 'negative'}"
        (root / folder).mkdir(parents=True, exist_ok=True)
        study_rows.append(f"MURA-v1.1/{folder}/,{int(patient % 3 == 0)}")
        for number in range(1, 5):
            (root / folder / f"image{number}.png").touch()
            image_rows.append(f"MURA-v1.1/{folder}/image{number}.png")
    (root / "train_image_paths.csv").write_text("\n".join(image_rows) + "\n")
    (root / "train_labeled_studies.csv").write_text("\n".join(study_rows) + "\n")


def naive_index(root: Path) -> pd.DataFrame:
    """The earlier notebooks' way: iterrows over the CSV, a dict lookup per row."""
    images = pd.read_csv(root / "train_image_paths.csv", header=None, names=["path"])
    studies = pd.read_csv(root / "train_labeled_studies.csv", header=None, names=["study", "label"])
    labels = {row["study"]: row["label"] for _, row in studies.iterrows()}
    rows = []
    for _, row in images.iterrows():
        parts = row["path"].split("/")
        rows.append(
            {
                "path": str(root.parent / row["path"]),
                "body_part": parts[2][3:],
                "patient": parts[3],
                "label": labels["/".join(parts[:5]) + "/"],
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=40000)
    parser.add_argument("--dir", default="/tmp/mura_index_bench")
    args = parser.parse_args()
    root = Path(args.dir) / "MURA-v1.1"
    write_tree(root, args.rows)
    started = time.perf_counter()
    naive = naive_index(root)
    naive_seconds = time.perf_counter() - started
    started = time.perf_counter()
    index = load_mura_index(root, splits=("train",))
    seconds = time.perf_counter() - started
    assert len(index) == len(naive)
    print(f"naive iterrows index: {naive_seconds:.2f} s for {len(naive)} rows")
    print(f"load_mura_index:      {seconds:.2f} s for {len(index)} rows (target < 2 s; checks every file exists)")
    print(f"ratio (naive / project): {naive_seconds / seconds:.1f}x")


if __name__ == "__main__":
    main()
