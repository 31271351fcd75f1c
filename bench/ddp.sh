#!/usr/bin/env bash
# Data-parallel scaling: the Fashion-MNIST CNN (batch 64 per rank), 2 ranks x 1 thread
# (--trainer.devices=2, launched through mpirun) against 1 rank x 1 thread, samples/s.
# Time per step = the simple profiler's mean time of loading a batch plus the training step
# (rank 0's, which includes waiting for the other rank in the all-reduce), so start-up and
# compilation are left out; best of 3. Target: >= 1.8x. A benchmark, not a test.
# ACCEL=cuda: the same on GPUs (one per rank, NCCL all-reduce); needs 2 GPUs (NCCL does not
# let two ranks share one device), else it says so and exits 0.
set -euo pipefail
ltlc=$(realpath "${1:-build/ltlc}")
ex=$(realpath examples/fashion_cnn.ltl)
n=${N:-40}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
command -v mpirun >/dev/null || { echo "ddp bench: mpirun is not installed (openmpi-bin): skipped"; exit 0; }
accel=${ACCEL:-cpu}
if [ "$accel" = cuda ]; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  [ "${gpus:-0}" -ge 2 ] || { echo "ddp bench on GPUs: needs 2 GPUs, this machine has ${gpus:-0}: skipped"; exit 0; }
fi
per_step() { # best-of-3 milliseconds per training step with these flags
  local best=""
  for _ in 1 2 3; do
    local e
    e=$("$ltlc" run "$ex" fit --barebones --threads=1 --trainer.max_epochs=1 --trainer.limit_val_batches=0 \
          --trainer.limit_train_batches="$n" --trainer.profiler=simple --trainer.accelerator="$accel" "$@" 2>&1 |
        awk -F'|' '/train_dataloader_next|\.training_step/ { t += $2 } END { printf "%.2f", t * 1000 }')
    if [ -z "$best" ] || awk -v e="$e" -v b="$best" 'BEGIN { exit !(e < b) }'; then best=$e; fi
  done
  echo "$best"
}
one=$(per_step --trainer.devices=1)
two=$(per_step --trainer.devices=2)
awk -v one="$one" -v two="$two" -v accel="$accel" 'BEGIN {
  s1 = 64 * 1000 / one; s2 = 2 * 64 * 1000 / two
  printf "| CNN, batch 64 per rank, %s | ms per step | samples/s |\n|---|---|---|\n", accel
  printf "| 1 rank x 1 thread | %.1f | %.0f |\n| 2 ranks x 1 thread (mpirun) | %.1f | %.0f |\n", one, s1, two, s2
  printf "\nddp scaling: %.2fx (target >= 1.8x)\n", s2 / s1 }'
