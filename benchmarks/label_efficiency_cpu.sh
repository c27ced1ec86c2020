#!/usr/bin/env bash
# The reduced CPU version of the label-efficiency suite published in results/: pre-training on
# a fixed 20,000-image subset of the 60k train images for 4 epochs, scoring on a fixed 5,000-image
# subset of the test split, fine-tuning for 2 epochs (at least 150 steps). Everything else (ViT,
# maskers, label counts 10/100/1000, probes on every block, both baselines, 3 seeds) as in the suite.
set -euo pipefail
exec mimbench run label-efficiency --out "${1:-results}" \
  --set name=label-efficiency-cpu \
  --set 'description="label-efficiency reduced for a 2-core CPU: pre-training on 20000 train images for 4 epochs, 5000 test images, fine-tuning 2 epochs (>= 150 steps)"' \
  --set dataset.params.train_images=20000 \
  --set dataset.params.test_images=5000 \
  --set train.epochs=4 \
  --set 'report.reference={masker: patch}' \
  --set 'eval.probes=[{name: linear, params: {layer: all}}, {name: knn, params: {layer: all}}, {name: finetune, params: {epochs: 2, min_steps: 150, lr: 1.0e-3, layer_decay: 0.75, warmup_epochs: 0.2}}]' \
  "${@:2}"
