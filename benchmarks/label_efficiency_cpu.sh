#!/usr/bin/env bash
# The reduced CPU version of the label-efficiency suite published in results/: pre-training on
# a fixed 20,000-image subset of the 60k train images for 4 epochs, scoring on a fixed 5,000-image
# subset of the test split, fine-tuning for 2 epochs (at least 150 steps); SimMIM's patch masking
# only (the suite also has region) at 10 and 100 labels per class (the suite also has 1,000), over
# 10 seeds (the suite has 3), so that Holm's correction over each table of 6 comparisons can reach
# p_holm < 0.05. Everything else (ViT, probes on every block, both baselines) as in the suite.
set -euo pipefail
exec mimbench run label-efficiency --out "${1:-results}" \
  --set name=label-efficiency-cpu \
  --set 'description="label-efficiency reduced for a 2-core CPU: pre-training on 20000 train images for 4 epochs, 5000 test images, patch masking only, labels per class 10 and 100, fine-tuning 2 epochs (>= 150 steps)"' \
  --set dataset.params.train_images=20000 \
  --set dataset.params.test_images=5000 \
  --set train.epochs=4 \
  --set 'grid.masker=[{name: patch, params: {ratio: 0.6, mask_patch_size: 4}}]' \
  --set 'seeds=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]' \
  --set 'sweep={eval.labels_per_class: [10, 100]}' \
  --set 'eval.probes=[{name: linear, params: {layer: all}}, {name: knn, params: {layer: all}}, {name: finetune, params: {epochs: 2, min_steps: 150, lr: 1.0e-3, layer_decay: 0.75, warmup_epochs: 0.2}}]' \
  "${@:2}"
