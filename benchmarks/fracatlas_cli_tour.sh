#!/usr/bin/env bash
# The command-line tour on real radiographs, after `mura reproduce --profile cpu` on FracAtlas:
# evaluate, compare, ensemble, predict (checkpoint and ONNX), export, and the same test images read
# through a CSV manifest (it must give the very same probabilities as FracAtlas's own layout).
#   bash benchmarks/fracatlas_cli_tour.sh [FRACATLAS_DIR] [RUNS_DIR] [OUT_DIR]
# Skips cleanly (exit 0) when the FracAtlas copy, the trained runs or onnx are absent. Relative paths are
# taken from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/FracAtlas}
RUNS=${2:-runs/cpu-fracatlas}
OUT=${3:-reports/fracatlas-cli}
MURA=.venv/bin/mura
PY=.venv/bin/python
export HF_HUB_OFFLINE=1
for needed in "$DATA/dataset.csv" "$RUNS/custom_cnn_multitask_seed0/best.pt" "$RUNS/custom_cnn_single_task_seed0/best.pt"; do
  if [ ! -e "$needed" ]; then echo "skipped: $needed not found"; exit 0; fi
done
if ! $PY -c "import onnx, onnxruntime" 2>/dev/null; then echo "skipped: onnx/onnxruntime not installed (pip install -e .[export])"; exit 0; fi
# OUT is rebuilt: only a folder this tour wrote (tour.json or its marker) or an empty/new one, never anything else
if [ -d "$OUT" ] && [ -n "$(ls -A "$OUT")" ] && [ ! -e "$OUT/.fracatlas_cli_tour" ]; then
  echo "refused: $OUT is not empty and was not written by this tour; pass another OUT_DIR" >&2; exit 2
fi
rm -rf "$OUT" && mkdir -p "$OUT" && touch "$OUT/.fracatlas_cli_tour"
CNN_MULTI=$RUNS/custom_cnn_multitask_seed0/best.pt
CNN_SINGLE=$RUNS/custom_cnn_single_task_seed0/best.pt

echo "== evaluate (default split: FracAtlas test), val threshold"
$MURA evaluate --checkpoint "$CNN_MULTI" --data-root "$DATA" --threshold val --out "$OUT/eval_multi" --no-progress
$MURA evaluate --checkpoint "$CNN_SINGLE" --data-root "$DATA" --threshold val --out "$OUT/eval_single" --no-progress

echo "== compare multi-task vs single-task (paired bootstrap)"
$MURA compare "$OUT/eval_multi" "$OUT/eval_single" --out "$OUT/compare"
sed -n '1,20p' "$OUT/compare/compare.md"

echo "== ensemble of every multi-task run, evaluated"
mapfile -t MULTI < <(ls "$RUNS"/*_multitask_seed0/best.pt)
$MURA ensemble "${MULTI[@]}" --out "$OUT/ensemble.pt"
$MURA evaluate --checkpoint "$OUT/ensemble.pt" --data-root "$DATA" --out "$OUT/eval_ensemble" --no-progress

echo "== export to ONNX; predict the same three test images with the checkpoint and the ONNX file"
$MURA export --checkpoint "$CNN_MULTI" --out "$OUT/custom_cnn_multitask.onnx"
mapfile -t IMAGES < <($PY -c "import pandas as p; t=p.read_csv('$OUT/eval_multi/predictions.csv'); print('\n'.join(t['path'].head(3)))")
$MURA predict "${IMAGES[@]}" --checkpoint "$CNN_MULTI" --format csv > "$OUT/predict_checkpoint.csv"
$MURA predict "${IMAGES[@]}" --checkpoint "$OUT/custom_cnn_multitask.onnx" --format csv > "$OUT/predict_onnx.csv"

echo "== the test images through a CSV manifest (path,label,body_part,split)"
$PY - "$DATA" "$OUT" <<'EOF'
import sys
from pathlib import Path

import pandas as pd

from mura_utils.data.registry import load_index

data, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
index = load_index(data)
manifest = index[["path", "label", "body_part", "split"]].assign(path=lambda t: [str(Path(p).resolve()) for p in t["path"]])
manifest.to_csv(out / "fracatlas_manifest.csv", index=False)
print(f"manifest: {len(manifest)} rows, {int((manifest['split'] == 'test').sum())} test")
EOF
$MURA evaluate --checkpoint "$CNN_MULTI" --data-root "$OUT/fracatlas_manifest.csv" --threshold val --out "$OUT/eval_manifest" --no-progress

$PY - "$OUT" <<'EOF'
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

out = Path(sys.argv[1])
native = pd.read_csv(out / "eval_multi" / "predictions.csv")
manifest = pd.read_csv(out / "eval_manifest" / "predictions.csv")
merged = native.assign(key=native["path"].map(lambda p: Path(p).name)).merge(
    manifest.assign(key=manifest["path"].map(lambda p: Path(p).name)), on="key", suffixes=("_native", "_manifest")
)
assert len(merged) == len(native) == len(manifest), (len(merged), len(native), len(manifest))
gap = float(np.abs(merged["probability_native"] - merged["probability_manifest"]).max())
by_checkpoint = pd.read_csv(out / "predict_checkpoint.csv")
by_onnx = pd.read_csv(out / "predict_onnx.csv")
onnx_gap = float(np.abs(by_checkpoint["probability"].to_numpy() - by_onnx["probability"].to_numpy()).max())
summary = {}
for name in ("eval_multi", "eval_single", "eval_ensemble", "eval_manifest"):
    metrics = json.loads((out / name / "metrics.json").read_text())
    summary[name] = {"image_auroc": round(metrics["image"]["auroc"], 4), "n_images": metrics["n_images"]}
summary["manifest_vs_native_max_probability_gap"] = gap
summary["onnx_vs_checkpoint_max_probability_gap"] = onnx_gap
print(json.dumps(summary, indent=1))
assert gap < 1e-5 and onnx_gap < 1e-4, "manifest or ONNX predictions differ from the native checkpoint's"
(out / "tour.json").write_text(json.dumps(summary, indent=1))
print(f"CLI tour passed: {out / 'tour.json'}")
EOF
