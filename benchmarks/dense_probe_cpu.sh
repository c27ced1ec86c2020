#!/usr/bin/env bash
# The reduced CPU version of the dense-probe suite published in results/: mosaics from the embedded
# Fashion-MNIST subset (1,000 train / 1,000 test canvases of 56 px), a 2-block 64-dim ViT (quick's)
# and a 32-channel CNN, 6 epochs of batches of 64 (90 steps). Everything else (pixel / patch / region /
# block masking at 0.6, seg_linear, seg_knn, linear and k-NN on pooled features, both baselines,
# 3 seeds) as in the suite.
set -euo pipefail
exec mimbench run dense-probe --out "${1:-results}" \
  --set name=dense-probe-cpu \
  --set 'description="dense-probe reduced for a 2-core CPU: mosaics of the embedded subset (1000 / 1000 canvases), 2-block 64-dim ViT and 32-channel CNN, 6 epochs of batch 64"' \
  --set dataset.params.source=mini \
  --set dataset.params.num_images=1000 \
  --set 'grid.encoder=[{name: vit, params: {patch_size: 4, dim: 64, depth: 2, heads: 4}}, {name: cnn, params: {hidden_dim: 32}}]' \
  --set train.epochs=6 \
  --set train.batch_size=64 \
  --set train.warmup_epochs=0.5 \
  "${@:2}"
