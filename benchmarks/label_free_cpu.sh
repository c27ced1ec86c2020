#!/usr/bin/env bash
# The reduced CPU version of the label-free suite published in results/: the embedded Fashion-MNIST
# subset (5,000 train / 1,000 test images), a 4-block 64-dim ViT, 10 epochs of batches of 128 (390
# steps), 5 seeds. Everything else as in the suite: pixel / patch / region masking at ratios 0.4, 0.6
# and 0.8, the linear and k-NN probes, diagnostics on every run and baseline, random-init, raw pixels
# and the supervised control (the same ViT trained on the labels for the same 10 epochs).
set -euo pipefail
exec mimbench run label-free --out "${1:-results}" \
  --set name=label-free-cpu \
  --set 'description="label-free reduced for a 2-core CPU: the embedded subset, 4-block 64-dim ViT, 10 epochs of batch 128, 5 seeds"' \
  --set dataset=fashion-mnist-mini \
  --set 'grid.encoder=[{name: vit, params: {patch_size: 4, dim: 64, depth: 4, heads: 4}}]' \
  --set train.epochs=10 \
  --set train.batch_size=128 \
  --set train.warmup_epochs=1 \
  "${@:2}"
