"""How the inference process uses the CPU: a thread-caching allocator, and OpenMP worker pools.
Why each pays: docs/performance.md, "What the runtime does around the steps".

Allocator. At small streaming chunks the codec is bound by the fixed cost of each operation rather
than by arithmetic, and much of that cost is memory management: every PyTorch operation allocates
its output, every oneDNN call its descriptors and scratchpad. A thread-caching allocator
(tcmalloc, or jemalloc) makes those cheap. It has to be in place before the process's first
allocation, so it cannot be loaded from Python: `use_fast_malloc()`, called first thing by a CLI
run as a program, re-executes the same command line with the library in `LD_PRELOAD` when one is
installed (`utils/system_deps.sh` installs libtcmalloc-minimal4) and the process does not have it
yet. The numbers computed are the same: PyTorch aligns every tensor to 64 bytes whichever allocator
provides the memory. `AUDIODEC_MALLOC=system` keeps glibc's allocator;
`AUDIODEC_MALLOC=/path/to/lib.so` preloads that library instead of the first one found.

OpenMP pools. PyTorch runs its intra-op parallel work on OpenMP (libgomp in the Linux wheels).
Every Python thread that runs a parallel operation gets a pool of worker threads of its own, and
the runtime counts the threads of all pools together: once there are more than CPUs, every idle
worker soon stops spinning and sleeps in the kernel, so each parallel region first has to wake its
team through a system call. That is what would happen in the live pipeline (`utils/live/`) if the
main thread loaded, tuned and timed the codec with all threads, leaving it a pool, before worker
threads do the coding with pools of their own. Two ways keep it from happening.
`in_passing_thread()` runs that set-up work in a thread that then ends, and every runtime ends a
thread's pool with the thread, so the main thread starts none. `release_pool()` ends the calling
thread's pool where it has one anyway (OpenMP 5.0's `omp_pause_resource_all(omp_pause_hard)`,
which libgomp, Intel's and LLVM's runtimes implement; older ones, such as the libgomp bundled
with torch 2.5, lack it); the runtime starts a new pool the next time that thread runs a parallel
region, so nothing is lost but the threads' start-up.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

LIBRARIES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libjemalloc.so.2")
# jemalloc's defaults hand large blocks back to the system at once, so the whole-file decoder's big
# buffers would page-fault on every call; keep them, as glibc and tcmalloc do (unless MALLOC_CONF is set).
JEMALLOC_CONF = "oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1"
DIRECTORIES = (
    "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
)
SETTING = "AUDIODEC_MALLOC"
_DONE = "AUDIODEC_MALLOC_PRELOADED"  # set in the re-executed process: never re-execute twice
RUNTIMES = ("libgomp", "libiomp5", "libomp")  # file name prefixes of OpenMP runtimes
OMP_PAUSE_HARD = 2  # omp_pause_resource_t: 1 soft (keep the threads), 2 hard (end them)
Result = TypeVar("Result")


class MallocSettingError(ValueError):
    """AUDIODEC_MALLOC names something that is not a library file."""


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows: for benchmark reports."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fast_malloc_library(setting: str | None = None) -> str | None:
    """The allocator library to preload: AUDIODEC_MALLOC's path, else the first installed one of
    `LIBRARIES`; None for `system`, on systems without LD_PRELOAD, or when none is installed."""
    setting = os.environ.get(SETTING, "auto") if setting is None else setting
    if setting == "system" or not sys.platform.startswith("linux"):
        return None
    if setting != "auto":
        kinds = "give the path of a malloc library (e.g. libtcmalloc_minimal.so.4), 'auto' or 'system'"
        if not os.path.isfile(setting):
            raise MallocSettingError(f"{SETTING}={setting}: no such file; {kinds}")
        if any(character in setting for character in " \t\n:"):  # LD_PRELOAD splits its list there
            raise MallocSettingError(f"{SETTING}={setting}: LD_PRELOAD cannot hold a path with spaces or colons; "
                                     "link the library from a path without them")
        with open(setting, "rb") as library:
            if library.read(4) != b"\x7fELF":
                raise MallocSettingError(f"{SETTING}={setting}: not a shared library; {kinds}")
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
    re-executed, or none is available; where the re-execution cannot be done (an argument that the
    locale cannot encode back to bytes), the program goes on with the system's allocator. Call before
    importing anything heavy (torch): the first process's imports are thrown away. A bad
    AUDIODEC_MALLOC ends the program with one line."""
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
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None where the program was started with that descriptor closed
            stream.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except (UnicodeEncodeError, OSError) as error:  # an argument the locale cannot encode back, an exec refused
        logging.getLogger(__name__).debug("running with the system's allocator: cannot re-execute (%s)", error)


def environment_without_fast_malloc() -> dict[str, str]:
    """This process's environment less the allocator `use_fast_malloc()` preloaded (a user's own
    LD_PRELOAD entries stay), with AUDIODEC_MALLOC=system: for a child program that should run with
    the allocator it gets by default, such as the original implementation timed beside ours."""
    env = dict(os.environ)
    library = env.pop(_DONE, None)
    if library:
        kept = [part for part in env.get("LD_PRELOAD", "").replace(":", " ").split() if part != library]
        if kept:
            env["LD_PRELOAD"] = " ".join(kept)
        else:
            env.pop("LD_PRELOAD", None)
    env[SETTING] = "system"
    return env


def _mapped_runtime_paths() -> list[str]:
    """Paths of the OpenMP runtimes this process has mapped (empty where /proc is missing)."""
    return sorted(path for path in mapped_files() or () if os.path.basename(path).startswith(RUNTIMES))


@functools.cache
def _pause_functions() -> tuple:
    """`omp_pause_resource_all` of each mapped OpenMP runtime that has it (OpenMP 5.0 or newer)."""
    functions = []
    for path in _mapped_runtime_paths():
        try:
            library = ctypes.CDLL(path)  # already loaded: the same copy torch uses
            pause = library.omp_pause_resource_all
        except (OSError, AttributeError):
            continue
        pause.argtypes = [ctypes.c_int]
        pause.restype = ctypes.c_int
        functions.append(pause)
    return tuple(functions)


def can_release_pool() -> bool:
    """Whether an OpenMP runtime mapped in this process can end a thread's pool (OpenMP 5.0 or newer)."""
    return bool(_pause_functions())


def release_pool() -> bool:
    """End the OpenMP worker threads of the calling thread's pool (see the module docstring). Call it
    outside any parallel region, in the thread that is about to leave the work to others. Returns
    whether an OpenMP runtime took the request: False where there is none, or where it predates
    OpenMP 5.0 (the libgomp bundled with torch 2.5, for one: see :func:`can_release_pool`), and the
    pool then stays."""
    released = False
    for pause in _pause_functions():
        released = pause(OMP_PAUSE_HARD) == 0 or released
    return released


def in_passing_thread(function: Callable[..., Result], *args: Any, **kwargs: Any) -> Result:
    """`function(*args, **kwargs)` run in a thread of its own that ends when it returns, so that the
    OpenMP pool its parallel work starts ends with it, on any runtime (see the module docstring).
    Returns its result, or raises its exception here. Thread-local settings (grad mode, autocast)
    are the new thread's defaults; the intra-op thread count is the process's."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = function(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - raised again in the calling thread
            outcome["error"] = error

    thread = threading.Thread(target=run, name=f"set-up {getattr(function, '__name__', 'work')}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome.pop("error")
    return outcome["result"]


def release_free_memory() -> str | None:
    """Hand the memory this process has freed back to the system, from whichever allocator it runs
    with: tcmalloc and jemalloc keep freed blocks for reuse (glibc some), so after a large
    computation the process would otherwise hold its peak while another one runs. Returns the
    allocator that released ('tcmalloc', 'jemalloc', 'glibc'), None where none could."""
    process = ctypes.CDLL(None)  # the preloaded allocator's symbols are the process's own
    allocator = current_malloc()
    try:
        if allocator == "tcmalloc":
            process.MallocExtension_ReleaseFreeMemory()
        elif allocator == "jemalloc":
            mallctl = process.mallctl
            mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
            mallctl.restype = ctypes.c_int
            if mallctl(b"arena.4096.purge", None, None, None, 0) != 0:  # 4096: MALLCTL_ARENAS_ALL
                return None
        else:
            process.malloc_trim(ctypes.c_size_t(0))
    except AttributeError:  # no such function here (e.g. not glibc)
        return None
    return allocator
