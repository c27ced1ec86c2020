#!/usr/bin/env bash
# GPU check (issues 4, 9, 12): the fashion-mnist-reference suite for one epoch on CUDA, one seed,
# printing images/s and peak GPU memory per run (bf16 autocast, TF32, data on the device); then
# step speed eager / compiled / CUDA graphs and ViT-B/16 MFU (benchmarks/step_speed.py), the
# maskers' share of a step (benchmarks/mask_share.py), the convolutional encoders with and without
# channels-last (benchmarks/encoder_speed.py), and an ablation slice one run at a time and
# packed with Ray. Meant to finish in about 10 minutes on an H100/H200. Uses the full Fashion-MNIST when it can find it (param root, $MIMBENCH_DATA,
# ~/.cache/mimbench, /usr/share/datasets/fashion-mnist), else the embedded subset.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
set -euo pipefail
out="${1:-${OUT:-/tmp}/gpu-check}"
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this check is for a GPU machine"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PY
dataset=fashion-mnist
if ! python -c "from mimbench_plugins.datasets import fashion_mnist; fashion_mnist('test')" 2>/dev/null; then
  echo "full Fashion-MNIST not found: using the embedded fashion-mnist-mini"
  dataset=fashion-mnist-mini
fi
start=$(date +%s)
python -m mimbench run fashion-mnist-reference --device cuda --out "$out" \
  --set name=gpu-check --set dataset=$dataset --set train.epochs=1 --set 'seeds=[0]' \
  --set 'eval.probes=[{name: linear, params: {layer: all}}, {name: knn, params: {layer: all}}, {name: finetune, params: {epochs: 1, warmup_epochs: 0.2}}]'
echo "wall time: $(( $(date +%s) - start )) s"
python - "$out/gpu-check/summary.csv" <<'PY'
import sys
import pandas as pd
table = pd.read_csv(sys.argv[1])
columns = ["encoder", "masker", "baseline", "status", "images_per_second", "peak_memory_mb", "train_seconds",
           "probe_seconds", "recon_psnr", "linear_acc", "knn_acc", "finetune_acc"]
print(table[[c for c in columns if c in table]].to_string(index=False))
PY

# Issue 12: step speed of simmim-ablation's ViT at 28 px, eager, compiled and with CUDA graphs;
# ViT-B/16 SimMIM at 224 px in bf16 and its model FLOPs utilisation; what masks cost a step.
here=$(dirname "$0")
python "$here/step_speed.py" --device cuda --compile default --compile reduce-overhead
python "$here/step_speed.py" --device cuda --vit-b16 --batch-size 128 --steps 20 --compile default
python "$here/mask_share.py" --device cuda --masker region --masker block --masker patch
for layout in "" --channels-last; do  # channels-last for the convolutional encoders
  python "$here/encoder_speed.py" --device cuda --encoder cnn --encoder resnet --channels 3 --batch-size 256 $layout
done

# Issue 9: a slice of simmim-ablation (5 mask setups x ratio 0.6, one seed, 2 epochs), one run at
# a time (local), then packed on the GPU with Ray (gpus_per_run 0.5 and 0.25) when Ray is
# importable; runs per hour and the GPU's mean utilisation (nvidia-smi, sampled every second).
slice=(--set name=ablation-slice --set dataset=$dataset --set train.epochs=2 --set 'seeds=[0]'
       --set 'sweep={masker.ratio: [0.6]}' --set 'eval.probes=[]' --device cuda)
measure() {  # measure LABEL ARGS...: one fresh run of the slice
  local label=$1; shift
  nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -l 1 > "$out/util-$label.txt" &
  local smi=$! t0=$(date +%s)
  python -m mimbench run simmim-ablation --out "$out/$label" --fresh "${slice[@]}" "$@" > "$out/$label.log" 2>&1 || true
  local seconds=$(( $(date +%s) - t0 )); kill $smi || true
  python - "$label" "$seconds" "$out/$label/ablation-slice/summary.csv" "$out/util-$label.txt" <<'PY'
import sys
import pandas as pd
label, seconds, summary, util = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
table = pd.read_csv(summary)
done = int((table.status == "done").sum())
samples = [float(x) for x in open(util).read().split() if x.strip()]
print(f"| {label} | {done}/{len(table)} | {seconds} s | {3600 * done / max(seconds, 1):.0f} | "
      f"{sum(samples) / max(len(samples), 1):.0f}% |")
PY
}
echo "| executor | runs done | wall | runs/hour | mean GPU util |"
echo "|---|---|---|---|---|"
measure local
if python -c "import ray" 2>/dev/null; then
  measure ray-0.5 --executor ray --set execution.gpus_per_run=0.5 --set execution.cpus_per_run=4
  measure ray-0.25 --executor ray --set execution.gpus_per_run=0.25 --set execution.cpus_per_run=2
else
  echo "Ray is not importable here: the packed measurements were skipped"
fi
