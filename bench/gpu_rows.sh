#!/usr/bin/env bash
# bench/README.md's GPU section as one script, sized to finish within 10 minutes on one
# H100 or H200 (#25 item 6): the CUDA tests, the forward pass in each precision, both
# embedders' pipelines against their forward pass (with the device resize's slice sizes), and
# the exact index in torch against the partitioned one. Each step has its own time limit and
# log, so a slow step costs only itself (session 19 on an H200: about 6 minutes in all).
#
#   bash bench/gpu_rows.sh [LOG_FOLDER]          # on the GPU machine, curate installed
#   GPU_ROWS_SMOKE=1 bash bench/gpu_rows.sh      # tiny sizes on the CPU: checks the script itself
set -u
cd "$(dirname "$0")/.."
LOGS=${1:-/tmp/gpu-rows}
PY=${PYTHON:-python3}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1     # nothing is downloaded there

if [ "${GPU_ROWS_SMOKE:-0}" = 1 ]; then
    DEVICE=cpu IMAGES_SMALL=32 IMAGES_LARGE=16 WORKERS="1 2" SIZES="20000 40000" BATCHES=1 COMPARED=16
    VIT=vit_base_patch16_224
else
    DEVICE=cuda IMAGES_SMALL=2048 IMAGES_LARGE=1024 WORKERS="8 15" SIZES="200000 500000" BATCHES=8 COMPARED=256
    VIT=vit_large_patch14_clip_336.openai
fi

step() {    # step NAME SECONDS COMMAND...: its output to the terminal and LOGS/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s, $(date +%T))"
    timeout "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
    echo "== $name: exit ${PIPESTATUS[0]} ($(date +%T))"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    lscpu | grep -E 'Model name|^CPU\(s\)|Flags' | cut -c1-120
    grep -o -w -E 'avx512_bf16|amx_bf16' /proc/cpuinfo | sort -u
    "$PY" -c "import torch, torchvision, timm, curate; print('torch', torch.__version__, 'torchvision', \
torchvision.__version__, 'timm', timm.__version__, 'threads', torch.get_num_threads(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"
} 2>&1 | tee "$LOGS/machine.log"

step tests 60 "$PY" -m pytest tests/test_device_paths.py -q -p no:cacheprovider -x
step forward 150 bash -c "\"$PY\" bench/gpu_forward.py --batch-sizes 128 256 --batches $BATCHES --images $COMPARED --peak-tflops 989 &&
    \"$PY\" bench/gpu_forward.py --embedder vit-cls --model $VIT --random-weights --batch-sizes 64 128 \
    --batches $BATCHES --images $COMPARED --peak-tflops 989 --timed autocast bfloat16"
step timm-pool 90 "$PY" bench/embed_throughput.py --device "$DEVICE" --batch-size 128 --workers $WORKERS \
    --processes --device-decode --peak-tflops 989 --images "$IMAGES_SMALL" --resize-slices 32 64 128
step vit-large 90 "$PY" bench/embed_throughput.py --embedder vit-cls --model "$VIT" --random-weights \
    --device "$DEVICE" --batch-size 64 --workers $WORKERS --processes --device-decode --peak-tflops 989 \
    --images "$IMAGES_LARGE"
step index 140 "$PY" bench/index_scale.py --sizes $SIZES --exact-max 1000000 --kinds partitioned
exit 0
