#!/usr/bin/env bash
# bench/examples.sh — `make examples`: trains every example in examples/ with its own settings
# (the Fashion-MNIST classifiers are tested as well) and prints what each reached: test
# metrics, the last logged value of each metric, the newest GAN sample grid, the last text the
# character model generated. Run folders and logs stay in build/examples/NAME/.
#   bench/examples.sh [LTLC]       (default build/ltlc)
#   EXAMPLES_FLAGS="--trainer.max_epochs=1"   extra `ltlc run` flags, e.g. for a quick pass
#   EXAMPLES="fashion_mlp gan"                  a subset
# Exit status: the number of examples that failed.
set -uo pipefail
cd "$(dirname "$0")/.."
LTLC=${1:-build/ltlc}
[ -x "$LTLC" ] || { echo "bench/examples.sh: $LTLC is not an executable (build it with make)" >&2; exit 2; }
LTLC=$(realpath "$LTLC")
failed=0
for name in ${EXAMPLES:-fashion_mlp fashion_cnn gan char_transformer}; do
    ex=$PWD/examples/$name.ltl
    stages=fit
    case $name in fashion_*) stages="fit test" ;; esac
    d=$PWD/build/examples/$name
    rm -rf "$d" && mkdir -p "$d"
    echo "== $name: ltlc run examples/$name.ltl $stages ${EXAMPLES_FLAGS:-}"
    start=$(date +%s)
    # shellcheck disable=SC2086 # stages and flags are word lists
    (cd "$d" && "$LTLC" run "$ex" $stages ${EXAMPLES_FLAGS:-} >out.log 2>err.log)
    st=$?
    secs=$(( $(date +%s) - start ))
    if [ $st != 0 ]; then
        echo "   FAILED (exit $st after ${secs} s): $(grep -m1 -E 'error|Error' "$d/err.log" || tail -n 1 "$d/err.log")"
        echo "   (logs in build/examples/$name/)"
        failed=$((failed + 1))
        continue
    fi
    run=$(ls -d "$d"/runs/lightning_logs/version_* 2>/dev/null | tail -n 1)
    echo "   done in ${secs} s; run folder build/examples/$name/${run#"$d"/}"
    # test metrics as ltlc prints them
    awk '/^test metrics:/ { on = 1; next } on && /^  / { print "   " $0; next } { on = 0 }' "$d/out.log"
    # the last logged value of each metric, with the epoch it was logged in
    if [ -n "$run" ] && [ -f "$run/metrics.csv" ]; then
        python3 - "$run/metrics.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
last = {}
for r in rows:
    for k, v in r.items():
        if k not in ("epoch", "step", "test_acc") and v:
            last[k] = (v, r["epoch"])
print("   last logged: " + ", ".join("%s %.4g (epoch %s)" % (k, float(v), e) for k, (v, e) in sorted(last.items())))
PY
    fi
    png=$(ls -v "$run"/samples/*.png 2>/dev/null | tail -n 1)
    [ -n "$png" ] && echo "   newest sample grid: build/examples/$name/${png#"$d"/}"
    if [ "$name" = char_transformer ]; then
        # the text generated after the last epoch: from the last prompt ("The ") on, progress lines left out
        echo "   generated after the last epoch:"
        grep -v -E '^(Epoch|Validation|Sanity|Testing|Predict)|it/s|^run folder' "$d/out.log" |
            awk '/^The / { buf = "" } { buf = buf "   | " $0 "\n" } END { printf "%s", buf }' | head -n 12
    fi
done
echo "== examples: $failed failed"
exit $failed
