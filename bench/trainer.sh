#!/usr/bin/env bash
# Trainer overhead: an epoch of the Fashion-MNIST MLP with everything on (progress bar, CSV and
# TensorBoard logging, checkpoints, validation) against the bare loop (--barebones), both on the
# same compiled steps. Epoch time = (time of 4 epochs - time of 1 epoch) / 3, which cancels
# start-up; best of 3. Target: under 2% overhead. A benchmark, not a test.
set -euo pipefail
ltlc=$(realpath "${1:-build/ltlc}")
ex=$(realpath examples/fashion_mlp.ltl)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
epoch() { # best-of-3 epoch time in ms for the given flags
  local best=""
  for _ in 1 2 3; do
    local t1 t4
    t1=$(ms "$ltlc" run "$ex" fit --trainer.max_epochs=1 "$@")
    t4=$(ms "$ltlc" run "$ex" fit --trainer.max_epochs=4 "$@")
    local e=$(( (t4 - t1) / 3 ))
    if [ -z "$best" ] || [ "$e" -lt "$best" ]; then best=$e; fi
  done
  echo "$best"
}
# the callbacks of the example (early stopping could end a run early) are kept out of both
full=$(epoch --trainer.enable_progress_bar=true)
bare=$(epoch --barebones)
samples=55000
printf '| configuration | epoch (ms) | samples/s |\n|---|---|---|\n'
printf '| everything on (bar, CSV+TensorBoard, checkpoint, validation) | %d | %d |\n' "$full" $(( samples * 1000 / (full > 0 ? full : 1) ))
printf '| --barebones | %d | %d |\n' "$bare" $(( samples * 1000 / (bare > 0 ? bare : 1) ))
awk -v f="$full" -v b="$bare" 'BEGIN { printf "\ntrainer overhead: %.1f%% (target < 2%%; both run validation)\n", 100 * (f - b) / b }'
