#!/bin/sh
# bench/gemm.sh — builds and runs the GEMM benchmark (bench/gemm.c): FMA peak,
# LTL's JIT GEMM (f32 and bf16) and OpenBLAS in one run; writes bench/GEMM.md.
#   bench/gemm.sh [repetitions]      (default 7; best of them is reported)
# OpenBLAS is for the comparison only: installed here when missing.
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
CC=${CC:-cc}
LLVM_CONFIG=${LLVM_CONFIG:-llvm-config-19}

if ! dpkg-query -W -f='${Status}' libopenblas-dev 2>/dev/null | grep -q "ok installed"; then
    echo "installing libopenblas-dev (benchmark only)"
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenblas-dev
fi

mkdir -p "$BUILD/bench"
# The GEMM needs only the LLVM layer and the pool: build from those sources,
# so the benchmark does not wait for the rest of the compiler.
$CC -std=c17 -Wall -Wextra -Werror -O2 -g -D_GNU_SOURCE $($LLVM_CONFIG --cflags) -Icompiler -Iruntime \
    -o "$BUILD/bench/gemm" bench/gemm.c compiler/llvm_jit.c compiler/llvm_gemm.c compiler/llvm_gemm16.c runtime/pool.c \
    $($LLVM_CONFIG --ldflags --libs) -lopenblas -lpthread -lm

echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}"
"$BUILD/bench/gemm" bench/GEMM.md "${1:-7}"
echo "wrote bench/GEMM.md"
