"""csrc/selftest.c: every kernel shape of the native engine against plain loops, built for each
instruction set this machine can run (natively, or arm64 under qemu-user)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from utils.runtime import native_build

SELFTEST = Path(REPO) / "csrc" / "selftest.c"
FLAGS = [flag for flag in native_build.FLAGS if flag not in ("-shared", "-fPIC")]
X86 = platform.machine() == "x86_64"


def cpu_has(*flags: str) -> bool:
    words = native_build._cpu_flags().split()
    return all(flag in words for flag in flags)


def build(tmp_path: Path, compiler: tuple[str, ...], march: str, openmp: bool | None = None) -> Path:
    """The self-test built as the engine is (its flags, the compiler's own included; -pthread for
    -fopenmp where the engine was built so, or when `openmp` is False)."""
    openmp = native_build.build().threads == "openmp" if openmp is None else openmp
    binary = tmp_path / f"selftest-{march}{'' if openmp else '-pthreads'}"
    version = subprocess.run([*compiler, "--version"], capture_output=True, text=True).stdout
    flags = [flag if openmp or flag != native_build.OPENMP else native_build.PTHREADS
             for flag in (*FLAGS, *native_build.compiler_flags(version))]  # fmt: skip
    result = subprocess.run(
        [*compiler, *flags, f"-march={march}", "-o", str(binary), str(SELFTEST), "-lm"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return binary


def run(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failures" in result.stdout
    return result.stdout


@pytest.fixture(scope="module")
def compiler() -> tuple[str, ...]:
    found = native_build.compiler_command()
    if found is None or not native_build.available():
        pytest.skip(f"native engine unavailable: {native_build.unavailable_reason()}")
    return found


def test_native_build(compiler: tuple[str, ...], tmp_path: Path) -> None:
    """The build the engine uses here (-march=native, or $AUDIODEC_NATIVE_MARCH): its instruction set
    is the one the library reports."""
    out = run([str(build(tmp_path, compiler, native_build.march()))])
    assert out.startswith(native_build.build().isa + " ")


def test_the_build_on_posix_threads(compiler: tuple[str, ...], tmp_path: Path) -> None:
    """Built with -pthread instead of -fopenmp (a compiler without OpenMP): every kernel passes on
    the engine's own teams of 1 to 3 threads."""
    out = run([str(build(tmp_path, compiler, native_build.march(), openmp=False))])
    assert out.startswith(native_build.build().isa + " ")


@pytest.mark.skipif(not X86, reason="an x86-64 target")
@pytest.mark.parametrize("march, isa, flags", [
    ("x86-64-v3", "avx2 (8 lanes, fma 1)", ("avx2", "fma")),
    ("x86-64", "generic (4 lanes, fma 0)", ()),
    ("x86-64-v4", "avx512 (16 lanes, fma 1)", ("avx512f", "avx512bw", "avx512vl", "avx512dq")),
])
def test_x86_builds(compiler: tuple[str, ...], tmp_path: Path, march: str, isa: str, flags: tuple[str, ...]) -> None:
    binary = build(tmp_path, compiler, march)  # (every target compiles, whatever this CPU runs)
    if not cpu_has(*flags):
        pytest.skip(f"this CPU lacks {' '.join(flags)} to run the {march} build")
    assert run([str(binary)]).startswith(isa)


@pytest.mark.parametrize("openmp", [True, False], ids=["openmp", "pthreads"])
def test_arm64_build_under_qemu(tmp_path: Path, openmp: bool) -> None:
    """The NEON kernels, on OpenMP or on the engine's own POSIX threads (as Apple's clang builds it
    for Apple silicon)."""
    cross, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if platform.machine() == "aarch64":
        cross, qemu = cross or shutil.which("gcc"), None
    if cross is None or (platform.machine() != "aarch64" and qemu is None):
        pytest.skip("no arm64 cross compiler or qemu-aarch64 (utils/system_deps.sh installs them)")
    binary = build(tmp_path, (cross,), "armv8-a", openmp)
    command = [str(binary)] if qemu is None else [qemu, "-L", "/usr/aarch64-linux-gnu", str(binary)]
    assert run(command).startswith("neon (4 lanes, fma 1)")


@pytest.mark.skipif(not (X86 and cpu_has("avx2", "fma")), reason="an x86-64 CPU with AVX2 and FMA")
def test_the_avx2_emulation_holds_torch_and_the_engine_to_avx2(tmp_path: Path) -> None:
    """utils/as_avx2.sh: what the CI runs its second pass under on an AVX-512 CPU."""
    probe = (  # (oneDNN held to AVX2 has no bf16 convolutions: reordering weights for one raises)
        "import torch; from utils.runtime import native_build as n\n"
        "try:\n"
        "    torch.ops.mkldnn._reorder_convolution_weight(torch.zeros(16, 16, 1, 3, dtype=torch.bfloat16),"
        " [0, 0], [1, 1], [1, 1], 1, [1, 16, 1, 8]); bf16 = True\n"
        "except RuntimeError:\n"
        "    bf16 = False\n"
        "print(torch.backends.cpu.get_cpu_capability(), n.build().isa, n.build().lanes, bf16)"
    )
    result = subprocess.run(
        [os.path.join(REPO, "utils", "as_avx2.sh"), sys.executable, "-c", probe], capture_output=True, text=True,
        cwd=REPO, env={**os.environ, "AUDIODEC_NATIVE_CACHE": str(tmp_path)}, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["AVX2", "avx2", "8", "False"]
