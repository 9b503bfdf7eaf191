#!/usr/bin/env bash
# The one prepared GPU check (about 8-10 minutes on one H100/H200): CUDA tests of the augmentation and
# training, then gpu_epoch.py (baseline vs optimized, then optimized + torch.compile) and
# train_throughput.py on CUDA. Logs go to $OUT (or /tmp/mura_gpu_check); copy the numbers, with the card
# from nvidia-smi.txt, into benchmarks/RESULTS.md. Run from the repository root:
#     bash benchmarks/gpu_check.sh            (PYTHON=.venv/bin/python to choose the interpreter)
set -u
out=${OUT:-/tmp/mura_gpu_check}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH=. HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
"$python" -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" > "$out/torch.txt" 2>&1
timeout 120 "$python" -m pytest -q tests/test_augment.py > "$out/tests.txt" 2>&1
timeout 240 "$python" benchmarks/gpu_epoch.py > "$out/gpu_epoch.txt" 2>&1
timeout 180 "$python" benchmarks/gpu_epoch.py --skip-baseline --compile > "$out/gpu_epoch_compile.txt" 2>&1
timeout 120 "$python" benchmarks/train_throughput.py --device cuda --img-size 320 --batch-size 64 --steps 20 \
    > "$out/train_throughput.txt" 2>&1
tail -n 4 "$out"/*.txt
