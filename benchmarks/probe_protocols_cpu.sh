#!/usr/bin/env bash
# The probe-protocol runs published in results/: two earlier conclusions re-asked under the
# attentive probe, with every probe's hyper-parameters chosen on held-out train data (the default
# grids of linear, knn and attentive), over 5 seeds. Each run keeps its per-image predictions, so
# every comparison is tested over the seeds and the test images together.
#   quick-probes-cpu: quick (pixel vs patch vs region masking, a 2-block 64-dim ViT, the embedded
#     5,000/1,000-image Fashion-MNIST subset): "raw pixels beat every encoder", "the untrained ViT
#     wins on linear probing".
#   prediction-targets-probes-cpu: prediction-targets-cpu (benchmarks/prediction_targets_cpu.sh)
#     with three of its targets (pixels, MAE's norm_pix, MaskFeat's HOG): "HOG ahead of pixels".
set -euo pipefail
out="${1:-results}"
probes='eval.probes=[{name: linear, params: {layer: all}}, {name: knn, params: {layer: all}}, attentive]'
mimbench run quick --out "$out" \
  --set name=quick-probes-cpu \
  --set 'description="quick with the attentive probe and probe hyper-parameters chosen on held-out train data, 5 seeds"' \
  --set 'seeds=[0, 1, 2, 3, 4]' \
  --set "$probes" \
  "${@:2}"
mimbench run prediction-targets --out "$out" \
  --set name=prediction-targets-probes-cpu \
  --set 'description="prediction-targets reduced for a 2-core CPU (as prediction-targets-cpu) with three targets, the attentive probe and probe hyper-parameters chosen on held-out train data, 5 seeds"' \
  --set dataset.params.train_images=20000 \
  --set dataset.params.test_images=5000 \
  --set 'grid.encoder=[{name: vit, params: {patch_size: 4, dim: 64, depth: 2, heads: 4}}]' \
  --set 'grid.target=[pixels, {name: norm_pix, params: {patch_size: 4}}, {name: hog, params: {cell_size: 4, bins: 9, gaussian_window: 4}}]' \
  --set train.warmup_epochs=1 \
  --set 'seeds=[0, 1, 2, 3, 4]' \
  --set train.budget_flops=3.36517988352e+12 \
  --set "$probes" \
  --set 'sweep={eval.labels_per_class: [10, 100]}' \
  "${@:2}"
