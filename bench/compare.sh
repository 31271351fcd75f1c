#!/usr/bin/env bash
# bench/compare.sh — LTL against PyTorch eager, torch.compile and PyTorch Lightning on the same
# models (examples/fashion_mlp.ltl, examples/fashion_cnn.ltl, mirrored in bench/compare.py), the
# same data (Fashion-MNIST), batch 64, threads, epochs and optimizer. Measures, for each: training
# samples/s (steady state), time to the first training step (cold), peak RSS and test accuracy;
# prints a Markdown table and writes it to bench/RESULTS.md. A benchmark, not a test.
#   bench/compare.sh [LTLC]        (default build/ltlc; `make bench` runs it)
# Environment:
#   BENCH_EPOCHS_MLP (10), BENCH_EPOCHS_CNN (1: a CNN epoch takes minutes on 2 cores),
#   BENCH_CNN_BATCHES (training batches per CNN epoch, for a quick run; default all 859),
#   BENCH_THREADS (one per core), BENCH_MODELS ("mlp cnn"), BENCH_FRAMEWORKS ("ltl eager compile
#   lightning"), BENCH_TIMEOUT (seconds per run, 3600), BENCH_OUT (bench/RESULTS.md),
#   BENCH_VENV (bench/.venv: created and filled from PyPI when it lacks torch or lightning),
#   BENCH_TORCH_INDEX (an index for torch only, e.g. https://download.pytorch.org/whl/cpu for the
#   small CPU-only wheel; PyPI's default wheel brings ~5 GB of CUDA libraries).
# Without a usable virtual environment the PyTorch rows say so and LTL's are still measured.
set -uo pipefail
cd "$(dirname "$0")/.."
die() { echo "bench/compare.sh: $*" >&2; exit 2; }

LTLC=${1:-build/ltlc}
[ -x "$LTLC" ] || die "$LTLC is not an executable (build it with make)"
LTLC=$(realpath "$LTLC")
for v in BENCH_EPOCHS_MLP BENCH_EPOCHS_CNN BENCH_THREADS BENCH_TIMEOUT; do
    [[ ${!v:-1} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"
done
EP_MLP=${BENCH_EPOCHS_MLP:-10}
EP_CNN=${BENCH_EPOCHS_CNN:-1}
CNN_BATCHES=${BENCH_CNN_BATCHES:-0}
THREADS=${BENCH_THREADS:-$(nproc)}
TIMEOUT=${BENCH_TIMEOUT:-3600}
[[ $CNN_BATCHES =~ ^[0-9]+$ ]] || die "BENCH_CNN_BATCHES must be a count of batches, not '$CNN_BATCHES'"
MODELS=${BENCH_MODELS:-mlp cnn}
FRAMEWORKS=${BENCH_FRAMEWORKS:-ltl eager compile lightning}
for m in $MODELS; do [[ $m == mlp || $m == cnn ]] || die "unknown model '$m' in BENCH_MODELS (mlp, cnn)"; done
for f in $FRAMEWORKS; do
    [[ $f =~ ^(ltl|eager|compile|lightning)$ ]] || die "unknown framework '$f' in BENCH_FRAMEWORKS (ltl, eager, compile, lightning)"
done
VENV=$(realpath -m "${BENCH_VENV:-bench/.venv}")
OUT=${BENCH_OUT:-bench/RESULTS.md}
DATA=/usr/share/datasets/fashion-mnist
[ -r "$DATA/train-images-idx3-ubyte.gz" ] || die "no Fashion-MNIST in $DATA (make deps installs dataset-fashion-mnist)"
CMP=$PWD/bench/compare.py
WORK=$PWD/build/bench/compare     # run folders and logs of the last run, kept for a look
mkdir -p "$(dirname "$WORK")" || die "cannot create $(dirname "$WORK")"
exec 9>"$WORK.lock"
flock -n 9 || die "another bench/compare.sh is running (it uses $WORK)"
rm -rf "$WORK" && mkdir -p "$WORK" || die "cannot create $WORK"
RES=$WORK/results.jsonl
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- the virtual environment (PyTorch, Lightning) ----------------------------------------
need_py=0
for f in $FRAMEWORKS; do [ "$f" = ltl ] || need_py=1; done
py_ok=0
PY_VERSIONS="not installed"
if [ $need_py = 1 ]; then
    check='import torch, lightning, tensorboardX'
    if ! "$VENV/bin/python" -c "$check" 2>/dev/null; then
        echo "bench: installing torch, lightning, tensorboardX, numpy from PyPI into $VENV (log: $VENV/install.log)"
        if python3 -m venv "$VENV" >"$WORK/venv.log" 2>&1; then
            {
                if [ -n "${BENCH_TORCH_INDEX:-}" ]; then "$VENV/bin/pip" install --index-url "$BENCH_TORCH_INDEX" torch; fi &&
                "$VENV/bin/pip" install torch lightning tensorboardX numpy
            } >"$VENV/install.log" 2>&1
        else
            cat "$WORK/venv.log" >&2
        fi
    fi
    if "$VENV/bin/python" -c "$check" 2>/dev/null; then
        py_ok=1
        PY_VERSIONS=$("$VENV/bin/python" -c 'import sys, torch, lightning
print("Python %s, torch %s, lightning %s" % (sys.version.split()[0], torch.__version__, lightning.__version__))' 2>/dev/null)
    else
        echo "bench: no usable PyTorch + Lightning in $VENV (see $VENV/install.log; python3-venv and access to PyPI are needed): the PyTorch rows are skipped" >&2
    fi
fi

# ---- the runs ------------------------------------------------------------------------------
measure() { python3 "$CMP" measure "$@"; }
skip() { echo "{\"framework\": \"$1\", \"model\": \"$2\", \"epochs\": $3, \"ok\": false, \"error\": \"$4\"}" >>"$RES"; }

ltl_run() { # model epochs batches
    local m=$1 ep=$2 nb=$3 ex=$PWD/examples/fashion_$1.ltl d=$WORK/ltl-$1
    mkdir -p "$d/first" "$d/fit"
    # Time to the first step: a fresh process with an empty compile cache, the example's
    # sanity check included, the closing validation cut to 2 batches; whole process, exit included.
    (cd "$d/first" && XDG_CACHE_HOME=$d/cache measure "$d/first.json" "$d/first.log" "$TIMEOUT" \
        "$LTLC" run "$ex" fit --trainer.max_steps=1 --trainer.limit_val_batches=2 --threads="$THREADS")
    (cd "$d/fit" && XDG_CACHE_HOME=$d/cache measure "$d/fit.json" "$d/fit.log" "$TIMEOUT" \
        "$LTLC" run "$ex" fit test --trainer.max_epochs="$ep" --threads="$THREADS" \
        ${nb:+--trainer.limit_train_batches=$nb}) &&
        python3 "$CMP" ltl "$m" "${nb:-0}" "$d/fit/runs/lightning_logs/version_0" "$d/figs.json"
    python3 "$CMP" row ltl "$m" "$ep" "$d/fit.json" "$d/figs.json" "$d/first.json" >>"$RES"
}

py_run() { # model mode epochs batches
    local m=$1 mode=$2 ep=$3 nb=$4 d=$WORK/$2-$1
    if [ $py_ok = 0 ]; then skip "$mode" "$m" "$ep" "skipped: no PyTorch virtual environment"; return; fi
    mkdir -p "$d"
    # an empty Inductor cache: torch.compile's first step is cold, like LTL's
    (cd "$d" && TORCHINDUCTOR_CACHE_DIR=$d/inductor TRITON_CACHE_DIR=$d/triton \
        measure "$d/fit.json" "$d/fit.log" "$TIMEOUT" "$VENV/bin/python" "$CMP" train "$m" "$mode" "$ep" "${nb:-0}" "$THREADS" "$d/figs.json" "$d")
    python3 "$CMP" row "$mode" "$m" "$ep" "$d/fit.json" "$d/figs.json" >>"$RES"
}

for m in $MODELS; do
    ep=$EP_MLP nb=
    if [ "$m" = cnn ]; then ep=$EP_CNN; [ "$CNN_BATCHES" = 0 ] || nb=$CNN_BATCHES; fi
    for f in $FRAMEWORKS; do
        echo "bench: $f, $m, $ep epoch(s)${nb:+ of $nb batches}, $THREADS thread(s) ..."
        if [ "$f" = ltl ]; then ltl_run "$m" "$ep" "$nb"; else py_run "$m" "$f" "$ep" "$nb"; fi
        tail -n 1 "$RES"
    done
done

# ---- the report ------------------------------------------------------------------------------
cat >"$WORK/header.md" <<EOF
# LTL against PyTorch on Fashion-MNIST

Written by \`bench/compare.sh\` (\`make bench\`) on $(date -u '+%Y-%m-%d %H:%M UTC').

- Machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo);
  load average $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end (other work on these cores skews every figure, PyTorch's 2-thread runs the most).
- LTL: \`ltlc\` $("$LTLC" --version 2>/dev/null | awk '{ print $2 }'), commit $(git describe --always --dirty 2>/dev/null || echo unknown); $PY_VERSIONS (from PyPI, in \`${VENV#$PWD/}\`).
- Same for all: batch 64, $THREADS thread(s) (\`--threads\`, \`torch.set_num_threads\`), Adam 1e-3, seed 42, PyTorch's
  default initialisation, the 55 000 / 5 000 split of the training set, normalisation (x/255 - 0.2860)/0.3530;
  MLP: $EP_MLP epoch(s) at most (early stopping on val_loss, patience 3); CNN: $EP_CNN epoch(s)$([ "$CNN_BATCHES" = 0 ] || echo " of $CNN_BATCHES batches")
  (the example trains 10, but a CNN epoch takes minutes on 2 cores), dropout 0.25/0.5, random horizontal flips,
  cosine schedule (T_max 10).
EOF
cat >"$WORK/footer.md" <<'EOF'
How each figure is taken:
- **samples/s**: training samples per second in steady state, data loading and logging included: from
  the time stamps of every 50th step (`log_every_n_steps`; LTL's from its TensorBoard events), over
  windows inside one epoch, so validation, checkpoints and compilation (the first 50 steps) are out.
- **first step**: LTL: wall time of a fresh `ltlc run … fit --trainer.max_steps=1` with an empty
  compile cache (start, loading the data, compiling, the 2 sanity-check batches, one step, 2
  validation batches, exit). PyTorch: from process start to the end of the first optimizer step,
  inside the training run (an empty Inductor cache for torch.compile; Lightning's sanity check
  included), so PyTorch's figure leaves out its exit: the comparison favours PyTorch.
- **peak RSS**: the largest resident set among the run's processes (getrusage of the children).
- **test acc**: the final weights on the 10 000 test images after the epochs above.
- PyTorch eager and torch.compile run a plain loop (train, validate, early stopping as the example
  says, test); Lightning runs the example's callbacks and CSV + TensorBoard loggers, as LTL does.
  The PyTorch loaders take whole batches from memory (one indexing operation each, no worker
  processes); LTL's loader runs the example's `workers = 2` threads.
EOF
python3 "$CMP" table "$RES" "$WORK/header.md" "$WORK/footer.md" "$OUT" || die "no table written"
echo "bench: written $OUT (logs and run folders in $WORK)"
