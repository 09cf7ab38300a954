#!/usr/bin/env bash
# One accelerator, a few minutes: continue the shipped SeqPatch and U-net for the same minutes each, side by
# side on that device, on the synthetic recipe of issue 27 (train --recipe all-sizes: objects of 3-80 mm
# radius on the 1/2/4/8 mm grids, clicks anywhere in their inner half) with real brain structures mixed in;
# then score both on the validation sets (synthetic seed 1000 and held-out atlas structures), never on the
# real cases, which stay for evaluation.
#
#   bash weights/train_gpu.sh [MINUTES] [ATLAS_RATIO] [OUT]      (defaults: 10, 0.2, runs/gpu)
#
# The machine needs PyTorch, numpy, scipy and safetensors (Python 3.10-3.12); neither SimpleITK nor gradio:
# nothing here reads an image file. It reaches no registry, so the two data caches are made beforehand on a
# machine that does and travel with the working tree (the device tool's `carry`: cache/backgrounds.npz,
# cache/atlases):
#   python -m seqpatch_core prepare-backgrounds ../shared/data/backgrounds --out cache/backgrounds.npz
#   python -m seqpatch_core prepare-atlases --out cache/atlases --sources ho_sub,nmm_visible
# Synthetic slices are drawn on the GPU (train --generator auto = torch there); GENERATOR=numpy draws them
# in CPU loader workers instead. Then the CUDA bench, generator slices/s included:
#   python -m seqpatch_core bench --device cuda --dtype bfloat16 --train-step --no-load \
#     --backgrounds cache/backgrounds.npz --json OUT/bench_cuda.json
#
# Environment (defaults for the GPU run; tests/test_train_gpu_script.py runs it on the CPU for a few steps):
#   DEVICE=cuda  RECIPE=all-sizes  GENERATOR=auto  PYTHON=python3  SEED=11
#   BACKGROUNDS=cache/backgrounds.npz  ATLASES=cache/atlases
#   SEQPATCH_BATCH=32  UNET_BATCH=64  MAX_STEPS=0 (0: the minutes decide)  EVAL_EVERY=60 (s)
#   VAL_SLICES=48  EVAL_SYNTHETIC=192  EVAL_ATLAS=200  WORKERS=(half the cores, less one)
#   KEEP_RESUME=0: the optimiser states (<name>.resume.pt, 3x the weights) are deleted at the end so that
#   only small files remain; 1 keeps them for `train --resume`.
# Outputs in OUT: {seqpatch,unet}.safetensors with their records (.json) and logs, eval_{synthetic,atlas}.json
# (+ .log; the synthetic one scores each object's centre click and one click in its inner half). The shipped weights change only by copying an output over weights/ after reading its evaluation
# next to the shipped weights' on the same slices (weights/HISTORY.md).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
ratio=${2:-0.2}
out=${3:-runs/gpu}
device=${DEVICE:-cuda}
py=${PYTHON:-python3}
bg=${BACKGROUNDS:-cache/backgrounds.npz}
atlases=${ATLASES:-cache/atlases}
for need in "$bg" "$atlases"; do
  [ -e "$need" ] || { echo "missing $need: make it first (see the header of this script)" >&2; exit 2; }
done
if [ "$device" = cuda ]; then
  "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device here')"
fi
mkdir -p "$out"
cores=$(nproc)
workers=${WORKERS:-$(( cores / 2 > 1 ? cores / 2 - 1 : 1 ))}  # half the cores generate slices for each run
common=(--minutes "$minutes" --device "$device" --backgrounds "$bg" --workers "$workers"
        --eval-every "${EVAL_EVERY:-60}" --val-slices "${VAL_SLICES:-48}" --patience 100 --seed "${SEED:-11}"
        --max-steps "${MAX_STEPS:-0}" --atlas-ratio "$ratio" --atlas-bank "$atlases"
        --generator "${GENERATOR:-auto}" --recipe "${RECIPE:-all-sizes}")
if [ "$device" = cpu ]; then
  common+=(--threads 1)  # two runs side by side: one thread each
fi
"$py" -m seqpatch_core train --model seqpatch_gn --init weights/seqpatch.safetensors --batch "${SEQPATCH_BATCH:-32}" \
  --rays-per-slice 4 --out "$out/seqpatch.safetensors" "${common[@]}" >"$out/seqpatch.log" 2>&1 &
sp=$!
"$py" -m seqpatch_core train --model unet --init weights/unet.safetensors --batch "${UNET_BATCH:-64}" \
  --out "$out/unet.safetensors" "${common[@]}" >"$out/unet.log" 2>&1 &
un=$!
status=0
wait "$sp" || status=$?
wait "$un" || status=$?
grep -h "done:" "$out"/seqpatch.log "$out"/unet.log || tail -n 20 "$out"/seqpatch.log "$out"/unet.log
[ "$status" -eq 0 ] || { echo "a training run failed (logs in $out)" >&2; exit "$status"; }
weights=(--weights-seqpatch "$out/seqpatch.safetensors" --weights-unet "$out/unet.safetensors" --device "$device")
# the centre of each object and a click anywhere in its inner half (the click a user may make on an organ)
"$py" -m seqpatch_core evaluate --synthetic "${EVAL_SYNTHETIC:-192}" --seed 1000 --backgrounds "$bg" "${weights[@]}" \
  --clicks inner:1 --json "$out/eval_synthetic.json" >"$out/eval_synthetic.log" 2>&1
"$py" -m seqpatch_core evaluate --atlas "${EVAL_ATLAS:-200}" --atlas-bank "$atlases" "${weights[@]}" \
  --json "$out/eval_atlas.json" >"$out/eval_atlas.log" 2>&1
if [ "${KEEP_RESUME:-0}" != 1 ]; then
  rm -f "$out"/*.resume.pt
fi
ls -l "$out"
