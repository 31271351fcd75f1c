#!/bin/sh
# bench/cuda.sh — the MLP and CNN training steps on the GPU (CUDA executor, graph replay),
# fp32 and bf16-mixed, against PyTorch eager CUDA on the same models, fp32 and autocast bf16,
# batch 64; then f32 GEMMs (cuBLASLt vs cuBLAS) and the CNN's convolutions (vs cuDNN) alone. Writes $BUILD/bench/CUDA.md.
# Without a usable GPU it says "no GPU" and exits 0. A benchmark, not a test.
#   bench/cuda.sh [seconds]
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}

make -s BUILD="$BUILD" "$BUILD/bench/cuda"
out=$("$BUILD/bench/cuda" "$BUILD/bench/CUDA.md" "${1:-3}")
if [ -n "$out" ]; then echo "$out"; exit 0; fi   # "no GPU: ..."
cat "$BUILD/bench/CUDA.md"

PY=
for p in python3 /usr/bin/python3; do
    if $p -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then PY=$p; break; fi
done
[ -n "$PY" ] || { echo "PyTorch with CUDA is not installed: no peer to compare with"; exit 0; }
$PY - "${1:-3}" <<'PY' | tee -a "$BUILD/bench/CUDA.md"
import sys, time, torch
import torch.nn as nn, torch.nn.functional as F
dev = torch.device("cuda")
mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 10))
cnn = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Dropout(0.25), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10))
print("\n| PyTorch eager CUDA | precision | steps/s |\n|---|---|---|")
for name, m in (("mlp", mlp), ("cnn", cnn)):
    m = m.to(dev)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    x = torch.randn(64, 1, 28, 28, device=dev); y = torch.arange(64, device=dev) % 10
    for prec in ("fp32", "autocast bf16"):
        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=prec != "fp32"):
                loss = F.cross_entropy(m(x), y)
            loss.backward(); opt.step()
        for _ in range(10): step()
        torch.cuda.synchronize(); n = 0; t = time.perf_counter()
        while time.perf_counter() - t < float(sys.argv[1]): step(); n += 1
        torch.cuda.synchronize()
        print(f"| {name} | {prec} | {n / (time.perf_counter() - t):.0f} |")
# f32 GEMMs through cuBLAS (TF32 off, as LTL's 32-true), summed as LTL's are
torch.backends.cuda.matmul.allow_tf32 = False
print("\n| PyTorch op alone (cuBLAS, cuDNN) | us/run | GFLOP/s |\n|---|---|---|")
for n in (1024, 4096):
    a = torch.randn(n, n, device=dev); b = torch.randn(n, n, device=dev)
    for _ in range(10): torch.mm(a, b).sum().item()
    k = 0; t = time.perf_counter()
    while time.perf_counter() - t < float(sys.argv[1]) / 3: torch.mm(a, b).sum().item(); k += 1
    us = 1e6 * (time.perf_counter() - t) / k
    print(f"| GEMM {n}^3 f32 | {us:.1f} | {2 * n ** 3 / us * 1e-3:.0f} |")
# the CNN's convolutions one by one through cuDNN (its fastest algorithm), summed as LTL's are
torch.backends.cudnn.benchmark = True
from torch.nn.grad import conv2d_input, conv2d_weight
for name, c, o, hw in (("conv1 forward", 1, 32, 28), ("conv2 forward", 32, 64, 26), ("conv2 bwd_data", 32, 64, 26),
                       ("conv1 bwd_filter", 1, 32, 28), ("conv2 bwd_filter", 32, 64, 26)):
    x = torch.randn(64, c, hw, hw, device=dev); w = torch.randn(o, c, 3, 3, device=dev)
    gy = torch.randn(64, o, hw - 2, hw - 2, device=dev)
    f = {"forward": lambda: F.conv2d(x, w), "bwd_data": lambda: conv2d_input(x.shape, w, gy),
         "bwd_filter": lambda: conv2d_weight(x, w.shape, gy)}[name.split()[1]]
    for _ in range(10): f().sum().item()
    n = 0; t = time.perf_counter()
    while time.perf_counter() - t < float(sys.argv[1]) / 3: f().sum().item(); n += 1
    us = 1e6 * (time.perf_counter() - t) / n
    print(f"| {name} | {us:.1f} | {2 * 64 * o * c * 9 * (hw - 2) ** 2 / us * 1e-3:.0f} |")
PY
