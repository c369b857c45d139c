#!/usr/bin/env bash
# The GPU checks of "Speed and scale" in one short script: never in CI, only on a machine
# with a CUDA GPU. Each benchmark runs fusion's path and the bare model side by side on
# the same batches, device and precision, and prints the ratio (targets: deep-feature
# stage >= 0.85, sliding-window segmentation of a 160 x 160 x 96 volume >= 0.8,
# classifier training at 224 pixels >= 0.85). About 5 minutes on one H200; each step
# has its own time limit, so one slow step does not cost the others.
#
#   bash benchmarks/gpu_checks.sh [folder]     # default: $OUT, else benchmarks/results/gpu
#
# Writes gpu.csv (the GPU, its memory and driver), deep.txt, seg.txt, classifier.txt.
set -uo pipefail
out=${1:-${OUT:-benchmarks/results/gpu}}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv" || {
    echo "no CUDA GPU (nvidia-smi failed): nothing to measure" >&2
    exit 2
}
"$py" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'" || exit 2
step() {  # name, limit in seconds, command...
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
    echo "(exit ${PIPESTATUS[0]})" | tee -a "$out/$name.txt"
}
step deep 150 "$py" benchmarks/bench_deep.py --device cuda --cases 120 --repeats 3
step seg 150 "$py" benchmarks/bench_seg.py --device cuda --volume 160 160 96 --volumes 4 --epochs 2
step classifier 150 "$py" benchmarks/bench_classifier.py --device cuda --size 224 --epochs 2
