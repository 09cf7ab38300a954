#!/usr/bin/env bash
# One accelerator, a few minutes: continue the shipped SeqPatch and U-net for the same minutes each, side by
# side on that GPU, with real brain structures mixed into the synthetic lesions; then evaluate both.
#
#   bash weights/train_gpu.sh [MINUTES] [ATLAS_RATIO] [OUT]      (defaults: 10, 0.2, runs/gpu)
#
# The GPU machine reaches no registry, so the two data caches are made beforehand on a machine that does
# and travel with the working tree (the device tool's `carry`: cache/backgrounds.npz, cache/atlases):
#   python -m seqpatch_core prepare-backgrounds ../shared/data/backgrounds --out cache/backgrounds.npz
#   python -m seqpatch_core prepare-atlases --out cache/atlases --sources ho_sub,nmm_visible
# Synthetic slices are drawn on the GPU (train --generator auto = torch there); GENERATOR=numpy draws them
# in CPU loader workers instead. Then the CUDA bench, generator slices/s included:
#   python -m seqpatch_core bench --device cuda --dtype bfloat16 --train-step --no-load \
#     --backgrounds cache/backgrounds.npz --json OUT/bench_cuda.json
# Outputs: OUT/{seqpatch,unet}.safetensors with their records (.json) and logs, OUT/eval_*.json. The shipped
# weights change only by copying an output over weights/ after reading its evaluation.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
ratio=${2:-0.2}
out=${3:-runs/gpu}
for need in cache/backgrounds.npz cache/atlases; do
  [ -e "$need" ] || { echo "missing $need: make it first (see the header of this script)" >&2; exit 2; }
done
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device here')"
mkdir -p "$out"
cores=$(nproc)
workers=$(( cores / 2 > 1 ? cores / 2 - 1 : 1 ))  # half the cores generate slices for each run
common=(--minutes "$minutes" --device cuda --backgrounds cache/backgrounds.npz --workers "$workers"
        --eval-every 60 --val-slices 48 --patience 100 --seed 11
        --atlas-ratio "$ratio" --atlas-bank cache/atlases --generator "${GENERATOR:-auto}")
python3 -m seqpatch_core train --model seqpatch_gn --init weights/seqpatch.safetensors --batch 32 \
  --rays-per-slice 4 --out "$out/seqpatch.safetensors" "${common[@]}" >"$out/seqpatch.log" 2>&1 &
python3 -m seqpatch_core train --model unet --init weights/unet.safetensors --batch 64 \
  --out "$out/unet.safetensors" "${common[@]}" >"$out/unet.log" 2>&1 &
wait
grep -h "done:" "$out"/*.log || tail -n 5 "$out"/*.log
weights=(--weights-seqpatch "$out/seqpatch.safetensors" --weights-unet "$out/unet.safetensors")
python3 -m seqpatch_core evaluate --synthetic 192 --backgrounds cache/backgrounds.npz --device cuda "${weights[@]}" --json "$out/eval_synthetic.json"
python3 -m seqpatch_core evaluate --atlas 200 --atlas-bank cache/atlases --device cuda "${weights[@]}" \
  --json "$out/eval_atlas.json"
for case in lung2_ct_crop brain1_mr_crop; do
  python3 -m seqpatch_core evaluate --image "examples/$case.nii.gz" --label "examples/${case}_label.nii.gz" \
    --device cuda "${weights[@]}" --json "$out/eval_$case.json"
done
