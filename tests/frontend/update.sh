#!/bin/sh
# update.sh — regenerates the expected output of the golden tests in tests/frontend/ from the
# current ltlc (see README.md there for the format). Review the diff before committing it.
#   tests/frontend/update.sh                 every golden
#   tests/frontend/update.sh NAME.ltl ...    only these (a new NAME.ltl gets a NAME.err;
#                                            `touch NAME.ast` first to make it an AST golden)
#   LTLC=path/to/ltlc tests/frontend/update.sh   another binary than build/ltlc
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
ltlc=${LTLC:-$root/build/ltlc}
[ -x "$ltlc" ] || { echo "update.sh: $ltlc not found; run make first" >&2; exit 2; }
cd "$root"   # ltlc runs here on tests/frontend/NAME.ltl, as tests/test_golden.c does
[ $# -gt 0 ] || set -- tests/frontend/*.ltl
for f in "$@"; do
    f=tests/frontend/$(basename "$f")
    base=${f%.ltl}
    status=0
    if [ -f "$base.ast" ]; then
        NO_COLOR=1 "$ltlc" emit ast "$f" >"$base.ast" 2>/dev/null || status=$?
        [ "$status" = 0 ] || echo "update.sh: $f no longer parses cleanly (exit $status)" >&2
    else
        NO_COLOR=1 "$ltlc" check "$f" >/dev/null 2>"$base.err.new" || status=$?
        { echo "# exit $status"; cat "$base.err.new"; } >"$base.err"
        rm -f "$base.err.new"
    fi
done
