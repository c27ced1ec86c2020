#!/usr/bin/env bash
# The reduced CPU version of the fashion-mnist-reference suite published in results/:
# 5000 of the 60k train images and 5000 of the 10k test images (fixed random subsets),
# 4 pre-training epochs, maskers pixel/patch/region, fine-tuning for 1 epoch. Everything else (models, probes, baselines, 3 seeds) as in the suite.
set -euo pipefail
exec mimbench run fashion-mnist-reference --out "${1:-results}" \
  --set name=fashion-mnist-reference-cpu \
  --set 'description="fashion-mnist-reference reduced for a 2-core CPU: 5000/5000 images, 4 epochs, maskers pixel/patch/region, fine-tuning 1 epoch"' \
  --set dataset.params.train_images=5000 \
  --set dataset.params.test_images=5000 \
  --set train.epochs=4 \
  --set 'grid.masker=[{name: pixel, params: {ratio: 0.6}}, {name: patch, params: {ratio: 0.6, mask_patch_size: 4}}, {name: region, params: {ratio: 0.6}}]' \
  --set 'report.reference={masker: patch}' \
  --set 'eval.probes=[{name: linear, params: {layer: all}}, {name: knn, params: {layer: all}}, {name: finetune, params: {epochs: 1, warmup_epochs: 0.2}}]'
