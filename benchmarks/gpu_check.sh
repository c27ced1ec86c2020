#!/usr/bin/env bash
# GPU check (issue 4): the fashion-mnist-reference suite for one epoch on CUDA, one seed,
# printing images/s and peak GPU memory per run. Meant to finish well under 10 minutes on
# an H100/H200. Uses the full Fashion-MNIST when it can find it (param root, $MIMBENCH_DATA,
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
