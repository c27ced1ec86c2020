#!/usr/bin/env bash
# What bf16 training costs in accuracy on a CPU with native bf16 (issue 35): the `quick` suite with
# 5 seeds, every configuration trained in fp32 and in bf16 (train.precision swept), the report
# comparing each bf16 configuration with its fp32 twin paired by seed (report.reference); then the
# same for a wider ViT (dim 256, depth 4, patch masking only, 3 seeds), where bf16 pays most.
set -euo pipefail
out="${1:-results}"
mimbench run quick --out "$out" \
  --set name=quick-precision-cpu \
  --set 'description="quick in fp32 and bf16 (train.precision swept), 5 seeds, each bf16 configuration against its fp32 twin"' \
  --set 'seeds=[0, 1, 2, 3, 4]' \
  --set 'sweep={train.precision: [fp32, bf16]}' \
  --set 'report={reference: {train.precision: fp32}}'
mimbench run quick --out "$out" \
  --set name=wide-precision-cpu \
  --set 'description="quick with a 256-d 4-block ViT and patch masking only, in fp32 and bf16, 3 seeds"' \
  --set 'seeds=[0, 1, 2]' \
  --set 'grid.encoder=[{name: vit, params: {patch_size: 4, dim: 256, depth: 4, heads: 4}}]' \
  --set 'grid.masker=[{name: patch, params: {ratio: 0.6, mask_patch_size: 4}}]' \
  --set 'sweep={train.precision: [fp32, bf16]}' \
  --set 'report={reference: {train.precision: fp32}}'
