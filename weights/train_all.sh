#!/usr/bin/env bash
# How the shipped weights are made: every model trains at the same time, for the same minutes, on the
# same generator, one process each on one GPU. The best synthetic-validation checkpoint of each run is
# kept; the real cases are never seen.
#
#   bash weights/train_all.sh MINUTES BACKGROUNDS OUTDIR
#   RECIPE=all-sizes bash weights/train_all.sh ...   (default lesions: the synthetic recipe of phase 1)
#   e.g. python -m seqpatch_core prepare-backgrounds ../shared/data/backgrounds --out cache/backgrounds.npz
#        bash weights/train_all.sh 8.3 cache/backgrounds.npz runs/gpu
set -uo pipefail
minutes=${1:?minutes}
bg=${2:?backgrounds folder or .npz}
out=${3:?output folder}
mkdir -p "$out"
export OMP_NUM_THREADS=1
run() {  # name workers batch
  python3 -m seqpatch_core train --model "$1" --minutes "$minutes" --out "$out/$1.safetensors" \
    --backgrounds "$bg" --workers "$2" --batch "$3" --eval-every 40 --val-slices 48 --threads 1 \
    --patience 100 --recipe "${RECIPE:-lesions}" >"$out/$1.log" 2>&1 &
}
# the compared pair and their tuning candidates
run seqpatch 2 16
run unet 2 16
run seqpatch_gn 1 16
run unet_w16 1 16
run unet_bn 1 16
# the paper's Table 2 ablations
for m in seqfcn bottom bottom_middle forward convlstm convgru; do run "$m" 1 16; done
wait
grep -h "done:" "$out"/*.log
