"""Shared fixtures: paths to the official compatibility vectors copied into tests/data, a fresh
native-engine build and C compilers that refuse options, and a skip for torch.compile on a CPU
without a C++ compiler."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch


def _share_the_cores() -> None:
    """Under pytest-xdist (test.sh runs a worker per core), a worker's torch takes its share of the
    cores, 2 at least so that the threaded paths still run: each taking them all would oversubscribe a
    large machine as many times over as it has workers."""
    from utils.cli import usable_cores

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(min(torch.get_num_threads(), max(2, usable_cores() // workers)))


_share_the_cores()
SUITE_THREADS = torch.get_num_threads()  # what every test starts with
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL = os.path.join(REPO, "tests", "data", "official")
with open(os.path.join(OFFICIAL, "manifest.json")) as manifest:
    MANIFEST = json.load(manifest)["models"]


def ctrl_c_default() -> None:
    """preexec_fn for a child that a test stops with SIGINT: a shell starting the suite in the background
    ignores SIGINT, children inherit that, and Python then leaves Ctrl-C ignored (as it should)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def official_path(*parts: str) -> str:
    return os.path.join(OFFICIAL, *parts)


def old_bash() -> str | None:
    """A bash before 4.4, which stops a set -u script on an empty array: $AUDIODEC_OLD_BASH, else a
    /bin/bash that old (macOS's is 3.2), else None."""
    for candidate in (os.environ.get("AUDIODEC_OLD_BASH"), "/bin/bash"):
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        version = subprocess.run([candidate, "-c", 'echo "${BASH_VERSINFO[0]} ${BASH_VERSINFO[1]}"'],
                                 capture_output=True, text=True, timeout=10).stdout.split()  # fmt: skip
        if len(version) == 2 and tuple(map(int, version)) < (4, 4):
            return candidate
    return None


@pytest.fixture(autouse=True)
def torch_process_settings() -> Iterator[None]:
    """After every test, the suite's torch thread count and denormals kept again: a command's main()
    run in-process (bin/benchmark.py sets threads and flushes denormals to zero, as the original's
    timing does), or a fixture that sets threads for its own computation, would otherwise change the
    arithmetic of the tests after it."""
    yield
    torch.set_flush_denormal(False)
    if torch.get_num_threads() != SUITE_THREADS:
        torch.set_num_threads(SUITE_THREADS)


def denormals_flushed() -> bool:
    """Whether this thread's float arithmetic flushes subnormal numbers to zero."""
    return torch.tensor([1e-39]).mul(1.0).item() == 0.0


def skip_without_cpp_compiler() -> None:
    """Skip the calling test where torch.compile cannot build CPU kernels (no g++ or $CXX here)."""
    from trainer.base import check_cpp_compiler
    from utils.errors import CodecError

    try:
        check_cpp_compiler()
    except CodecError as error:
        pytest.skip(f"{error}")


@pytest.fixture
def python() -> str:
    return sys.executable


@pytest.fixture
def fresh_build(monkeypatch, tmp_path: Path) -> Iterator[Callable[[], ModuleType]]:
    """A function that has native_build forget its engine and build the next one in `tmp_path`/cache,
    for the rest of one test; it returns the module."""
    from utils.runtime import native_build

    def use() -> ModuleType:
        monkeypatch.setenv("AUDIODEC_NATIVE_CACHE", str(tmp_path / "cache"))
        native_build._library.cache_clear()
        return native_build

    yield use
    monkeypatch.undo()  # the test's CC and cache gone before the next test's engine is looked up
    native_build._library.cache_clear()


def refusing_compiler(monkeypatch, fresh_build: Callable[[], ModuleType], tmp_path: Path,
                      refusals: dict[str, str]) -> Callable[[], Path]:
    """A function that has the native engine rebuilt (`fresh_build`), for the rest of one test, by this
    machine's compiler behind a wrapper that fails, with the message `refusals` gives, on any of its
    options; it returns the file the wrapper appends its command lines to."""
    from utils.runtime import native_build

    real = native_build.compiler_command()
    if real is None:
        pytest.skip("no C compiler")
    calls, wrapper = tmp_path / "calls.txt", tmp_path / "refusing-cc"
    checks = "".join(
        f'    if [ "$arg" = {option} ]; then echo "{message}" >&2; exit 1; fi\n' for option, message in refusals.items()
    )
    wrapper.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{calls}"\n'
        'for arg in "$@"; do\n'
        f"{checks}"
        "done\n"
        f'exec {shlex.join(real)} "$@"\n'
    )
    wrapper.chmod(0o755)

    def use() -> Path:
        monkeypatch.setenv("CC", str(wrapper))
        fresh_build()
        return calls

    return use


NO_OPENMP = {"-fopenmp": "clang: error: unsupported option -fopenmp"}


@pytest.fixture
def openmp_less_compiler(monkeypatch, fresh_build, tmp_path) -> Callable[[], Path]:
    """`refusing_compiler` that refuses -fopenmp, as Apple's clang does."""
    return refusing_compiler(monkeypatch, fresh_build, tmp_path, NO_OPENMP)


@pytest.fixture
def clang_14_on_arm64(monkeypatch, fresh_build, tmp_path) -> Callable[[], Path]:
    """`refusing_compiler` that refuses -fopenmp and -march=native, as Apple's clang 14 and older do
    (and clang 14 on any arm64 machine refuses the latter)."""
    march = {"-march=native": "clang: error: the clang compiler does not support '-march=native'"}
    return refusing_compiler(monkeypatch, fresh_build, tmp_path, {**NO_OPENMP, **march})
