#!/bin/sh
# bench/step.sh — whole training steps of the MLP and CNN examples at batch 64: the reference
# interpreter against the JIT-compiled step (1 and 2 threads), and PyTorch eager on the same
# models when `import torch` works. Writes $BUILD/bench/STEP.md. A benchmark, not a test.
#   bench/step.sh [seconds]     time spent measuring each JIT configuration (default 2)
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}

make -s BUILD="$BUILD" "$BUILD/bench/step"

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (other work on these CPUs skews the 2-thread rows)"
"$BUILD/bench/step" "$BUILD/bench/STEP.md" "${1:-2}"

# PyTorch eager on the same models, same batch, same optimizer, when it is installed
# (Debian's python3-torch lives in /usr/bin/python3, which a pyenv python3 may hide).
PY=
for p in python3 /usr/bin/python3; do
    if $p -c "import torch" 2>/dev/null; then PY=$p; break; fi
done
if [ -n "$PY" ]; then
    $PY - <<'PY' | tee -a "$BUILD/bench/STEP.md"
import time, torch
import torch.nn as nn, torch.nn.functional as F

class MLP(nn.Module):
    def __init__(s):
        super().__init__(); s.l1 = nn.Linear(784, 128); s.l2 = nn.Linear(128, 256); s.l3 = nn.Linear(256, 10)
    def forward(s, x):
        h = F.relu(s.l1(x.flatten(1))); h = F.relu(s.l2(h)); return F.log_softmax(s.l3(h), dim=1)

class CNN(nn.Module):
    def __init__(s):
        super().__init__()
        s.c1 = nn.Conv2d(1, 32, 3); s.c2 = nn.Conv2d(32, 64, 3); s.f1 = nn.Linear(9216, 128); s.f2 = nn.Linear(128, 10)
    def forward(s, x):
        h = F.relu(s.c1(x)); h = F.max_pool2d(F.relu(s.c2(h)), 2)
        h = F.dropout(h.flatten(1), 0.25, s.training); h = F.dropout(F.relu(s.f1(h)), 0.5, s.training)
        return s.f2(h)

print()
print("| model | engine | threads | ms/step | steps/s | samples/s |")
print("|---|---|---:|---:|---:|---:|")
for name, model, loss_fn in [("MLP 784-128-256-10", MLP(), F.nll_loss),
                             ("CNN conv32-conv64-pool-fc128-fc10", CNN(), F.cross_entropy)]:
    for threads in (1, 2):
        torch.set_num_threads(threads)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.randn(64, 1, 28, 28); y = torch.arange(64) % 10
        def step():
            opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); opt.step()
        for _ in range(3): step()
        best = float("inf")
        for _ in range(5):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 0.4: step(); n += 1
            best = min(best, (time.perf_counter() - t0) / n)
        print(f"| {name} | PyTorch {torch.__version__} eager | {threads} | {best*1e3:.3f} | {1/best:.0f} | {64/best:.0f} |")
PY
else
    echo "(PyTorch is not installed: no eager comparison; apt-get install python3-torch)"
fi
echo "wrote $BUILD/bench/STEP.md"
