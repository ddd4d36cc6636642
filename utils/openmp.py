"""Ending the calling thread's OpenMP worker threads before other threads take over the work.

PyTorch runs its intra-op parallel work on OpenMP (libgomp in the Linux wheels). Every Python
thread that runs a parallel operation gets a pool of OpenMP worker threads of its own, and the
runtime counts the threads of all pools together: once there are more than CPUs, every idle worker
stops spinning after about a hundred iterations (libgomp's "throttled" wait) and sleeps in the
kernel, so each parallel region first has to wake its team through a system call. That is what
happens in the live pipeline (`utils/live/`): the main thread loads, tunes and times the codec
with all threads, which leaves it a pool, and then worker threads do the coding with pools of
their own. On the 2-core VM the same streaming loop of the full-size symmetric codec at 300-sample
chunks took 3.6 / 4.0 ms per chunk (encode / decode) in a worker thread against 1.9 / 1.9 ms in
the main thread, and one 32-channel pointwise convolution 72 us against 18. With the main thread's
pool ended first (`release_pool()`), the worker thread took 1.95 / 1.91 ms.

OpenMP 5.0's `omp_pause_resource_all(omp_pause_hard)` ends the calling thread's pool (libgomp
frees it; Intel's and LLVM's runtimes implement the same call); the runtime starts a new pool the
next time that thread runs a parallel region, so nothing is lost but the threads' start-up.
"""

from __future__ import annotations

import ctypes
import functools
import os

from utils.fast_malloc import mapped_files

RUNTIMES = ("libgomp", "libiomp5", "libomp")  # file name prefixes of OpenMP runtimes
OMP_PAUSE_HARD = 2  # omp_pause_resource_t: 1 soft (keep the threads), 2 hard (end them)


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


def release_pool() -> bool:
    """End the OpenMP worker threads of the calling thread's pool (see the module note). Call it
    outside any parallel region, in the thread that is about to leave the work to others. Returns
    whether an OpenMP runtime took the request; where there is none (or it predates OpenMP 5.0)
    there is nothing to release and nothing happens."""
    released = False
    for pause in _pause_functions():
        released = pause(OMP_PAUSE_HARD) == 0 or released
    return released
