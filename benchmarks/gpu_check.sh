#!/usr/bin/env bash
# The one prepared GPU check (at most ~9 minutes, within one 10-minute device call): CUDA tests of the
# augmentation and of training (fit on cuda), then gpu_epoch.py (baseline vs optimized, then optimized
# + torch.compile) and train_throughput.py on CUDA. Logs go to $OUT (or /tmp/mura_gpu_check); copy the numbers, with the card
# from nvidia-smi.txt, into benchmarks/RESULTS.md. Run from the repository root:
#     bash benchmarks/gpu_check.sh            (PYTHON=.venv/bin/python to choose the interpreter)
set -u
out=${OUT:-/tmp/mura_gpu_check}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH=. HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
"$python" -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" > "$out/torch.txt" 2>&1
timeout 90 "$python" -m pytest -q -rs tests/test_augment.py tests/test_train.py -k "cuda" > "$out/tests.txt" 2>&1
timeout 200 "$python" benchmarks/gpu_epoch.py > "$out/gpu_epoch.txt" 2>&1
timeout 150 "$python" benchmarks/gpu_epoch.py --skip-baseline --compile > "$out/gpu_epoch_compile.txt" 2>&1
timeout 80 "$python" benchmarks/train_throughput.py --device cuda --img-size 320 --batch-size 64 --steps 20 \
    > "$out/train_throughput.txt" 2>&1
tail -n 4 "$out"/*.txt
