#!/usr/bin/env bash
# Run a command as an AVX2+FMA machine (no AVX-512) would, on any x86-64 CPU that has AVX2:
# oneDNN, ATen and MKL are held to AVX2 and the native engine is built for -march=x86-64-v3.
#   utils/as_avx2.sh ./test.sh                     # the whole suite
#   utils/as_avx2.sh ./test.sh tests/test_native_engine.py
set -euo pipefail
if [ "$(uname -m)" != x86_64 ] || ! grep -qw avx2 /proc/cpuinfo; then
    echo "as_avx2: needs an x86-64 CPU with AVX2" >&2
    exit 2
fi
export ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
export AUDIODEC_NATIVE_MARCH=x86-64-v3
# torch.compile's kernel cache is not keyed by these caps: kernels compiled here and natively must
# not meet (a native run reusing this one's corrupted the heap), so this run keeps its own.
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-${TMPDIR:-/tmp}/torchinductor_$(id -un)_as_avx2}"
exec "$@"
