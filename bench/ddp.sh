#!/usr/bin/env bash
# Data-parallel scaling: the Fashion-MNIST CNN (batch 64 per rank), 2 ranks x 1 thread
# (--trainer.devices=2, launched through mpirun) against 1 rank x 1 thread, samples/s.
# Training time = (time of N2 batches - time of N1 batches) / (N2 - N1) per rank, which cancels
# start-up and compilation; best of 3. Target: >= 1.8x. A benchmark, not a test.
set -euo pipefail
ltlc=$(realpath "${1:-build/ltlc}")
ex=$(realpath examples/fashion_cnn.ltl)
n1=${N1:-10} n2=${N2:-40}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
command -v mpirun >/dev/null || { echo "ddp bench: mpirun is not installed (openmpi-bin): skipped"; exit 0; }
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
per_batch() { # best-of-3 milliseconds per training batch (each rank runs one) with these flags
  local best=""
  for _ in 1 2 3; do
    local a b
    a=$(ms "$ltlc" run "$ex" fit --barebones --threads=1 --trainer.max_epochs=1 --trainer.limit_val_batches=0 \
          --trainer.limit_train_batches="$n1" "$@")
    b=$(ms "$ltlc" run "$ex" fit --barebones --threads=1 --trainer.max_epochs=1 --trainer.limit_val_batches=0 \
          --trainer.limit_train_batches="$n2" "$@")
    local e
    e=$(awk -v a="$a" -v b="$b" -v n="$((n2 - n1))" 'BEGIN { printf "%.3f", (b - a) / n }')
    if [ -z "$best" ] || awk -v e="$e" -v b="$best" 'BEGIN { exit !(e < b) }'; then best=$e; fi
  done
  echo "$best"
}
one=$(per_batch --trainer.devices=1)
two=$(per_batch --trainer.devices=2)
awk -v one="$one" -v two="$two" 'BEGIN {
  s1 = 64 * 1000 / one; s2 = 2 * 64 * 1000 / two
  printf "| CNN, batch 64 per rank | ms per step | samples/s |\n|---|---|---|\n"
  printf "| 1 rank x 1 thread | %.1f | %.0f |\n| 2 ranks x 1 thread (mpirun) | %.1f | %.0f |\n", one, s1, two, s2
  printf "\nddp scaling: %.2fx (target >= 1.8x)\n", s2 / s1 }'
