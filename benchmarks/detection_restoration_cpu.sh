#!/usr/bin/env bash
# The reduced CPU version of the detection-restoration suite published in results/: mosaics from the
# embedded Fashion-MNIST subset (1,000 train / 1,000 test canvases of 56 px), a 2-block 64-dim ViT
# (quick's), 6 epochs of batches of 64 (90 steps), 5 seeds. Everything else as in the suite: pixel /
# patch / region / block masking at 0.6, predicting pixels or MAE's norm_pix; the linear, seg_linear,
# detection and restoration probes; both baselines; SSIM and biharmonic / mean-fill references.
set -euo pipefail
exec mimbench run detection-restoration --out "${1:-results}" \
  --set name=detection-restoration-cpu \
  --set 'description="detection-restoration reduced for a 2-core CPU: mosaics of the embedded subset (1000 / 1000 canvases), 2-block 64-dim ViT, 6 epochs of batch 64, 5 seeds"' \
  --set dataset.params.source=mini \
  --set dataset.params.num_images=1000 \
  --set 'grid.encoder=[{name: vit, params: {patch_size: 4, dim: 64, depth: 2, heads: 4}}]' \
  --set train.epochs=6 \
  --set train.batch_size=64 \
  --set train.warmup_epochs=0.5 \
  --set 'seeds=[0, 1, 2, 3, 4]' \
  "${@:2}"
