"""Run the inference CLIs with tcmalloc (or jemalloc) in place of glibc's malloc.

At small streaming chunks the codec is bound by the fixed cost of each operation rather than by
arithmetic, and much of that cost is memory management: every PyTorch operation allocates its
output, and every oneDNN convolution call allocates its descriptors and scratchpad and frees them
again. A thread-caching allocator makes those cheap. On the 2-core VM, `bin/benchmark.py`, full
size, 10 s of audio, RTF of two rounds with the allocators' processes alternating:

    allocator   vctk_v1 300   vctk_sym 300   vctk_v1 1500   v1 whole file (decode)
    glibc       1.90; 1.70    1.14; 0.97     0.81; 0.75     0.53; 0.50
    tcmalloc    1.62; 1.60    0.72; 0.76     0.80; 0.79     0.49; 0.49
    jemalloc    1.69; 1.56    0.67; 0.68     0.80; 0.75     0.49; 0.49 (JEMALLOC_CONF; 0.65-0.68 without)

The allocator has to be in place before the process's first allocation, so it cannot be loaded
from Python. `use_fast_malloc()`, called first thing by a CLI run as a program, re-executes the
same command line with the library in `LD_PRELOAD` when one is installed (`utils/system_deps.sh`
installs libtcmalloc-minimal4) and the process does not have it yet. The numbers computed are the
same: PyTorch aligns every tensor to 64 bytes whichever allocator provides the memory.

`AUDIODEC_MALLOC=system` keeps glibc's allocator; `AUDIODEC_MALLOC=/path/to/lib.so` preloads
that library instead of the first one found.
"""

from __future__ import annotations

import os
import sys

LIBRARIES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libjemalloc.so.2")
# jemalloc's defaults hand large blocks back to the system at once, so the whole-file decoder's
# big buffers page-fault on every call (v1 whole-file decode RTF 0.65-0.68 against 0.49-0.53 with
# glibc); keeping them (as glibc and tcmalloc do) gives 0.49. Used unless MALLOC_CONF is set.
JEMALLOC_CONF = "oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1"
DIRECTORIES = (
    "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
)
SETTING = "AUDIODEC_MALLOC"
_DONE = "AUDIODEC_MALLOC_PRELOADED"  # set in the re-executed process: never re-execute twice


class MallocSettingError(ValueError):
    """AUDIODEC_MALLOC names something that is not a library file."""


def fast_malloc_library(setting: str | None = None) -> str | None:
    """The allocator library to preload: AUDIODEC_MALLOC's path, else the first installed one of
    `LIBRARIES`; None for `system`, on systems without LD_PRELOAD, or when none is installed."""
    setting = os.environ.get(SETTING, "auto") if setting is None else setting
    if setting == "system" or not sys.platform.startswith("linux"):
        return None
    if setting != "auto":
        if not os.path.isfile(setting):
            raise MallocSettingError(
                f"{SETTING}={setting}: no such file; give the path of a malloc library (e.g. "
                f"libtcmalloc_minimal.so.4), 'auto' or 'system'"
            )
        return setting
    for name in LIBRARIES:
        for directory in DIRECTORIES:
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                return path
    return None


def mapped_files() -> set[str] | None:
    """Paths of the files this process has mapped (its libraries among them); None where /proc is
    missing."""
    try:
        with open("/proc/self/maps") as maps:
            return {line.split()[-1] for line in maps if "/" in line}
    except OSError:
        return None


def _mapped_libraries() -> set[str]:
    """File names of what this process has mapped (LD_PRELOAD's names where /proc is missing)."""
    paths = mapped_files()
    if paths is None:
        paths = set(os.environ.get("LD_PRELOAD", "").replace(":", " ").split())
    return {os.path.basename(path) for path in paths}


def preloaded(library: str) -> bool:
    """Whether this process has `library` mapped (preloaded by us, by the user, or linked in; the
    map names the file a symlink such as libtcmalloc_minimal.so.4 resolves to)."""
    mapped = _mapped_libraries()
    return os.path.basename(library) in mapped or os.path.basename(os.path.realpath(library)) in mapped


def current_malloc() -> str:
    """The allocator this process runs with: 'jemalloc', 'tcmalloc' or 'glibc' (for reports)."""
    mapped = _mapped_libraries()
    return next((name for name in ("jemalloc", "tcmalloc") if any(f.startswith(f"lib{name}") for f in mapped)),
                "glibc")


def use_fast_malloc() -> None:
    """Re-execute this program with the allocator preloaded, unless it has it, it was already
    re-executed, or none is available. Call before importing anything heavy (torch): the
    first process's imports are thrown away. A bad AUDIODEC_MALLOC ends the program with one line."""
    if os.environ.get(_DONE):
        return
    try:
        library = fast_malloc_library()
    except MallocSettingError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if library is None or preloaded(library):
        return
    preload = " ".join(part for part in (library, os.environ.get("LD_PRELOAD", "")) if part)
    env = dict(os.environ, LD_PRELOAD=preload, **{_DONE: library})
    if "jemalloc" in os.path.basename(library):
        env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
